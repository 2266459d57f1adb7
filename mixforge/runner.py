"""Run one stage over one shard: read -> process -> write kept + removed -> mark done.

Pure library code (no Prefect, no Ray): the Ray layer calls `run_shard` remotely, tests call
it directly. A shard's outputs are written before its `_done` marker, and every file appears
atomically, so a crash at any point leaves either a finished shard or one that is recomputed.
"""

from __future__ import annotations

import resource
import time
import traceback
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mixforge import schema as S
from mixforge import storage
from mixforge.runs import StageLayout
from mixforge.shards import REJECT_SCHEMA, ReadOptions, ShardUnreadable, ShardWriter, read_documents, read_raw
from mixforge.stage import ShardContext, Stage


@dataclass(frozen=True)
class ShardJob:
    index: int
    input_uri: str
    layout: StageLayout


def _chars(table: pa.Table) -> int:
    if S.TEXT not in table.column_names or table.num_rows == 0:
        return 0
    return int(pc.sum(pc.utf8_length(table.column(S.TEXT))).as_py() or 0)


class _Tally:
    def __init__(self) -> None:
        self.docs_in = self.docs_kept = self.chars_in = self.chars_kept = 0
        self.dropped: Counter = Counter()
        self.chars_dropped: Counter = Counter()

    def removed(self, table: pa.Table) -> None:
        if table is None or table.num_rows == 0:
            return
        lengths = pc.fill_null(pc.utf8_length(table.column(S.TEXT)), 0)
        per_reason = pa.table({"reason": table.column(S.DROP_REASON), "chars": lengths}).group_by("reason").aggregate(
            [("chars", "count"), ("chars", "sum")])
        for reason, docs, chars in zip(*(per_reason.column(c).to_pylist() for c in ("reason", "chars_count", "chars_sum"))):
            self.dropped[reason] += docs
            self.chars_dropped[reason] += chars


def _batches(stage: Stage, job: ShardJob, read_options: ReadOptions, storage_options) -> Iterator[tuple[pa.Table, pa.Table | None]]:
    if stage.reads_raw:
        for raw in read_raw(job.input_uri, read_options, storage_options):
            yield raw.docs, raw.rejects
    else:
        for table in read_documents(job.input_uri, batch_rows=read_options.batch_rows, storage_options=storage_options):
            yield table, None


def run_shard(stage: Stage, job: ShardJob, read_options: ReadOptions = ReadOptions(),
              storage_options: Mapping[str, Any] | None = None) -> dict:
    """Process one shard; returns its stats (also written as the `_done` marker).

    A shard already marked done is skipped and its recorded stats returned. A shard that
    cannot be read is quarantined: its partial outputs are discarded and a `_quarantine`
    marker names the error; a later rerun tries it again.
    """
    layout = job.layout
    if storage.exists(layout.done(job.index), storage_options):
        return {**storage.read_json(layout.done(job.index), storage_options), "skipped": True}
    _ensure_setup(stage)
    started = time.perf_counter()
    ctx = ShardContext(job.input_uri, job.index)
    tally = _Tally()
    kept_writer = ShardWriter(layout.part(job.index), storage_options=storage_options)
    removed_writer = ShardWriter(layout.removed(job.index), empty_schema=REJECT_SCHEMA, storage_options=storage_options)
    try:
        for docs, rejects in _batches(stage, job, read_options, storage_options):
            if rejects is not None and rejects.num_rows:
                tally.docs_in += rejects.num_rows
                tally.chars_in += _chars(rejects)
                tally.removed(rejects)
                removed_writer.write(rejects)
            chars = _chars(docs)
            tally.docs_in += docs.num_rows
            tally.chars_in += chars
            result = stage.process(docs, ctx)
            ctx.row_offset += docs.num_rows
            kept_writer.write(result.kept)
            tally.docs_kept += result.kept.num_rows
            tally.chars_kept += chars if result.kept is docs else _chars(result.kept)
            if result.removed is not None and result.removed.num_rows:
                removed = result.removed
                if S.DROP_DETAIL not in removed.column_names:
                    removed = removed.append_column(S.DROP_DETAIL, pa.nulls(removed.num_rows, pa.string()))
                tally.removed(removed)
                removed_writer.write(removed)
    except ShardUnreadable as e:
        kept_writer.abort()
        removed_writer.abort()
        record = {"shard": job.input_uri, "index": job.index, "error": str(e), "stage": stage.name}
        storage.write_json(layout.quarantine(job.index), record, storage_options)
        return {"index": job.index, "input": job.input_uri, "quarantined": True, "error": str(e),
                "seconds": round(time.perf_counter() - started, 4)}
    except BaseException:
        kept_writer.abort()
        removed_writer.abort()
        raise
    kept_writer.close()
    if removed_writer.rows:
        removed_writer.close()
    stats = {
        "index": job.index,
        "input": job.input_uri,
        "output": layout.part(job.index),
        "quarantined": False,
        "docs_in": tally.docs_in,
        "docs_kept": tally.docs_kept,
        "docs_dropped": dict(sorted(tally.dropped.items())),
        "chars_in": tally.chars_in,
        "chars_kept": tally.chars_kept,
        "chars_dropped": dict(sorted(tally.chars_dropped.items())),
        "counters": dict(sorted(ctx.counters.items())),
        "drop_order": stage.drop_order(),
        "seconds": round(time.perf_counter() - started, 4),
        "peak_rss_mb": peak_rss_mb(),
    }
    _check_reconciles(stats)
    storage.write_json(layout.done(job.index), stats, storage_options)
    if storage.exists(layout.quarantine(job.index), storage_options):
        fs, path = storage.filesystem(layout.quarantine(job.index), storage_options)
        fs.rm(path)
    return stats


