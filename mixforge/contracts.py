"""Typed contracts of what people script against: the `--json` outputs of the CLI, a stage's
summary (`_stats.json`), a shard's `_done` marker, model cards and mixture manifests.

Each contract is a pydantic model. The keys DESIGN.md and README.md promise are required;
everything else a command prints today is optional but typed; unknown keys are allowed ("keys
may be added; these stay"). Models are strict: a count that became a string, or a share that
became null, is a contract break, not something to coerce.

The CLI validates every `--json` output against its contract just before printing it
(`print_json`): a break is a bug, so it raises instead of printing a JSON object that is only
half valid. JSON Schemas generated from these models are committed under `docs/schemas/`;
regenerate them after changing a model with

    python -m mixforge.contracts            # writes docs/schemas/*.schema.json
    python -m mixforge.contracts --check    # exit 1 when a committed schema is out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, TypeAdapter, ValidationError
from pydantic.json_schema import GenerateJsonSchema


class Contract(BaseModel):
    """Base of every contract: strict types, unknown keys allowed (they may be added later)."""

    # defer_build: a command builds only the validator of the contract it prints (start-up time
    # matters: a pre-flight error with --json should come back as fast as Python starts)
    model_config = ConfigDict(extra="allow", strict=True, defer_build=True)


def optional(description: str | None = None) -> Any:
    """An optional key: it may be absent, but when present it has the declared type (not null,
    unless the type says so). Its schema carries no `default`."""
    return Field(default=None, description=description)


# ----------------------------------------------------------------------------- stages


class QuarantinedShard(Contract):
    """A shard that could not be read (the quarantine ledger)."""

    shard: str = Field(description="URI of the input shard")
    error: str = Field(description="why it could not be read (names the compressed byte offset where known)")
    rows_decoded: int | None = Field(description="rows decoded before the error")
    rows_declared: int | None = Field(
        description="rows the shard declares (a Parquet footer); null when it does not say"
    )


class FunnelStep(Contract):
    """One reason of a stage's funnel, in the order the stage checks its reasons."""

    reason: str
    docs: int
    chars: int
    docs_remaining: int
    skipped: bool = optional("a generating stage's skip (counted, not dropped)")


class ShardResult(Contract):
    """A shard's outcome as `_stats.json` lists it (`shard_results`)."""

    index: int
    input: str
    quarantined: bool | None = optional()
    docs_in: int | None = optional()
    docs_kept: int | None = optional()
    skipped: bool | None = optional("finished by an earlier run of the run id")


class StageSummary(Contract):
    """A stage's summary: an entry of the `--json` summary's `stages`, and the stage's `_stats.json`."""

    name: str
    output: str = Field(description="folder of the stage's kept shards")
    docs_in: int = Field(description="documents read from readable shards")
    docs_kept: int
    docs_dropped: dict[str, int] = Field(description="dropped documents by reason")
    docs_quarantined: int | None = Field(description="rows the quarantined shards declare; null when one does not say")
    quarantined: list[QuarantinedShard]
    seconds: float
    shards: int = optional()
    shards_skipped: int = optional("shards finished by an earlier run of the run id")
    docs_skipped: dict[str, int] = optional("a generating stage's skipped input rows by reason")
    docs_used: int = optional("a generating stage's input rows that produced output")
    docs_quarantined_decoded: int = optional(
        "rows decoded from quarantined shards before their errors (a lower bound)"
    )
    chars_in: int = optional()
    chars_kept: int = optional()
    chars_dropped: dict[str, int] = optional()
    counters: dict[str, int] = optional("the stage's own counters, summed over shards")
    figures: dict[str, Any] = optional("figures that add up over shards (e.g. score histograms)")
    figures_missing: list[int] = optional("shards done without figures (not in the sums)")
    funnel: list[FunnelStep] = optional()
    shard_seconds: float = optional()
    shard_cpu_seconds: float = optional()
    worker_peak_rss_mb: float = optional()
    workers: int = optional("worker processes that ran shards in this run")
    worker_busy_share: float | None = optional()
    id_check: dict[str, Any] = optional("normalize: the cross-shard id check")
    dedup: dict[str, Any] = optional("dedup: its steps' figures")
    index: dict[str, Any] = optional("dedup: what was appended to the persistent index")
    classify: dict[str, Any] = optional("classify: the score report")
    pii: dict[str, Any] = optional("pii: entities found, per entity and per source")
    decontaminate: dict[str, Any] = optional(
        "decontaminate: contamination per benchmark and source, with examples, and the index used"
    )
    shard_results: list[ShardResult] = optional("in `_stats.json` only")


class _ShardStatsBase(Contract):
    index: int
    input: str = Field(description="URI of the input shard")
    seconds: float
    skipped: bool = optional("read back from an earlier run's marker")


