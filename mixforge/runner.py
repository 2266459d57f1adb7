"""Run one stage over one shard: read -> process -> write kept + removed -> mark done.

Pure library code (no Prefect, no Ray): the Ray layer calls `run_shard` remotely, tests call
it directly. A shard's outputs are written before its `_done` marker, and every file appears
atomically, so a crash at any point leaves either a finished shard or one that is recomputed.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import resource
import socket
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mixforge import contracts, progress, storage
from mixforge import schema as S
from mixforge.executor import Call, Executor, SerialExecutor
from mixforge.runs import StageLayout
from mixforge.shards import ReadConfig, ShardUnreadable, ShardWriter, read_documents, read_raw
from mixforge.stage import ShardContext, Stage, add_figures, locate_drops, locate_rejects

log = logging.getLogger("mixforge")


@dataclass(frozen=True)
class ShardJob:
    index: int
    input_uri: str
    layout: StageLayout


def _chars(table: pa.Table) -> int:
    return S.text_chars(table.column(S.TEXT)) if S.TEXT in table.column_names else 0


def _same_text(kept: pa.Table, docs: pa.Table) -> bool:
    """True when `kept` holds `docs`' text column itself (same memory: e.g. only columns were added)."""
    if kept is docs:
        return True
    if kept.num_rows != docs.num_rows or S.TEXT not in kept.column_names or S.TEXT not in docs.column_names:
        return False
    a, b = kept.column(S.TEXT), docs.column(S.TEXT)
    return a.num_chunks == b.num_chunks and all(
        x.offset == y.offset
        and len(x) == len(y)
        and [m and m.address for m in x.buffers()] == [m and m.address for m in y.buffers()]
        for x, y in zip(a.chunks, b.chunks)
    )


class _Tally:
    """A shard's running counts; its state is also what a batch checkpoint saves."""

    def __init__(self) -> None:
        self.restore({})

    def restore(self, state: Mapping[str, Any]) -> None:
        self.docs_in = state.get("docs_in", 0)
        self.docs_kept = state.get("docs_kept", 0)
        self.docs_used = state.get("docs_used", 0)
        self.chars_in = state.get("chars_in", 0)
        self.chars_kept = state.get("chars_kept", 0)
        self.dropped: Counter = Counter(state.get("dropped", {}))
        self.chars_dropped: Counter = Counter(state.get("chars_dropped", {}))
        self.skipped: Counter = Counter(state.get("skipped", {}))

    def state(self) -> dict:
        return {
            "docs_in": self.docs_in,
            "docs_kept": self.docs_kept,
            "docs_used": self.docs_used,
            "chars_in": self.chars_in,
            "chars_kept": self.chars_kept,
            "dropped": dict(self.dropped),
            "chars_dropped": dict(self.chars_dropped),
            "skipped": dict(self.skipped),
        }

    def removed(self, table: pa.Table) -> None:
        if table is None or table.num_rows == 0:
            return
        lengths = pc.fill_null(pc.utf8_length(table.column(S.TEXT)), 0)
        per_reason = (
            pa.table({"reason": table.column(S.DROP_REASON), "chars": lengths})
            .group_by("reason")
            .aggregate([("chars", "count"), ("chars", "sum")])
        )
        for reason, docs, chars in zip(
            *(per_reason.column(c).to_pylist() for c in ("reason", "chars_count", "chars_sum"))
        ):
            self.dropped[reason] += docs
            self.chars_dropped[reason] += chars


class _Outputs:
    """The kept and removed files one run of batches writes (a shard's, or one checkpointed batch's)."""

    def __init__(self, kept_uri: str, removed_uri: str, storage_options) -> None:
        self.kept = ShardWriter(kept_uri, storage_options=storage_options)
        self.removed = ShardWriter(removed_uri, empty_schema=S.REMOVED_SCHEMA, storage_options=storage_options)

    def close(self) -> None:
        self.kept.close()
        if self.removed.rows:
            self.removed.close()
        else:
            self.removed.abort()

    def abort(self) -> None:
        self.kept.abort()
        self.removed.abort()


