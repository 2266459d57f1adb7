"""A curation stage is one registration: defined here, in a test module, with no edit to any other
file, it is accepted by the config (with its own settings), listed by the CLI and the Prefect form,
and runs in a curate pipeline through the same code path as the built-in stages."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pydantic import BaseModel, ConfigDict

from mixforge import schema as S
from mixforge.config import ConfigError, CurateConfig, load_model
from mixforge.executor import SerialExecutor
from mixforge.runner import completed_outputs
from mixforge.runs import RunLayout
from mixforge.shards import read_documents
from mixforge.stage import ShardContext, Stage, StageResult, split_by_reason
from mixforge.stages.registry import (
    CurationStage,
    get_stage,
    plain_stage,
    register_stage,
    stage_names,
    unregister_stage,
)
from tests.helpers import docs, write_shard


class MinWordsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min_words: int = 5


class MinWords(Stage):
    """Drops documents with fewer than `min_words` words."""

    name = "min-words"

    def __init__(self, settings: MinWordsSettings) -> None:
        self.settings = settings

    def process(self, batch: pa.Table, ctx: ShardContext) -> StageResult:
        words = pc.list_value_length(pc.utf8_split_whitespace(batch.column(S.TEXT)))
        short = pc.less(words, self.settings.min_words)
        reason = pc.if_else(short, "min_words", pa.scalar(None, pa.string()))
        return split_by_reason(batch, reason, ctx)


def _build(config: CurateConfig) -> Stage:
    return MinWords(MinWordsSettings.model_validate(config.extra_stages.get("min-words", {})))


@pytest.fixture
def registered():
    register_stage(
        CurationStage(
            "min-words",
            plain_stage("min-words", _build),
            "drop documents with too few words",
            config_model=MinWordsSettings,
        ),
        before="dedup",
    )
    yield
    unregister_stage("min-words")


@pytest.mark.usefixtures("registered")
def test_a_stage_defined_in_a_test_module_runs_in_the_pipeline(tmp_path):
    assert stage_names() == (
        "normalize",
        "filter",
        "classify",
        "min-words",
        "dedup",
        "pii",
        "decontaminate",
        "rephrase",
    )
    config = load_model(
        CurateConfig,
        {"stages": ["normalize", "min-words", "dedup"], "extra_stages": {"min-words": {"min_words": 30}}},
        "cfg.yaml",
    )
    assert "min-words" in CurateConfig.model_json_schema()["properties"]["stages"]["items"]["enum"]
    assert config.run_fingerprint()["extra_stages"] == {"min-words": {"min_words": 30}}

    rows = docs(6, "a", words=40) + docs(4, "b", words=10)
    write_shard(str(tmp_path / "raw" / "a.jsonl"), rows)
    run = RunLayout(str(tmp_path / "store"), "plugin")
    shards = [(0, str(tmp_path / "raw" / "a.jsonl"))]
    summaries = []
    for name in config.stages:  # what the curate flow does, with the in-process executor
        summary = get_stage(name).run(run, shards, config, SerialExecutor())
        summaries.append(summary)
        shards = completed_outputs(run.stage(name), summary)
    by_name = {s["name"]: s for s in summaries}
    assert by_name["min-words"]["docs_in"] == 10 and by_name["min-words"]["docs_dropped"] == {"min_words": 4}
    kept = pa.concat_tables(read_documents(run.stage("dedup").part(0)))
    assert by_name["dedup"]["docs_in"] == 6  # the long documents reach the next stage
    assert set(kept.column("id").to_pylist()) <= {r["id"] for r in rows[:6]}
    removed = pa.concat_tables(read_documents(run.stage("min-words").removed(0)))
    details = removed.column(S.DROP_DETAIL).to_pylist()
    assert len(details) == 4 and all("normalize/part-00000.parquet row " in d for d in details), details

    from mixforge.cli import build_parser

    assert build_parser().parse_args(["min-words", "--input", "x", "--output", "y"]).command == "min-words"


@pytest.mark.usefixtures("registered")
def test_a_registered_stage_validates_its_own_settings():
    with pytest.raises(ConfigError, match="min_words"):
        load_model(
            CurateConfig, {"stages": ["min-words"], "extra_stages": {"min-words": {"min_words": "many"}}}, "cfg.yaml"
        )
    with pytest.raises(ConfigError, match="built-in stage's settings go in its own section"):
        load_model(CurateConfig, {"extra_stages": {"filter": {}}}, "cfg.yaml")


def test_unknown_and_misordered_stages_are_refused():
    with pytest.raises(ConfigError, match=r"unknown stage\(s\) \['min-words'\]"):
        load_model(CurateConfig, {"stages": ["normalize", "min-words"]}, "cfg.yaml")
    with pytest.raises(ConfigError, match="pipeline order"):
        load_model(CurateConfig, {"stages": ["dedup", "filter"]}, "cfg.yaml")
    assert CurateConfig().run_fingerprint().keys() == {"stages", "read", "normalize", "filter", "classify", "dedup"}