class DoneShardStats(_ShardStatsBase):
    """A finished shard: what `run_shard` returns and writes as its `_done` marker."""

    quarantined: Literal[False]
    output: str
    docs_in: int
    docs_kept: int
    docs_dropped: dict[str, int]
    chars_in: int
    chars_kept: int
    chars_dropped: dict[str, int]
    docs_skipped: dict[str, int] = optional()
    docs_used: int = optional()
    counters: dict[str, int] = optional()
    figures: dict[str, Any] = optional()
    drop_order: list[str] = optional()
    cpu_seconds: float = optional()
    peak_rss_mb: float = optional()
    worker: str = optional("host:pid of the worker process")
    started_at: float = optional("Unix time the shard started")


class QuarantinedShardStats(_ShardStatsBase):
    """A shard that could not be read: what `run_shard` returns (its `_quarantine` marker is beside)."""

    quarantined: Literal[True]
    error: str
    rows_decoded: int | None
    rows_declared: int | None


ShardStats = Annotated[DoneShardStats | QuarantinedShardStats, Field(discriminator="quarantined")]


# ----------------------------------------------------------------------------- curate / stage commands


class SkippedInput(Contract):
    uri: str
    reason: str


class InputsRecord(Contract):
    """What input discovery found and left out."""

    shards: int
    skipped: list[SkippedInput]
    pattern: str = optional()
    metadata_skipped: int = optional("metadata names (`_x`, `.x`), counted only")


class IncrementalRecord(Contract):
    """What incremental selection found."""

    input_shards: int
    already_curated: int
    new_shards: int
    index: str | None = optional("the pool's dedup index")
    pool_runs: list[str] = optional()


class CurateSummary(Contract):
    """`--json` of `curate`, `filter`, `classify`, `dedup` and `rephrase`."""

    run_id: str | None = Field(description="null only when an incremental run found nothing new")
    output: str | None = Field(description="folder of the final stage's kept shards; null as run_id")
    stages: list[StageSummary]
    resumed: bool = optional()
    inputs: InputsRecord = optional()
    incremental: IncrementalRecord = optional()
    generated: list[str] = Field(
        default_factory=list,
        description="folders of the generating stages' rows (e.g. rephrase), added to the pool beside `output`",
    )


# ----------------------------------------------------------------------------- mixtures


class MixGroup(Contract):
    name: str
    target_share: float = Field(description="effective share: requested, after empty or short groups gave theirs up")
    realised_share: float
    docs: int = Field(description="rows written, repeats included")
    tokens: int
    epochs: float
    phase: str = optional()
    requested_share: float = optional("the spec's weight, normalised over the phase")
    unique_docs: int = optional()
    max_epochs: float = optional()
    short: bool = optional("could not reach its target within max_epochs")


class DerivedFrom(Contract):
    version: str
    manifest: str


class TakedownSummary(Contract):
    removed_rows: int
    removed_tokens: int
    removed_unique_ids: int
    reason: str


class MixSummary(Contract):
    """`--json` of `mix`, `mixtures takedown` and `mixtures show` (without --files)."""

    name: str
    version: str
    uri: str = Field(description="the version's folder")
    manifest: str = Field(description="URI of manifest.json")
    groups: list[MixGroup]
    card: str = optional("URI of the data card (README.md)")
    tokens: int = optional()
    docs: int = optional()
    files: int = optional()
    derived_from: DerivedFrom | None = optional()
    notes: list[str] = optional()
    takedown: TakedownSummary = optional("mixtures takedown: what it removed")
    seconds: dict[str, float] = optional()
    built: bool = optional("pipeline/demo: false when the night was a no-op")
    export: ExportSummary = optional("mix with an export: the export's summary")


class PlanGroup(Contract):
    phase: str
    name: str
    sampling: str
    requested_share: float = Field(description="the spec's weight, normalised over the phase")
    target_share: float = Field(description="effective share: requested, after empty or short groups gave theirs up")
    available_docs: int
    available_tokens: int
    target_tokens: int
    tokens: int = Field(description="tokens to draw (exactly what a build draws)")
    docs: int = Field(description="rows to draw, repeats included")
    full_passes: int
    epochs: float
    max_epochs: float
    short: bool


class PlanPhase(Contract):
    name: str
    budget_tokens: int
    tokens: int
    files: int


class PlanPool(Contract):
    shards: int
    docs: int
    tokens: int
    shards_counted_now: int = optional("shards without cached token counts: counted in memory, not kept")


class MixPlan(Contract):
    """`--json` of `mix --dry-run`: what a build would draw; nothing is written."""

    dry_run: bool
    name: str
    store: str
    next_version: str = Field(description="the version a build would make (unless another build commits first)")
    pool: PlanPool
    phases: list[PlanPhase]
    groups: list[PlanGroup]
    tokens: int
    docs: int
    files: int
    notes: list[str]
    seconds: float = optional()


class MixtureVersionRow(Contract):
    name: str
    version: str
    created_at: str
    tokens: int
    docs: int
    files: int
    derived_from: str | None = Field(description="the version it was derived from (a takedown)")
    spec_hash: str = optional()
    manifest: str = optional()