@dataclass
class _Batch:
    docs: pa.Table
    rejects: pa.Table | None = None  # rows the reader could not use (raw input)
    positions: pa.Array | None = None  # where each row of `docs` is in the shard (raw input)
    unit: str = "row"

    @property
    def rows(self) -> int:
        return self.docs.num_rows + (self.rejects.num_rows if self.rejects is not None else 0)


def _batches(stage: Stage, job: ShardJob, read_options: ReadConfig, storage_options) -> Iterator[_Batch]:
    if stage.batch_rows is not None:
        read_options = read_options.model_copy(update={"batch_rows": stage.batch_rows})
    if stage.reads_raw:
        for raw in read_raw(job.input_uri, read_options, storage_options):
            yield _Batch(raw.docs, raw.rejects, raw.positions, raw.unit)
    else:
        for table in read_documents(
            job.input_uri, batch_rows=read_options.batch_rows, storage_options=storage_options
        ):
            yield _Batch(table)


class UndeclaredColumns(TypeError):
    """A stage read or wrote a column its `reads`/`writes` do not declare (a bug in the stage)."""


def check_declared_columns(stage: Stage, docs: pa.Table, kept: pa.Table) -> None:
    """A stage's `reads` and `writes` are its contract with the stages around it: the columns it
    needs must be there, the columns it adds must be declared, and it may not lose a column it was
    given. Checked on every batch (names only: a few set operations). A `writes` entry may be a
    pattern (`gopher_quality_*`: the features a rule set measures)."""
    if stage.reads_raw:  # its input has any schema: it makes the contract columns itself
        return
    have, out = set(docs.column_names), set(kept.column_names)
    missing = [c for c in stage.reads if c not in have]
    if missing:
        raise UndeclaredColumns(f"stage {stage.name!r} reads column(s) {missing} that its input lacks")
    added = out - have - set(S.CORE_COLUMNS)  # the contract's own columns are never an addition
    undeclared = sorted(c for c in added if not any(fnmatch.fnmatchcase(c, w) for w in stage.writes))
    if undeclared:
        raise UndeclaredColumns(f"stage {stage.name!r} wrote column(s) {undeclared} not declared in its `writes`")
    lost = sorted(have - out)
    if lost and not stage.generates:
        raise UndeclaredColumns(f"stage {stage.name!r} lost column(s) {lost} of its input")


def _process_batch(stage: Stage, batch: _Batch, ctx: ShardContext, tally: _Tally, out: _Outputs) -> None:
    docs, rejects = batch.docs, batch.rejects
    ctx.positions, ctx.position_unit = batch.positions, batch.unit
    if rejects is not None and rejects.num_rows:
        rejects = locate_rejects(rejects, ctx)  # every drop has the schema.DROP_FIELDS
        tally.docs_in += rejects.num_rows
        tally.chars_in += _chars(rejects)
        tally.removed(rejects)
        out.removed.write(rejects)
    chars = _chars(docs)
    tally.docs_in += docs.num_rows
    tally.chars_in += chars
    _ensure_setup(stage)  # lazily: a resumed shard whose batches are all checkpointed loads no model
    result = stage.process(docs, ctx)
    check_declared_columns(stage, docs, result.kept)
    removed = locate_drops(result, docs, ctx)  # every drop names shard and line/row, with the DROP_FIELDS
    ctx.row_offset += docs.num_rows
    out.kept.write(result.kept)
    tally.docs_kept += result.kept.num_rows
    tally.chars_kept += chars if _same_text(result.kept, docs) else _chars(result.kept)
    if stage.generates:
        tally.docs_used += result.used or 0
        tally.skipped.update(result.skipped or {})
    elif result.skipped or result.used is not None:
        raise TypeError(f"stage {stage.name!r} returned used/skipped counts but is not a generating stage")
    if removed is not None and removed.num_rows:
        tally.removed(removed)
        out.removed.write(removed)


