"""rephrase as a registered, generating curation stage: `stages: [normalize, dedup, rephrase]` in a
curate config runs it after dedup over dedup's output, its folder is listed in the summary's
`generated` (not as the run's output) and joins the pool; it always runs on Ray.

The real engine needs vLLM (`.venv-vllm`, see test_rephrase_flow.py); here a small in-process
engine stands in for it, planted in the engine cache the stage reads, with the in-process executor.
"""

from __future__ import annotations

import os

import pyarrow as pa
import pytest

from mixforge import planning
from mixforge import schema as S
from mixforge.config import ConfigError, CurateConfig, RayConfig, load_model
from mixforge.contracts import CurateSummary
from mixforge.executor import SerialExecutor
from mixforge.predicates import PARENT_ID
from mixforge.rephrase import engine as engines
from mixforge.rephrase.engine import Generation
from mixforge.runs import RunLayout
from mixforge.shards import read_documents
from mixforge.stages.registry import extra_settings, get_stage
from tests.helpers import REPO, prose_docs, write_shard


class WordTokenizer:
    chat_template = None  # plain-text prompts

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return list(range(len(text.split())))

    def decode(self, ids: list[int]) -> str:
        return " ".join("w" for _ in ids)


class FakeEngine:
    """Answers every prompt with a fresh sentence (no echo of it, never cut off)."""

    tokenizer = WordTokenizer()

    def generate(self, prompts, sampling, seeds=None) -> list[Generation]:
        return [
            Generation(f"Synthetic rewrite number {i} told in other words.", "stop", 8, 30)
            for i in range(len(prompts))
        ]


REPHRASE = {"engine": {"model": "fake-engine", "device": "cpu"}, "batch_docs": 4, "chunk": {"max_tokens": 4096}}


def test_a_curate_config_naming_rephrase_needs_its_settings():
    with pytest.raises(ConfigError, match=r"extra_stages\.rephrase: engine: Field required"):
        load_model(CurateConfig, {"stages": ["normalize", "dedup", "rephrase"]}, "cfg.yaml")
    config = load_model(
        CurateConfig,
        {"stages": ["normalize", "dedup", "rephrase"], "extra_stages": {"rephrase": REPHRASE}},
        "cfg.yaml",
    )
    assert config.stages == ("normalize", "dedup", "rephrase")
    assert get_stage("rephrase").generates and not get_stage("dedup").generates


def test_a_stage_that_needs_ray_never_runs_in_the_local_pool(monkeypatch):
    from tasks.executor import EXECUTOR_ENV, LocalPoolExecutor, RayExecutor, executor_for

    monkeypatch.setenv(EXECUTOR_ENV, "local")  # what a small job chooses
    assert isinstance(executor_for(RayConfig()), LocalPoolExecutor)
    assert isinstance(executor_for(RayConfig(), needs_ray=True), RayExecutor)
    assert get_stage("rephrase").needs_ray(CurateConfig()) is True and get_stage("dedup").needs_ray is None