class MixturesList(Contract):
    """`--json` of `mixtures list`."""

    versions: list[MixtureVersionRow]


class MixtureFiles(Contract):
    """`--json` of `mixtures show --files`."""

    name: str
    version: str
    files: list[str] = Field(description="URIs of every data file of the version")


class MixturesShow(RootModel[MixSummary | MixtureFiles]):
    """`--json` of `mixtures show`: the mix summary, or with --files the data files."""

    model_config = ConfigDict(strict=True, defer_build=True)


class DiffGroup(Contract):
    phase: str
    name: str
    share_a: float
    share_b: float
    share_change_pp: float
    tokens_a: int
    tokens_b: int
    docs_a: int = optional()
    docs_b: int = optional()


class SpecChange(Contract):
    path: str = Field(description="dotted path of the spec field, groups and phases by name: groups[web].weight")
    change: Literal["changed", "added", "removed", "reordered"]
    a: Any = Field(description="the value in version a (null where absent)")
    b: Any = Field(description="the value in version b (null where absent)")


class MixtureDiff(Contract):
    """`--json` of `mixtures diff`."""

    name: str
    a: str
    b: str
    spec_changed: bool
    spec_changes: list[SpecChange]
    tokens_a: int
    tokens_b: int
    tokens_change: int
    docs_a: int
    docs_b: int
    docs_added: int
    docs_removed: int
    added_sample: list[str]
    removed_sample: list[str]
    groups: list[DiffGroup]
    unique_docs_a: int = optional()
    unique_docs_b: int = optional()


class ManifestGroup(Contract):
    name: str
    target_share: float
    requested_share: float
    realised_share: float
    realised_docs: int
    realised_tokens: int
    unique_docs: int
    available_tokens: int
    epochs: float
    max_epochs: float
    short: bool
    phase: str = optional()
    sampling: str = optional()
    target_tokens: int = optional()
    available_docs: int = optional()
    pass_tokens: int = optional()
    cap_tokens: int = optional()
    full_passes: int = optional()
    max_doc_repeats: int = optional()
    notes: list[str] = optional()
    removed_rows: int = optional("a takedown's")
    removed_tokens: int = optional("a takedown's")


class ManifestPhase(Contract):
    name: str
    groups: list[ManifestGroup]
    realised_tokens: int
    files: list[int] = Field(description="indexes into the manifest's files")
    budget_tokens: int = optional()
    docs: int = optional()
    notes: list[str] = optional()


class ManifestFile(Contract):
    uri: str
    rows: int
    tokens: int
    sha256: str
    phase: str = optional()
    part: int = optional()
    bytes: int = optional()


class ManifestPoolShard(Contract):
    uri: str
    rows: int = optional()
    bytes: int = optional()
    sha256: str = optional()
    hash_of: str = optional()
    run_id: str | None = optional()


class ManifestPool(Contract):
    inputs: list[str]
    shards: list[ManifestPoolShard]
    run_ids: list[str] = optional()
    docs: int = optional()
    tokens: int = optional()


class ManifestTimestamps(Contract):
    started: str
    committed: str


class MixManifest(Contract):
    """`mixtures/<name>/vNNNN/manifest.json`: a committed mixture version."""

    format: str
    name: str
    version: str
    spec: dict[str, Any]
    spec_hash: str
    seed: int
    code_version: str
    pool: ManifestPool
    phases: list[ManifestPhase]
    files: list[ManifestFile]
    timestamps: ManifestTimestamps
    data_key: str = optional()
    tokenizer: dict[str, Any] = optional()
    notes: list[str] = optional()
    derived_from: DerivedFrom | None = optional()
    takedown: dict[str, Any] | None = optional("ids, URL patterns and what was removed")
    card: dict[str, Any] = optional("the data card's statistics and plots")
    provenance: dict[str, Any] = optional(
        "where the weights came from: optimization -> {manifest, name, run_id, swarm, regressors, cv_spearman, "
        "predicted} (mixforge optimize --materialize)"
    )


# ----------------------------------------------------------------------------- models


class ClassifierMetrics(Contract):
    """Held-out metrics of a trained classifier (macro averages for a multiclass model)."""

    auc: float | None = Field(description="null when the held-out split lacks a class")
    precision: float
    recall: float
    accuracy: float | None = optional()
    threshold: float = optional()
    n_test: int = optional()
    confusion: dict[str, int] = optional()
    averaging: str = optional()
    per_label: dict[str, dict[str, Any]] = optional()


class TrainClassifierSummary(Contract):
    """`--json` of `train-classifier`."""

    model: str = Field(description="URI of the model version's folder")
    metrics: ClassifierMetrics
    name: str = optional()
    version: str = optional()
    model_bin: str = optional()


class ModelFile(Contract):
    sha256: str
    bytes: int