def _run_batches(
    stage: Stage, job: ShardJob, read_options: ReadConfig, storage_options, ctx: ShardContext, tally: _Tally
) -> None:
    out = _Outputs(job.layout.part(job.index), job.layout.removed(job.index), storage_options)
    try:
        for batch in _batches(stage, job, read_options, storage_options):
            _process_batch(stage, batch, ctx, tally, out)
    except BaseException:
        out.abort()
        raise
    out.close()


def _run_checkpointed(
    stage: Stage, job: ShardJob, read_options: ReadConfig, storage_options, ctx: ShardContext, tally: _Tally
) -> None:
    """Like `_run_batches`, but every batch's outputs and counts are saved as it finishes.

    A rerun restores the saved batches (a prefix of the shard: batches run in order) instead of
    recomputing them, and computes from the first batch without a checkpoint. The shard's files
    are then assembled from the pieces.
    """
    layout, index = job.layout, job.index
    saved = {c["batch"]: c for c in storage.list_json(layout.pieces(index), storage_options)}
    restoring, rows_read, batch = True, 0, -1
    for batch, read in enumerate(_batches(stage, job, read_options, storage_options)):
        rows = read.rows
        point = saved.get(batch)
        if restoring and point is not None and point["rows_before"] == rows_read and point["rows"] == rows:
            tally.restore(point["tally"])
            ctx.counters = Counter(point["counters"])
            ctx.figures = point.get("figures")  # None from an older checkpoint: the marker then records no figures
            ctx.row_offset += read.docs.num_rows
            rows_read += rows
            continue
        restoring = False  # from here on, every batch is computed (and a stale checkpoint overwritten)
        out = _Outputs(layout.piece(index, batch, "kept"), layout.piece(index, batch, "removed"), storage_options)
        try:
            _process_batch(stage, read, ctx, tally, out)
        except BaseException:
            out.abort()
            raise
        out.close()
        storage.write_json(
            layout.piece(index, batch, "done"),
            {
                "batch": batch,
                "rows_before": rows_read,
                "rows": rows,
                "removed_rows": out.removed.rows,
                "tally": tally.state(),
                "counters": dict(ctx.counters),
                "figures": ctx.figures,
            },
            storage_options,
        )
        saved[batch] = {"removed_rows": out.removed.rows}
        rows_read += rows
    merged = _Outputs(layout.part(index), layout.removed(index), storage_options)
    try:
        for b in range(batch + 1):
            pieces = [(merged.kept, "kept")] + ([(merged.removed, "removed")] if saved[b]["removed_rows"] else [])
            for writer, kind in pieces:
                for table in read_documents(layout.piece(index, b, kind), storage_options=storage_options):
                    writer.write(table)
    except BaseException:
        merged.abort()
        raise
    merged.close()


