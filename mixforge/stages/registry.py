"""The curation stages, in pipeline order: the one list the config, the curate flow and the CLI
read (`stages:` values and their order, the per-stage Prefect task, the stage commands).

A stage is registered with how it runs over a run's shards on an executor: a plain stage
(`plain_stage`: a `mixforge.stage.Stage` built from the config, through the shard runner) or a
composite (normalize with its id check, classify with fitting and its report, dedup with its
steps), whose library function drives its own steps. The built-in stages are listed here
(`_load_builtins`); adding another is one `register_stage` call next to its code, and its
settings go in `CurateConfig.extra_stages[<name>]`, validated by its `config_model`.

This module imports nothing heavy: the config validates `stages:` against it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mixforge.names import validate_name

if TYPE_CHECKING:
    from mixforge.config import CurateConfig
    from mixforge.executor import Executor
    from mixforge.runs import RunLayout
    from mixforge.stage import Stage

# run(run, inputs, config, executor) -> the stage summary (also written as the stage's _stats.json)
StageRun = Callable[["RunLayout", Sequence[tuple[int, str]], "CurateConfig", "Executor"], dict]
# preflight(config, storage_options): raise ConfigError for what would fail the stage (a missing model
# or benchmark file), so a run fails before Prefect, Ray or any stage starts
StagePreflight = Callable[["CurateConfig", Any], None]


@dataclass(frozen=True)
class CurationStage:
    name: str
    run: StageRun
    help: str  # one line: the CLI command's help and the Prefect task's description
    config_model: type | None = None  # settings of a stage that is not built in (CurateConfig.extra_stages[name])
    # A generating stage writes new rows (e.g. rephrasings): the next stage still reads its inputs, and its
    # output joins the run's generated folders rather than becoming the run's output.
    generates: bool = False
    # Whether it must run on Ray whatever the job chose (GPUs or a runtime_env, which the local pool ignores).
    needs_ray: Callable[[CurateConfig], bool] | None = None
    # Checks of the stage's own inputs (models, benchmark files) that `plan_curate` runs before any work.
    preflight: StagePreflight | None = None


_STAGES: dict[str, CurationStage] = {}


def register_stage(stage: CurationStage, *, before: str | None = None) -> CurationStage:
    """Add `stage` to the pipeline, at the end or just before `before`; registering a name again
    replaces it in place (a reloaded module)."""
    validate_name(stage.name, "stage name")
    _load_builtins()
    if stage.name in _STAGES:
        _STAGES[stage.name] = stage
        return stage
    if before is not None and before not in _STAGES:
        raise ValueError(f"stage {stage.name!r}: cannot go before unknown stage {before!r} (known: {list(_STAGES)})")
    items = list(_STAGES.items())
    at = len(items) if before is None else [n for n, _ in items].index(before)
    items.insert(at, (stage.name, stage))
    _STAGES.clear()
    _STAGES.update(items)
    return stage


def unregister_stage(name: str) -> None:
    _STAGES.pop(name, None)


def stage_names() -> tuple[str, ...]:
    """Every registered stage, in pipeline order."""
    _load_builtins()
    return tuple(_STAGES)


def get_stage(name: str) -> CurationStage:
    _load_builtins()
    try:
        return _STAGES[name]
    except KeyError:
        raise ValueError(f"unknown stage {name!r} (registered: {list(_STAGES)})") from None


def plain_stage(name: str, build: Callable[[CurateConfig], Stage]) -> StageRun:
    """How a plain stage runs: `build(config)` over the run's shards through the shard runner."""

    def run(run: RunLayout, inputs: Sequence[tuple[int, str]], config: CurateConfig, executor: Executor) -> dict:
        from mixforge.runner import run_stage

        return run_stage(build(config), run.stage(name), inputs, executor, config.read, config.storage.options)

    return run


def _normalize(run, inputs, config, executor) -> dict:
    from mixforge.stages.normalize import run_normalize

    return run_normalize(run.stage("normalize"), inputs, config, executor)


def _filter(config):
    from mixforge.stages.filter import Filter

    return Filter(config.filter)


def _classify(run, inputs, config, executor) -> dict:
    from mixforge.classify.composite import embedding_resources, run_classify

    return run_classify(run, inputs, config, executor, embedding_resources(config.classify, executor.cluster_gpus))


def _dedup(run, inputs, config, executor) -> dict:
    from mixforge.dedup.composite import run_dedup

    return run_dedup(run.stage("dedup"), run.run_id, inputs, config, executor)


def _rephrase(run, inputs, config, executor) -> dict:
    from mixforge.runner import run_stage
    from mixforge.stages.rephrase import RephraseStage

    stage = RephraseStage(extra_settings(config, "rephrase"), shards=max(1, len(inputs)))
    return run_stage(stage, run.stage("rephrase"), inputs, executor, config.read, config.storage.options)


def _rephrase_config() -> type:
    from mixforge.rephrase.config import RephraseConfig

    return RephraseConfig


def _classify_preflight(config: CurateConfig, storage_options: Any) -> None:
    """The classify stage's models and centroids must exist (resolved as the stage will resolve them)."""
    import os

    from mixforge.classify import store
    from mixforge.config_errors import ConfigError

    refs = [(f"classify.classifiers[{i}].model", c.model) for i, c in enumerate(config.classify.classifiers)]
    clusters = config.classify.embedding_clusters
    if clusters.enabled and clusters.centroids:
        refs.append(("classify.embedding_clusters.centroids", clusters.centroids))
    for where, uri in refs:
        try:
            store.resolve(uri, storage_options)
        except FileNotFoundError as e:
            raise ConfigError(f"{where}: {e}") from None
    if clusters.enabled and clusters.model and not os.path.isdir(clusters.model):
        raise ConfigError(f"classify.embedding_clusters.model: {clusters.model!r} is not a local model directory")


def _load_builtins() -> None:
    """The built-in stages, in pipeline order (their code is imported when they run, so listing the
    stages, for the config or the CLI's help, stays cheap)."""
    if "normalize" in _STAGES:
        return
    builtins = [
        CurationStage(
            "normalize",
            _normalize,
            "Unicode, mojibake and control characters normalised; empty documents and repeated ids dropped",
        ),
        CurationStage(
            "filter",
            plain_stage("filter", _filter),
            "language ID and heuristic quality filters (Gopher, C4, FineWeb, URL)",
        ),
        CurationStage(
            "classify",
            _classify,
            "apply the configured fastText classifiers and embedding clusters "
            "(scores only: quality_*, domain, cluster_id)",
            preflight=_classify_preflight,
        ),
        CurationStage("dedup", _dedup, "exact and MinHash-LSH fuzzy deduplication, keeping dup_cluster/dup_count"),
        CurationStage(
            "rephrase",
            _rephrase,
            "synthetic rephrasings of selected documents with an LLM (vLLM), with provenance",
            config_model=_rephrase_config(),
            generates=True,
            needs_ray=lambda config: True,  # its GPUs and the engine's runtime_env need Ray
        ),
    ]
    others = list(_STAGES.items())  # stages registered before the built-ins were listed go after them
    _STAGES.clear()
    _STAGES.update({s.name: s for s in builtins})
    _STAGES.update(others)


def extra_settings(config: CurateConfig, name: str) -> Any:
    """The validated settings of a registered stage that is not built in (None: it has no model)."""
    stage = get_stage(name)
    raw = dict(config.extra_stages.get(name, {}))
    return stage.config_model.model_validate(raw) if stage.config_model is not None else raw