class ModelCard(Contract):
    """`models/<name>/vNNNN/card.json`: the keys `classify.store.publish` adds to every card."""

    name: str
    version: str
    uri: str
    kind: str
    files: dict[str, ModelFile]
    created: str
    code_version: str
    build_id: str


class ClassifierCard(ModelCard):
    """The card of a fastText classifier (`train-classifier`)."""

    kind: Literal["binary-quality", "multiclass-domain"]
    labels: list[str]
    positive_label: str | None
    metrics: ClassifierMetrics
    preprocess: dict[str, Any]
    fasttext: dict[str, Any]
    training: dict[str, Any] = optional()
    data: dict[str, Any] = optional()


class ClusterEntry(Contract):
    id: int
    sample_docs: int
    top_terms: list[str]


class ClusterCard(ModelCard):
    """The card of k-means topic clusters (classify's embedding clusters)."""

    kind: Literal["embedding-clusters"]
    k: int
    clusters: list[ClusterEntry]
    embedding: dict[str, Any] = optional()
    max_chars: int = optional()
    seed: int = optional()
    inertia: float = optional()
    sample: dict[str, Any] = optional()


AnyModelCard = Annotated[ClassifierCard | ClusterCard, Field(discriminator="kind")]


# ----------------------------------------------------------------------------- failures, runs, demo


class FailureSummary(Contract):
    """`--json` of any command that failed: exactly one JSON object, whatever happened."""

    command: str | None = Field(description="null when the command line itself could not be parsed")
    error: str
    error_kind: Literal["usage", "failed", "interrupted"]
    exit_code: int
    run_id: str = optional("the run it was working on, when one had been planned")
    run_dir: str = optional()
    errors: list[str] = optional("usage errors: one line per problem")
    progress: str = optional("interrupted: what the run had finished")


class LeaseRecord(Contract):
    """A run's lease generation (`runs/<run_id>/_lease/g-NNNNNN.json`)."""

    run_id: str = optional()
    owner: str = optional()
    host: str = optional()
    pid: int = optional()
    acquired_at: float = optional()
    heartbeat_at: float = optional()
    ttl_s: float = optional()
    released: bool = optional()
    generation: int = optional()


class RunsUnlockSummary(Contract):
    """`--json` of `runs unlock`."""

    run_id: str
    released: bool
    holder: LeaseRecord | None = Field(description="the lease that was released; null when the run held none")


RunStatus = Literal["running", "complete", "failed", "incomplete"]


class RunRow(Contract):
    """A run as `runs list` shows it (mixforge.run_admin says how each status is read from the store)."""

    run_id: str
    created: str | None = Field(description="when the run was first started (UTC, from `_run.json`)")
    status: RunStatus = Field(
        description="running: a live process holds its lease; complete: every stage finished; failed: its process "
        "ended without finishing; incomplete: its process died holding the lease, or never took one"
    )
    stages: list[str] = Field(description="the stages it was started with, in order")
    stages_done: list[str] = Field(description="those with a `_stats.json`")
    docs_in: int | None = Field(description="documents the first stage read; null until it finished")
    docs_kept: int | None = Field(description="documents the last finished stage kept")
    bytes: int = Field(description="bytes of every file under runs/<run_id>/")
    scratch_bytes: int = Field(description="bytes of its scratch (dedup `_work/`, `_pieces/`)")
    used_by: list[str] = Field(description="mixture versions, dedup indexes and runs that use it; clean keeps it")
    held_by: str | None = Field(description="the process holding its lease, when running")


class RunsList(Contract):
    """`--json` of `runs list`: newest first."""

    store: str
    runs: list[RunRow]


class RunStageStats(Contract):
    name: str
    done: bool
    stats: StageSummary | None = Field(description="the stage's `_stats.json` without `shard_results`")


class ScratchFolder(Contract):
    uri: str
    bytes: int


class RunsShow(RunRow):
    """`--json` of `runs show`."""

    dir: str
    manifest: dict[str, Any] | None = Field(description="`_run.json`: inputs, config and its hash, code version")
    completion: dict[str, Any] | None = Field(description="`_complete.json`, when the curate flow wrote it")
    stage_stats: list[RunStageStats]
    lease: LeaseRecord | None = Field(description="the lease's latest generation; null when never leased")
    lease_state: str = Field(description='"held", or why the lease is free ("released", "stale: ...")')
    scratch: list[ScratchFolder]


class RunRemoval(Contract):
    run_id: str
    what: Literal["run", "scratch"] = Field(description="the whole run, or one scratch folder of a complete run")
    uri: str
    bytes: int
    status: RunStatus


class RunKept(Contract):
    run_id: str
    status: RunStatus
    reason: str


class RunsClean(Contract):
    """`--json` of `runs clean`."""

    store: str
    dry_run: bool
    removed: list[RunRemoval] = Field(description="what was removed (with dry_run: what would be)")
    kept: list[RunKept] = Field(description="unfinished runs kept: in use, or held by a live process")
    bytes_removed: int