@pytest.mark.usefixtures("prefect_harness")
def test_curate_with_rephrase_lists_its_generated_folder_and_the_pool_adds_it(tmp_path, monkeypatch):
    from flows.curate import curate

    config = CurateConfig(stages=("normalize", "dedup", "rephrase"), extra_stages={"rephrase": REPHRASE})
    monkeypatch.setitem(engines._ENGINES, extra_settings(config, "rephrase").engine, FakeEngine())
    executors = []

    def in_process(ray_config, needs_ray=False):
        executors.append(needs_ray)
        return SerialExecutor()

    monkeypatch.setattr("tasks.stages.executor_for", in_process)
    rows = prose_docs(6, "a") + prose_docs(2, "a")  # two exact duplicates for dedup to remove
    rows[6:] = [{**r, "id": f"copy-{i}"} for i, r in enumerate(rows[6:])]
    write_shard(str(tmp_path / "raw" / "a.jsonl"), rows)
    store = str(tmp_path / "store")

    result = curate(input=str(tmp_path / "raw"), output=store, config=config, incremental=True)

    run = RunLayout(store, result["run_id"])
    assert executors == [False, False, True]  # normalize, dedup, rephrase (on Ray, whatever the job chose)
    assert [s["name"] for s in result["stages"]] == ["normalize", "dedup", "rephrase"]
    assert result["output"] == run.stage("dedup").dir and result["generated"] == [run.stage("rephrase").dir]
    CurateSummary.model_validate(result)
    dedup, rephrase = result["stages"][1], result["stages"][2]
    assert dedup["docs_kept"] == 6 and rephrase["docs_in"] == 6 and rephrase["docs_used"] == 6  # dedup's output
    synthetic = pa.concat_tables(read_documents(os.path.join(run.stage("rephrase").dir, "part-00000.parquet")))
    kept = pa.concat_tables(read_documents(run.stage("dedup").part(0)))
    assert sorted(synthetic.column(PARENT_ID).to_pylist()) == sorted(kept.column(S.ID).to_pylist())

    # The pool (pool_runs from the completion marker) is the dedup folder and the rephrase folder.
    assert planning.curated_pool(store, result) == sorted([run.stage("dedup").dir, run.stage("rephrase").dir])
    assert planning.is_generated_output(run.stage("rephrase").dir)
    assert not planning.is_generated_output(run.stage("dedup").dir)

    # A run whose rephrase died after the index update is repaired without its partial rows.
    os.remove(planning.completion_marker(run))
    os.remove(run.stage("rephrase").stats)
    for _ in range(2):  # repaired, then read back as complete
        (pool_run,) = planning.pool_runs(store, config.dedup.index or planning.default_dedup_index(store))
        assert pool_run.output == run.stage("dedup").dir and pool_run.generated == ()


@pytest.mark.usefixtures("prefect_harness")
def test_the_rephrase_flow_runs_the_registered_stage_under_its_own_run_id(tmp_path, monkeypatch):
    from flows.rephrase import rephrase
    from mixforge.rephrase.config import RephraseRunConfig
    from tasks.rephrase import finished_rephrase_outputs

    config = RephraseRunConfig(rephrase=REPHRASE)
    monkeypatch.setitem(engines._ENGINES, config.rephrase.engine, FakeEngine())
    executors = []

    def in_process(ray_config, needs_ray=False):
        executors.append(needs_ray)
        return SerialExecutor()

    monkeypatch.setattr("tasks.stages.executor_for", in_process)
    folder = write_shard(str(tmp_path / "curated" / "part-00000.parquet"), prose_docs(5, "c"))
    store = str(tmp_path / "store")
    assert finished_rephrase_outputs.fn([str(tmp_path / "curated")], store, config) == (
        [str(tmp_path / "curated")],
        [],
    )

    first = rephrase(input=os.path.dirname(folder), output=store, config=config)
    again = rephrase(input=os.path.dirname(folder), output=store, config=config)

    # the run id the rephrase flow always had: its inputs and RephraseRunConfig's fingerprint
    run, finished = planning.generating_run_of("rephrase", os.path.dirname(folder), store, config)
    assert finished and first["run_id"] == again["run_id"] == run.run_id and again["resumed"]
    assert executors == [True, True]
    assert first["output"] == run.stage("rephrase").dir and first["stages"][0]["docs_used"] == 5
    assert finished_rephrase_outputs.fn([str(tmp_path / "curated")], store, config) == ([], [first["output"]])


def test_where_the_engine_python_lives_is_not_part_of_the_run_id():
    import yaml

    from mixforge.config import CurateConfig

    def config(python):
        settings = yaml.safe_load((REPO / "configs" / "rephrase.example.yaml").read_text())["rephrase"]
        settings["engine"]["python"] = python
        return CurateConfig(stages=["normalize", "dedup", "rephrase"], extra_stages={"rephrase": settings})

    assert config("/opt/a/bin/python").run_fingerprint() == config("/opt/b/bin/python").run_fingerprint()