def run_shard(
    stage: Stage,
    job: ShardJob,
    read_options: ReadConfig = ReadConfig(),
    storage_options: Mapping[str, Any] | None = None,
) -> dict:
    """Process one shard; returns its stats (also written as the `_done` marker).

    A shard already marked done is skipped and its recorded stats returned. A shard that
    cannot be read is quarantined: its partial outputs are discarded and a `_quarantine`
    marker names the error; a later rerun tries it again. A stage that checkpoints batches
    resumes a shard from its last finished batch.
    """
    layout = job.layout
    if storage.exists(layout.done(job.index), storage_options):
        return {**storage.read_json(layout.done(job.index), storage_options), "skipped": True}
    started, cpu_started, started_at = time.perf_counter(), time.process_time(), time.time()
    ctx = ShardContext(job.input_uri, job.index)
    tally = _Tally()
    run_batches = _run_checkpointed if stage.checkpoint_batches else _run_batches
    try:
        run_batches(stage, job, read_options, storage_options, ctx, tally)
    except ShardUnreadable as e:
        # The quarantine ledger: rows decoded before the error, rows the shard declares (if it says).
        ledger = {"error": str(e), "rows_decoded": e.rows_decoded, "rows_declared": e.rows_declared}
        record = {"shard": job.input_uri, "index": job.index, **ledger, "stage": stage.name}
        storage.write_json(layout.quarantine(job.index), record, storage_options)
        return {
            "index": job.index,
            "input": job.input_uri,
            "quarantined": True,
            **ledger,
            "seconds": round(time.perf_counter() - started, 4),
        }
    stats = {
        "index": job.index,
        "input": job.input_uri,
        "output": layout.part(job.index),
        "quarantined": False,
        "docs_in": tally.docs_in,
        "docs_kept": tally.docs_kept,
        "docs_dropped": dict(sorted(tally.dropped.items())),
        "docs_skipped": dict(sorted(tally.skipped.items())),
        **({"docs_used": tally.docs_used} if stage.generates else {}),
        "chars_in": tally.chars_in,
        "chars_kept": tally.chars_kept,
        "chars_dropped": dict(sorted(tally.chars_dropped.items())),
        "counters": dict(sorted(ctx.counters.items())),
        **({"figures": ctx.figures} if ctx.figures is not None else {}),
        "drop_order": stage.drop_order(),
        "seconds": round(time.perf_counter() - started, 4),
        "cpu_seconds": round(time.process_time() - cpu_started, 4),  # this process, all its threads
        "peak_rss_mb": peak_rss_mb(),
        # where and when: a stage's timeline (stragglers, idle workers) can be rebuilt from its markers
        "worker": f"{socket.gethostname()}:{os.getpid()}",
        "started_at": round(started_at, 3),
    }
    _check_reconciles(stats)
    contracts.validate(stats, contracts.DoneShardStats)  # the `_done` marker's contract (docs/schemas)
    storage.write_json(layout.done(job.index), stats, storage_options)
    for leftover in (layout.quarantine(job.index), layout.pieces(job.index)):
        if storage.exists(leftover, storage_options):
            fs, path = storage.filesystem(leftover, storage_options)
            fs.rm(path, recursive=True)
    return stats


def peak_rss_mb() -> float:
    """Peak resident memory of this (worker) process so far, in MiB."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _check_reconciles(stats: dict) -> None:
    """Every input row has exactly one outcome: kept (or, generating, used), skipped or dropped."""
    dropped = sum(stats["docs_dropped"].values())
    skipped = sum(stats["docs_skipped"].values())
    outcome, n = ("used", stats["docs_used"]) if "docs_used" in stats else ("kept", stats["docs_kept"])
    if stats["docs_in"] != n + skipped + dropped:
        raise AssertionError(
            f"{stats['input']}: counts do not reconcile: in={stats['docs_in']} {outcome}={n} "
            f"skipped={skipped} dropped={dropped}"
        )


_SETUP_DONE: set[int] = set()


def _ensure_setup(stage: Stage) -> None:
    """Call `stage.setup()` once per stage object per process (models load once per worker)."""
    if id(stage) not in _SETUP_DONE:
        stage.setup()
        _SETUP_DONE.add(id(stage))


# ----------------------------------------------------------------------------- a stage over its shards


class StageFailed(RuntimeError):
    """Some shards of a stage still failed after their retries (the message names them)."""


# Worker-side: the stage of the run in progress (and its loaded models), by a token per run_stage
# call, so a worker sets a stage up once however many of its shards it runs. Only the latest is
# kept: a worker moving on to the next stage drops the previous one's models.
_WORKER_STAGE: dict[str, Stage] = {}


def run_shard_in_worker(
    token: str, stage: Stage, job: ShardJob, read_options: ReadConfig, storage_options: Mapping[str, Any] | None
) -> dict:
    """`run_shard` with the worker's copy of `stage` (set up once per worker and stage run)."""
    if token not in _WORKER_STAGE:
        _WORKER_STAGE.clear()
        _WORKER_STAGE[token] = stage
    return run_shard(_WORKER_STAGE[token], job, read_options, storage_options)


def finished_shards(layout: StageLayout, storage_options: Mapping[str, Any] | None) -> dict[int, dict]:
    """Stats of the shards already done in this stage, by index (one listing)."""
    return {
        s["index"]: {**s, "skipped": True}
        for s in storage.list_json(storage.join(layout.dir, "_done"), storage_options)
    }