class ExplainDrop(Contract):
    """Why a stage dropped the document: its `_removed/` drop columns (schema.DROP_FIELDS)."""

    reason: str | None = Field(description="drop_reason, as counted in the stage's docs_dropped")
    rule: str | None = Field(description="the rule that dropped it, e.g. gopher_quality.alpha_words")
    value: float | None = Field(description="what the rule measured (null: a yes/no rule)")
    op: str | None = Field(description='how the value failed the threshold: "<", "<=", ">", ">="')
    threshold: float | None = Field(description="the rule's limit")
    shard: str | None = Field(description="URI of the stage's input shard")
    row: int | None = Field(description="row (from 0) or JSONL line (from 1) in that shard, as `unit` says")
    unit: str | None = Field(description='"row" or "line"')
    detail: str | None = Field(description="the readable drop_detail")


class ExplainStage(Contract):
    name: str
    outcome: Literal["kept", "dropped", "not reached", "absent"] = Field(
        description="absent: in no output of the stage although an earlier stage kept it (e.g. a quarantined shard)"
    )
    file: str = optional("the kept or _removed/ shard holding the document")
    columns: dict[str, Any] = optional("kept: the columns this stage added (scores, labels, dup_cluster ...)")
    drop: ExplainDrop = optional("dropped: why")


class ExplainCluster(Contract):
    cluster: str
    size: int | None
    kept: str = Field(description="the id of the document dedup kept for the cluster")
    dropped: list[str] = Field(description="ids of the copies dedup dropped (at most 50)")


class ExplainChild(Contract):
    id: str
    run_id: str
    stage: str
    style: str = optional()


class ExplainMixture(Contract):
    name: str
    version: str


class ExplainSummary(Contract):
    """One document's path through a run (`mixforge explain`)."""

    run_id: str
    store: str
    id: str
    outcome: Literal["kept", "dropped"] = Field(description="at the last stage that has it")
    stages: list[ExplainStage] = Field(description="every stage of the run, in pipeline order")
    duplicate_cluster: ExplainCluster | None
    children: list[ExplainChild] = Field(description="rows generated from it (parent_id), at most 50")
    mixtures: list[ExplainMixture] = Field(description="mixture versions of the store that contain it")


class DemoSummary(CurateSummary):
    """`--json` of `demo`: the curate summary plus the mixture built from it."""

    mixture: MixSummary
    noop: bool = optional()
    pool: list[str] = optional("the folders the mixture sampled")
    rephrase: list[CurateSummary] = optional()
    message: str = optional()


# ----------------------------------------------------------------------------- validation


class ContractViolation(ValueError):
    """An output does not match its contract (a bug in the code that built it)."""


def _name(contract: Any) -> str:
    return getattr(contract, "__name__", None) or str(contract)


def validate_json(text: str | bytes, contract: Any) -> Any:
    """`text` (one JSON document) validated against `contract` (a model or an annotated type)."""
    try:
        if isinstance(contract, type) and issubclass(contract, BaseModel):
            return contract.model_validate_json(text)
        return TypeAdapter(contract).validate_json(text)
    except ValidationError as e:
        raise ContractViolation(f"output breaks the {_name(contract)} contract: " + _describe(e)) from None


def validate(value: Any, contract: Any) -> Any:
    """`value` (a dict as the code builds it) validated against `contract`, as it would be printed."""
    return validate_json(json.dumps(value, default=str), contract)


def _describe(e: ValidationError) -> str:
    """One clause per problem, naming the key path (`stages.0.docs_in`) and, for a bad value, the value."""
    parts = []
    for err in e.errors():
        where = ".".join(str(p) for p in err["loc"]) or "<root>"
        got = "" if err["type"] == "missing" else f" (got {_short(err.get('input'))})"
        parts.append(f"{where}: {err['msg']}{got}")
    return "; ".join(parts)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def dumps(value: Any, contract: Any) -> str:
    """The JSON the CLI prints for `value` (indented, non-JSON values as strings), validated first."""
    text = json.dumps(value, indent=2, default=str)
    validate_json(text, contract)
    return text


def print_json(value: Any, contract: Any) -> None:
    """Print `value` as JSON on stdout after validating it against `contract`.

    A contract break raises ContractViolation. stdout still holds exactly one JSON object: a
    failure object naming the break (a script sees `error_kind: failed`), never the broken one.
    """
    try:
        text = dumps(value, contract)
    except ContractViolation as e:
        failure = {"command": None, "error": f"{type(e).__name__}: {e}", "error_kind": "failed", "exit_code": 1}
        sys.stdout.write(json.dumps(failure, indent=2) + "\n")
        raise
    sys.stdout.write(text + "\n")


# ----------------------------------------------------------------------------- JSON Schemas

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "docs" / "schemas"