def peak_rss_mb() -> float:
    """Peak resident memory of this (worker) process so far, in MiB."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _check_reconciles(stats: dict) -> None:
    dropped = sum(stats["docs_dropped"].values())
    if stats["docs_in"] != stats["docs_kept"] + dropped:
        raise AssertionError(f"{stats['input']}: counts do not reconcile: in={stats['docs_in']} kept={stats['docs_kept']} dropped={dropped}")


_SETUP_DONE: set[int] = set()


def _ensure_setup(stage: Stage) -> None:
    """Call `stage.setup()` once per stage object per process (models load once per worker)."""
    if id(stage) not in _SETUP_DONE:
        stage.setup()
        _SETUP_DONE.add(id(stage))


def summarize_stage(name: str, output: str, shard_stats: list[dict], seconds: float) -> dict:
    """Aggregate per-shard stats into the stage summary (the `--json` and `_stats.json` shape)."""
    done = [s for s in shard_stats if not s.get("quarantined")]
    quarantined = [s for s in shard_stats if s.get("quarantined")]
    dropped: Counter = Counter()
    chars_dropped: Counter = Counter()
    counters: Counter = Counter()
    for s in done:
        dropped.update(s["docs_dropped"])
        chars_dropped.update(s["chars_dropped"])
        counters.update(s.get("counters", {}))
    order: list[str] = []
    for s in done:
        order.extend(r for r in s.get("drop_order", []) if r not in order)
    # The funnel: reasons in the order the stage checks them, then the rest (e.g. unreadable rows).
    ranked = [r for r in order if r in dropped] + sorted(r for r in dropped if r not in order)
    remaining = sum(s["docs_in"] for s in done)
    funnel = []
    for reason in ranked:
        remaining -= dropped[reason]
        funnel.append({"reason": reason, "docs": dropped[reason], "chars": chars_dropped[reason], "docs_remaining": remaining})
    return {
        "name": name,
        "output": output,
        "shards": len(shard_stats),
        "shards_skipped": sum(1 for s in shard_stats if s.get("skipped")),
        "docs_in": sum(s["docs_in"] for s in done),
        "docs_kept": sum(s["docs_kept"] for s in done),
        "docs_dropped": dict(sorted(dropped.items())),
        "docs_quarantined": 0 if not quarantined else None,  # a shard that cannot be read has no count
        "quarantined": [{"shard": s["input"], "error": s["error"]} for s in quarantined],
        "chars_in": sum(s["chars_in"] for s in done),
        "chars_kept": sum(s["chars_kept"] for s in done),
        "chars_dropped": dict(sorted(chars_dropped.items())),
        "counters": dict(sorted(counters.items())),
        "funnel": funnel,
        "seconds": round(seconds, 3),
        "shard_seconds": round(sum(s.get("seconds", 0.0) for s in shard_stats), 3),
        "worker_peak_rss_mb": max((s.get("peak_rss_mb", 0.0) for s in done), default=0.0),
    }


def format_traceback(e: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(e), e)).strip()