def run_stage(
    stage: Stage,
    layout: StageLayout,
    inputs: Sequence[tuple[int, str]],
    executor: Executor | None = None,
    read_options: ReadConfig = ReadConfig(),
    storage_options: Mapping[str, Any] | None = None,
    *,
    write_stats: bool = True,
) -> dict:
    """Process every (index, input URI) with `stage` on `executor` (default: in this process); returns
    the stage summary, also written as `_stats.json` (`write_stats=False`: a composite writes the
    stage's `_stats.json` itself, once, with its own figures).

    Finished shards (a `_done` marker) are not run again, so a rerun recomputes only what is
    missing. A shard that still fails after its retries makes the stage fail (StageFailed) once
    every other shard is finished; a rerun then retries it.
    """
    executor = executor or SerialExecutor()
    started = time.perf_counter()
    done = finished_shards(layout, storage_options)
    todo = [ShardJob(i, uri, layout) for i, uri in inputs if i not in done]
    # Largest shards first: the stage then ends on small shards, not with every worker idle but
    # one busy with a big shard (sizes from one listing per folder; unknown sizes go last).
    sizes = storage.file_sizes([job.input_uri for job in todo], storage_options)
    todo.sort(key=lambda job: -sizes.get(job.input_uri, -1))
    results: list[dict] = [done[i] for i, _ in inputs if i in done]
    failures: list[tuple[ShardJob, str]] = []
    reporter = progress.get()
    reporter.stage_started(stage.name, len(inputs), len(results))
    if todo:
        token = uuid.uuid4().hex
        calls = [Call(job, (token, stage, job, read_options, storage_options)) for job in todo]
        for job, stats, error in executor.run(
            run_shard_in_worker,
            calls,
            resources=stage.resources,
            runtime_env=stage.runtime_env,
            storage_options=storage_options,
        ):
            if error is not None:
                log.error("shard %d (%s) failed: %s", job.index, job.input_uri, error)
                failures.append((job, error))
                continue
            results.append(stats)
            reporter.shard_finished(stage.name, stats)

    results.sort(key=lambda s: s["index"])
    summary = summarize_stage(stage.name, layout.dir, results, time.perf_counter() - started)
    if failures:
        lines = "\n".join(f"  shard {j.index} ({j.input_uri}): {err}" for j, err in failures)
        raise StageFailed(
            f"stage {stage.name!r}: {len(failures)} shard(s) failed after {executor.max_retries} retries "
            f"(rerun the same run id to retry only these):\n{lines}"
        )
    summary["shard_results"] = [
        {k: s.get(k) for k in ("index", "input", "quarantined", "docs_in", "docs_kept", "skipped")} for s in results
    ]
    if write_stats:
        storage.write_json(layout.stats, summary, storage_options)
    reporter.stage_finished(stage.name, summary)
    return summary


def completed_outputs(layout: StageLayout, summary: dict) -> list[tuple[int, str]]:
    """(index, kept-shard URI) of every shard this stage finished: the next stage's inputs."""
    return [(s["index"], layout.part(s["index"])) for s in summary["shard_results"] if not s.get("quarantined")]