# name -> (contract, what prints it). One schema per `--json` output, then the files in the store.
SCHEMAS: dict[str, tuple[Any, str]] = {
    "curate-summary": (CurateSummary, "--json of curate, filter, classify, dedup and rephrase"),
    "failure": (FailureSummary, "--json of any command that failed (exit code 1, 2, 130 or 143)"),
    "train-classifier": (TrainClassifierSummary, "--json of train-classifier"),
    "mix": (MixSummary, "--json of mix and mixtures takedown"),
    "mixtures-list": (MixturesList, "--json of mixtures list"),
    "mixtures-show": (MixturesShow, "--json of mixtures show (with --files: name, version, files)"),
    "mixtures-diff": (MixtureDiff, "--json of mixtures diff"),
    "mix-plan": (MixPlan, "--json of mix --dry-run"),
    "runs-unlock": (RunsUnlockSummary, "--json of runs unlock"),
    "runs-list": (RunsList, "--json of runs list"),
    "runs-show": (RunsShow, "--json of runs show"),
    "runs-clean": (RunsClean, "--json of runs clean"),
    "explain": (ExplainSummary, "--json of explain"),
    "demo": (DemoSummary, "--json of demo"),
    "stage-stats": (StageSummary, "runs/<run_id>/<stage>/_stats.json"),
    "shard-marker": (ShardStats, "runs/<run_id>/<stage>/_done/part-NNNNN.json (and what run_shard returns)"),
    "model-card": (AnyModelCard, "models/<name>/vNNNN/card.json"),
    "mixture-manifest": (MixManifest, "mixtures/<name>/vNNNN/manifest.json"),
}


class _ContractSchema(GenerateJsonSchema):
    """Schemas without the noise: no per-property titles, and an optional key (default None)
    shows only its type (absent is allowed; null is not, unless the type says so)."""

    def default_schema(self, schema):
        if schema.get("default", ...) is None:
            return self.generate_inner(schema["schema"])
        return super().default_schema(schema)

    def field_title_should_be_set(self, schema) -> bool:
        return False


def json_schema(name: str) -> dict[str, Any]:
    contract, what = SCHEMAS[name]
    schema = TypeAdapter(contract).json_schema(schema_generator=_ContractSchema)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$comment": f"{what}. Generated from mixforge.contracts by `python -m mixforge.contracts`; do not edit.",
        **schema,
    }


def schema_text(name: str) -> str:
    return json.dumps(json_schema(name), indent=2, ensure_ascii=False) + "\n"


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in SCHEMAS:
        path = directory / f"{name}.schema.json"
        path.write_text(schema_text(name), encoding="utf-8")
        written.append(path)
    return written


def stale_schemas(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names whose committed schema differs from the models (or is missing)."""
    stale = []
    for name in SCHEMAS:
        path = directory / f"{name}.schema.json"
        if not path.is_file() or path.read_text(encoding="utf-8") != schema_text(name):
            stale.append(name)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mixforge.contracts", description="Write the JSON Schemas of the contracts (docs/schemas/)."
    )
    parser.add_argument("--dir", type=Path, default=SCHEMA_DIR, help=f"output folder (default: {SCHEMA_DIR})")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 when a schema is missing or out of date"
    )
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_schemas(args.dir)
        for name in stale:
            print(
                f"{args.dir / (name + '.schema.json')}: out of date (run python -m mixforge.contracts)",
                file=sys.stderr,
            )
        return 1 if stale else 0
    for path in write_schemas(args.dir):
        print(path)
    return 0


# ----------------------------------------------------------------------------- exports (mixforge export)


class ExportTokenizer(Contract):
    kind: str
    name: str
    key: str = Field(description="tiktoken-<encoding> or hf-<12 hex of the tokenizer.json sha256>: in the folder name")
    sha256: str
    vocab_size: int
    eos_id: int
    bos_id: int | None


class ExportFileRef(Contract):
    uri: str
    bytes: int
    sha256: str


class ExportPart(Contract):
    """One output part: its format's files and its lineage sidecar."""

    phase: str
    part: int
    uri: str = Field(description="the data file (the format's first file)")
    files: list[ExportFileRef] = Field(description="every file of the part (.bin and .idx, or .npy and .idx.npy)")
    lineage: str = Field(description="the lineage sidecar: one row per document in file order")
    docs: int
    tokens: int
    groups: dict[str, int] = Field(description="tokens per mix group")
    group_docs: dict[str, int] = optional("documents per mix group")
    lineage_sha256: str = optional()
    copied_from: str = optional("a takedown re-export: the parent export's part, copied untouched")
    rewritten_from: str = optional("a takedown re-export: the parent export's part, less the removed documents")


class ExportGroup(Contract):
    name: str
    docs: int
    tokens: int


class ExportPhase(Contract):
    name: str
    tokens: int
    docs: int
    groups: list[ExportGroup]
    files: list[int] = Field(description="indexes into the manifest's files, in stream order")
    metadata_prefix: bool = optional("whether its documents carry the metadata prefix")


class ExportManifest(Contract):
    """`mixtures/<name>/vNNNN/export/<format>-<tokenizer key>[-<tag>]/manifest.json`: a complete export
    (written last, create-only)."""

    format: str
    mixture: str
    version: str
    uri: str = Field(description="the export's folder")
    export_format: str = Field(description="megatron or npy")
    tokenizer: ExportTokenizer
    dtype: str
    seed: int
    config: dict[str, Any] = Field(description="the export settings (ExportConfig), tokenizer resolved")
    config_hash: str
    partitions: dict[str, int] = Field(description="output parts per phase")
    phases: list[ExportPhase]
    files: list[ExportPart]
    tokens: int
    docs: int
    derived_from: str | None = Field(description="the parent version's export manifest whose parts were reused")
    reused_files: int = Field(description="parts copied untouched from the parent version's export")
    timestamps: ManifestTimestamps
    code_version: str
    mixture_manifest: str = optional("the exported version's manifest")


class ExportSummaryPhase(Contract):
    name: str
    tokens: int
    docs: int
    files: int


class ExportSummaryGroup(Contract):
    phase: str
    group: str
    docs: int
    tokens: int
    files: int = optional("parts of the phase")


class ExportSummary(Contract):
    """`--json` of `export`."""

    mixture: str
    version: str
    key: str = Field(description="the export's folder name: <format>-<tokenizer key>[-<tag>]")
    uri: str
    manifest: str
    format: str
    tokenizer: str = Field(description="the tokenizer key")
    tokens: int
    docs: int
    files: int
    reused_files: int
    phases: list[ExportSummaryPhase]
    groups: list[ExportSummaryGroup]
    dtype: str = optional()
    seed: int = optional()
    card: str = optional("the version's data card (its export section lists the export)")
    seconds: float = optional()


SCHEMAS["export"] = (ExportSummary, "--json of export")
SCHEMAS["export-manifest"] = (ExportManifest, "mixtures/<name>/vNNNN/export/<key>/manifest.json")


# ----------------------------------------------------------------------------- lineage (mixforge lineage)


class LineageDocument(Contract):
    """A document behind the tokens asked about: its lineage sidecar row, with the pool shard's URI."""

    id: str
    source: str | None
    group: str | None = Field(description="mix_group: the mixture group it was drawn for")
    pool_shard: int | None = Field(
        description="index into the mixture manifest's pool.shards (null: a version before mixforge.mixture/3)"
    )
    pool_shard_uri: str | None
    pool_row: int | None = Field(description="its row in that pool shard")
    pool_copy: int | None = Field(description="which copy of the document it is in the phase (0..k-1)")
    run_id: str | None = Field(description="the curation run of its pool shard")
    file: int = Field(description="the export part holding it: an index into the export manifest's files")
    file_uri: str
    token_start: int = Field(description="offset of its first token in the part (BOS included)")
    token_end: int = Field(description="offset just past its EOS")
    prefix_tokens: int = Field(description="BOS and metadata prefix tokens before its text")
    stream_start: int = Field(description="offset of its first token in the phase's token stream")
    tokens_in_range: int = Field(description="how many of its tokens the question's range holds")
    position: Literal["bos", "prefix", "text", "eos"] = optional("--token: where in the document the token falls")
    explain: ExplainSummary | None = optional("--explain: its path through its run (null: see explain_error)")
    explain_error: str = optional("--explain: why there is no explanation")


class LineageFile(Contract):
    index: int
    uri: str
    phase: str
    part: int
    tokens: int
    docs: int


class Lineage(Contract):
    """`--json` of `lineage`: the documents behind a token of an export part, or behind a training step
    (sequential concatenate-and-chunk reading of the phase's parts)."""

    mixture: str
    version: str
    export: str = Field(description="the export's folder name under the version's export/")
    export_uri: str
    phase: str
    phase_tokens: int
    query: Literal["token", "step"]
    stream_start: int = Field(description="the range asked about in the phase's token stream: first token")
    stream_end: int = Field(description="just past its last token")
    files: list[LineageFile] = Field(description="the parts the range overlaps, in stream order")
    documents: list[LineageDocument] = Field(description="every document overlapping the range, in stream order")
    file: int = optional("--token: the part asked about")
    token: int = optional("--token: the offset asked about in that part")
    step: int = optional()
    global_batch: int = optional()
    seq_len: int = optional()
    last_step: int = optional("--step: the phase's last step (possibly partial)")


SCHEMAS["lineage"] = (Lineage, "--json of lineage")


# ----------------------------------------------------------------------------- mixture optimisation (optimize)


class OptimizeGroupSpace(Contract):
    prior: float = Field(description="share the swarm is sampled around (natural token share by default)")
    min: float
    max: float = Field(description="largest share: the bound, lowered by the epoch cap at the budget")
    available_tokens: int


class OptimizeProxyInfo(Contract):
    config: dict[str, Any] = Field(description="the proxy model and training settings (ProxyConfig)")
    tokens: int = Field(description="tokens each proxy reads")
    params: int
    device: str
    max_epochs: float = Field(description="no group of a proxy's sample is taken more often than this")


class OptimizeTarget(Contract):
    name: str
    uri: str
    weight: float
    tokens: str = Field(description="its tokens (.npy, tokenizer ids, EOS after each document)")


class OptimizeProxies(Contract):
    table: str = Field(description="proxies.parquet: one row per proxy (weights, losses, objective, tokens, seconds)")
    count: int
    swarm: int = Field(description="proxies of the swarm and its rounds (the ones fitted)")
    seconds: float


class OptimizeRound(Contract):
    round: int
    proxies: int
    proposal: dict[str, float]
    predicted: float
    temperatures: dict[str, float] = optional("QuaDMix: the round's proposed quality-sampling temperatures")


class OptimizeCV(Contract):
    regressor: str
    spearman: float | None = Field(description="of the pooled out-of-fold predictions (null: no ranking)")
    mae: float | None


class OptimizeTargetFit(Contract):
    target: str
    chosen: str = Field(description="the regressor kept (best CV Spearman, then MAE), refitted on every proxy")
    model: str = Field(description="the saved regressor: LightGBM model text or log-linear parameters (JSON)")
    spearman: float | None
    mae: float
    cv: list[OptimizeCV]


class OptimizeFit(Contract):
    card: str
    swarm: int
    targets: list[OptimizeTargetFit]


class OptimizeProposal(Contract):
    method: str
    weights: dict[str, float]
    predicted: float = Field(description="the weighted objective the regressors predict at the weights")
    temperatures: dict[str, float] = optional(
        "QuaDMix (quality_temperature searched): group -> the proposed quality-sampling temperature"
    )
    alternatives: dict[str, dict[str, Any]] = Field(description="method -> {weights, predicted[, temperatures]}")
    spec: str = Field(description="proposal.yaml: the mixture spec with these weights (mix --spec)")


class OptimizeVerified(Contract):
    id: str
    weights: dict[str, float]
    losses: dict[str, float]
    objective: float = Field(description="the target-weighted loss the proxy reached")
    predicted: float
    temperatures: dict[str, float] = optional("QuaDMix: the quality-sampling temperatures of its sample")


class OptimizeBest(Contract):
    id: str
    weights: dict[str, float]
    objective: float
    temperatures: dict[str, float] = optional("QuaDMix: the quality-sampling temperatures of its sample")


class OptimizeTemperatures(Contract):
    groups: list[str] = Field(description="groups whose quality-sampling temperature was searched")
    min: float
    max: float
    own: dict[str, float] = Field(description="the mixture spec's own temperatures (the prior and uniform proxies')")


class OptimizationManifest(Contract):
    """`optimize/<name>/<run_id>/manifest.json`: a complete mixture optimisation run (written last, create-only)."""

    format: str
    name: str
    run_id: str
    uri: str = Field(description="the run's folder")
    manifest: str
    search: str = Field(description="search.json: the resolved search spec")
    mixture: dict[str, Any] = Field(description="name, store and spec_hash of the mixture searched")
    groups: list[str]
    space: dict[str, OptimizeGroupSpace]
    budget_tokens: int
    epoch_cap: float
    proxy: OptimizeProxyInfo
    targets: list[OptimizeTarget]
    vocab: str | None = Field(description="vocab.npy: tokenizer id -> proxy id (null: no map)")
    proxies: OptimizeProxies
    rounds: list[OptimizeRound]
    fit: OptimizeFit
    proposal: OptimizeProposal
    best_swarm: OptimizeBest
    verify: dict[str, OptimizeVerified] | None = Field(
        description="proposal, prior, uniform and best_swarm (null: verify off)"
    )
    code_version: str
    timestamps: ManifestTimestamps
    seconds: float
    quality_temperature: OptimizeTemperatures = optional("QuaDMix: the temperatures searched (absent: none)")


class OptimizeSummaryFit(Contract):
    target: str
    chosen: str
    spearman: float | None
    mae: float


class OptimizeSummary(Contract):
    """`--json` of `optimize`."""

    name: str
    run_id: str
    uri: str
    manifest: str
    proposal: dict[str, float] = Field(description="the proposed share of each searched group")
    temperatures: dict[str, float] = optional("QuaDMix: the proposed quality-sampling temperature of each group")
    predicted: float
    spec: str = Field(description="proposal.yaml")
    proxies: int
    fit: list[OptimizeSummaryFit]
    verify: dict[str, float] | None = Field(description="role -> objective reached (null: verify off)")
    seconds: float
    materialized: MixSummary = optional("--materialize: the new mixture version")


SCHEMAS["optimize"] = (OptimizeSummary, "--json of optimize")
SCHEMAS["optimize-manifest"] = (OptimizationManifest, "optimize/<name>/<run_id>/manifest.json")


if __name__ == "__main__":
    raise SystemExit(main())