def summarize_stage(name: str, output: str, shard_stats: list[dict], seconds: float) -> dict:
    """Aggregate per-shard stats into the stage summary (the `--json` and `_stats.json` shape)."""
    done = [s for s in shard_stats if not s.get("quarantined")]
    quarantined = [s for s in shard_stats if s.get("quarantined")]
    dropped: Counter = Counter()
    chars_dropped: Counter = Counter()
    skipped: Counter = Counter()
    counters: Counter = Counter()
    figures: dict = {}
    for s in done:
        dropped.update(s["docs_dropped"])
        chars_dropped.update(s["chars_dropped"])
        skipped.update(s.get("docs_skipped", {}))
        counters.update(s.get("counters", {}))
        figures = add_figures(figures, s.get("figures", {}))
    order: list[str] = []
    for s in done:
        order.extend(r for r in s.get("drop_order", []) if r not in order)
    # The funnel: reasons (drops, and a generating stage's skips) in the order the stage checks
    # them, then the rest (e.g. unreadable rows).
    outcomes = dropped + skipped
    ranked = [r for r in order if r in outcomes] + sorted(r for r in outcomes if r not in order)
    remaining = sum(s["docs_in"] for s in done)
    funnel = []
    for reason in ranked:
        remaining -= outcomes[reason]
        funnel.append(
            {
                "reason": reason,
                "docs": outcomes[reason],
                "chars": chars_dropped.get(reason, 0),
                "docs_remaining": remaining,
                **({"skipped": True} if reason in skipped else {}),
            }
        )
    generated = [s for s in done if "docs_used" in s]
    summary = {
        "name": name,
        "output": output,
        "shards": len(shard_stats),
        "shards_skipped": sum(1 for s in shard_stats if s.get("skipped")),
        "docs_in": sum(s["docs_in"] for s in done),
        "docs_kept": sum(s["docs_kept"] for s in done),
        "docs_dropped": dict(sorted(dropped.items())),
        "docs_skipped": dict(sorted(skipped.items())),
        **({"docs_used": sum(s["docs_used"] for s in generated)} if generated else {}),
        # The quarantine ledger: what the unreadable shards declare they hold (null when one does not
        # say: a JSONL shard, a Parquet footer that cannot be read) and what was decoded before each error.
        "docs_quarantined": _declared_total(quarantined),
        "docs_quarantined_decoded": sum(s.get("rows_decoded") or 0 for s in quarantined),
        "quarantined": [
            {
                "shard": s["input"],
                "error": s["error"],
                "rows_decoded": s.get("rows_decoded"),
                "rows_declared": s.get("rows_declared"),
            }
            for s in quarantined
        ],
        "chars_in": sum(s["chars_in"] for s in done),
        "chars_kept": sum(s["chars_kept"] for s in done),
        "chars_dropped": dict(sorted(chars_dropped.items())),
        "counters": dict(sorted(counters.items())),
        # figures_missing: shards done without figures (an older version's markers), not in the sums
        **(
            {"figures": figures, "figures_missing": [s["index"] for s in done if "figures" not in s]}
            if any(s.get("figures") for s in done)
            else {}
        ),  # only stages that record figures
        "funnel": funnel,
        "seconds": round(seconds, 3),
        "shard_seconds": round(sum(s.get("seconds", 0.0) for s in shard_stats), 3),
        "shard_cpu_seconds": round(sum(s.get("cpu_seconds", 0.0) for s in shard_stats), 3),
        "worker_peak_rss_mb": max((s.get("peak_rss_mb", 0.0) for s in done), default=0.0),
        **_utilisation([s for s in shard_stats if not s.get("skipped") and "started_at" in s]),
    }
    contracts.validate(summary, contracts.StageSummary)  # the contract people script against (docs/schemas)
    return summary


def _declared_total(quarantined: list[dict]) -> int | None:
    declared = [s.get("rows_declared") for s in quarantined]
    return None if any(d is None for d in declared) else sum(declared)


def _utilisation(ran: list[dict]) -> dict:
    """How busy the worker processes that ran shards in this run were, from the shards' start and
    wall times: well under 1 means stragglers (uneven shards, a slow node) or workers waiting for
    work. Approximate: a restarted worker counts as another process, and clocks are per host."""
    if not ran:
        return {}
    workers = {s["worker"] for s in ran}
    span = max(s["started_at"] + s["seconds"] for s in ran) - min(s["started_at"] for s in ran)
    busy = sum(s["seconds"] for s in ran)
    return {"workers": len(workers), "worker_busy_share": round(busy / (len(workers) * span), 3) if span > 0 else None}


def quarantine_rows(entry: Mapping[str, Any]) -> str:
    """A quarantined shard's rows, for people: how many were decoded before the error, how many it declares."""
    declared = entry.get("rows_declared")
    return f"{entry.get('rows_decoded', 0):,} rows decoded before the error, " + (
        f"{declared:,} declared by its footer" if declared is not None else "row count unknown"
    )


def format_traceback(e: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(e), e)).strip()
