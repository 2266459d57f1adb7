"""Document ids unique across a run: after normalize, an id held by several shards is kept in one.

The rule (README, "Data contract"): an id found in more than one normalize output shard of a
run is kept in the shard with the lowest index (inputs are sorted by URI) and dropped from every
other shard with reason `duplicate_id` and a `drop_detail` naming both shards. normalize makes
ids unique within a shard, so a shard drops by id value, which makes the drop idempotent.

Three plain steps over Arrow (the Ray layer maps them; every hand-over goes through the store,
so no process holds all ids, the driver included):

    1. hash_shard (per shard)            the `id` column only -> rows (hash, id, shard), in P
                                         files by hash % P
    2. find_duplicates (per partition)   ids in more than one shard -> per shard, the ids it drops
    3. drop_duplicate_ids (per shard     rewrite the shard without them, append them to its
       that drops something)             `_removed` file, update its `_done` counts

A check runs in rounds. The first covers every shard normalize finished. A shard that finishes
on a later rerun (its quarantine cleared) is checked in a new round in which shards checked
before keep whatever they hold: the new shard drops every id the run already has, so a shard
whose output later stages may have read never changes.

Files, under `<run>/normalize/_idcheck/`:

    plans/r-0001.json                    a round (create-only): partitions, new and earlier shards
    done/r-0001.json                     the round's totals, written last
    hashed/s-00003.json                  step 1 marker of a shard (a shard is hashed once)
    hashes/p-0000/s-00003.parquet        step 1 rows of shard 3 in partition 0
    r-0001/drops/p-0000/s-00003.parquet  step 2: ids shard 3 drops, each with the shard keeping it
    r-0001/drops/p-0000/_done.json       step 2 marker, written last
    r-0001/dropped/s-00003.parquet       step 3: the rows shard 3 drops, before anything changes
    r-0001/pending/s-00003.json          step 3: the shard's row counts and `_done` marker before
    r-0001/applied/s-00003.json          step 3 marker, written last

Every file appears atomically. Step 3 changes three files of the shard (kept rows, `_removed`,
`_done`) after recording the rows it drops and the state before; a rerun tells from the row
counts which of the three are already written, so a kill at any point and a rerun give the
same bytes as an uninterrupted run.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mixforge import schema as S
from mixforge import storage
from mixforge.dedup.hashing import hash_strings
from mixforge.executor import Executor, SerialExecutor
from mixforge.runner import summarize_stage
from mixforge.runs import StageLayout
from mixforge.shards import ShardWriter, parquet_file, read_documents, read_parquet, write_parquet
from mixforge.stage import complete_drops

REASON = "duplicate_id"
COUNTER = "duplicate_ids_across_shards"  # in a shard's `_done` counters: rows this check dropped

ID_BYTES_PER_PARTITION = 256 << 20  # step 2 holds about this much id data per partition
HASH_ROW_BYTES = 12  # what a step 1 row adds to its id's bytes: hash (8) + shard (4)
MAX_PARTITIONS = 4096
SAMPLED_SHARDS = 8  # footers read to estimate the bytes per id

HASH_SCHEMA = pa.schema([("hash", pa.uint64()), ("id", pa.string()), ("shard", pa.uint32())])
DROP_SCHEMA = pa.schema([("id", pa.string()), ("kept_in", pa.uint32())])


@dataclass(frozen=True)
class IdCheckLayout:
    """The check's working files, under `<stage dir>/_idcheck/`."""

    stage_dir: str

    def _p(self, *parts: str) -> str:
        return storage.join(self.stage_dir, "_idcheck", *parts)

    @property
    def plans(self) -> str:
        return self._p("plans")

    def plan(self, round_no: int) -> str:
        return self._p("plans", f"r-{round_no:04d}.json")

    @property
    def rounds_done(self) -> str:
        return self._p("done")

    def round_done(self, round_no: int) -> str:
        return self._p("done", f"r-{round_no:04d}.json")

    def hashed(self, shard: int) -> str:
        return self._p("hashed", f"s-{shard:05d}.json")

    def hashes(self, partition: int, shard: int) -> str:
        return self._p("hashes", f"p-{partition:04d}", f"s-{shard:05d}.parquet")

    def drops(self, round_no: int, partition: int, shard: int) -> str:
        return self._p(f"r-{round_no:04d}", "drops", f"p-{partition:04d}", f"s-{shard:05d}.parquet")

    def drops_done(self, round_no: int, partition: int) -> str:
        return self._p(f"r-{round_no:04d}", "drops", f"p-{partition:04d}", "_done.json")

    def dropped(self, round_no: int, shard: int) -> str:
        return self._p(f"r-{round_no:04d}", "dropped", f"s-{shard:05d}.parquet")

    def pending(self, round_no: int, shard: int) -> str:
        return self._p(f"r-{round_no:04d}", "pending", f"s-{shard:05d}.json")

    def applied(self, round_no: int, shard: int) -> str:
        return self._p(f"r-{round_no:04d}", "applied", f"s-{shard:05d}.json")


def _footer(uri: str, storage_options) -> pq.FileMetaData | None:
    """The Parquet footer of `uri`, or None if there is no such file."""
    try:
        with parquet_file(uri, storage_options) as pf:
            return pf.metadata
    except FileNotFoundError:
        return None


def _read_plan(layout: IdCheckLayout, round_no: int, storage_options) -> dict:
    return storage.read_json(layout.plan(round_no), storage_options)


# ---------------------------------------------------------------------------- planning


def estimate_partitions(
    stage: StageLayout, shards: Sequence[int], docs: Mapping[int, int] | None = None, storage_options=None
) -> int:
    """Step 1's partition count: one per 256 MiB of id rows (1 to 4096).

    Bytes per id come from the `id` column chunks of a few shards' footers; the number of ids
    from `docs` (kept documents per shard) when given, else from the sampled shards' row counts.
    The count changes only speed and memory, never which ids are dropped.
    """
    if not shards:
        return 1
    step = max(1, len(shards) // SAMPLED_SHARDS)
    sampled_rows = sampled_bytes = 0
    for shard in list(shards)[::step][:SAMPLED_SHARDS]:
        md = _footer(stage.part(shard), storage_options)
        if md is None or md.num_rows == 0:
            continue
        sampled_rows += md.num_rows
        for g in range(md.num_row_groups):
            rg = md.row_group(g)
            sampled_bytes += sum(
                rg.column(c).total_uncompressed_size
                for c in range(rg.num_columns)
                if rg.column(c).path_in_schema == S.ID
            )
    if sampled_rows == 0:
        return 1
    if docs is not None:
        total_ids = sum(docs.get(s, 0) for s in shards)
    else:
        total_ids = sampled_rows / min(len(shards), SAMPLED_SHARDS) * len(shards)
    id_bytes = total_ids * (sampled_bytes / sampled_rows + HASH_ROW_BYTES)
    return int(min(MAX_PARTITIONS, max(1, -(-int(id_bytes) // ID_BYTES_PER_PARTITION))))


def next_round(
    stage: StageLayout,
    shards: Sequence[tuple[int, str]],
    storage_options=None,
    docs: Mapping[int, int] | None = None,
    partitions: int | None = None,
) -> int | None:
    """The round to run next: an unfinished one, else a new one for the shards no round has
    checked yet (written create-only), else None.

    `shards`: (index, input URI) of every shard normalize finished. `partitions` overrides the
    estimate (tests); later rounds reuse the first round's count (they read its hash files).
    """
    layout = IdCheckLayout(stage.dir)
    plans = {p["round"]: p for p in storage.list_json(layout.plans, storage_options)}
    finished = {d["round"] for d in storage.list_json(layout.rounds_done, storage_options)}
    unfinished = sorted(set(plans) - finished)
    if unfinished:
        return unfinished[0]
    checked = sorted((int(i), uri) for p in plans.values() for i, uri in p["new"])
    covered = {i for i, _ in checked}
    new = sorted((int(i), uri) for i, uri in shards if int(i) not in covered)
    if not new:
        return None
    if plans:
        partitions = plans[min(plans)]["partitions"]
    elif partitions is None:
        partitions = estimate_partitions(stage, [i for i, _ in new], docs, storage_options)
    round_no = max(plans, default=0) + 1
    plan = {"round": round_no, "partitions": int(partitions), "new": new, "earlier": checked}
    # create-only: a concurrent planner of the same round wins or loses whole; either way the
    # round's plan is the one in the store, which every step reads.
    storage.create_only(
        layout.plan(round_no), json.dumps(plan, indent=2, sort_keys=True).encode() + b"\n", storage_options
    )
    return round_no


# ---------------------------------------------------------------------------- step 1


def hash_shard(
    shard: int, part_uri: str, layout: IdCheckLayout, partitions: int, storage_options=None, batch_rows: int = 65536
) -> dict:
    """Rows (hash, id, shard) of one shard's ids, in `partitions` files by hash % partitions.

    Reads only the `id` column. Every partition gets a file, empty or not (a missing file is
    then an error, never "no ids"); the marker goes last.
    """
    marker = layout.hashed(shard)
    if storage.exists(marker, storage_options):
        return storage.read_json(marker, storage_options)
    chunks = [
        c
        for batch in read_documents(part_uri, batch_rows=batch_rows, columns=[S.ID], storage_options=storage_options)
        for c in batch.column(S.ID).chunks
    ]
    id_array = pa.chunked_array(chunks, type=pa.string()).combine_chunks()
    hashes = hash_strings(id_array) if len(id_array) else np.zeros(0, np.uint64)
    part = (hashes % np.uint64(partitions)).astype(np.int64)
    order = np.argsort(part, kind="stable")
    bounds = np.searchsorted(part[order], np.arange(partitions + 1))
    shard_column = np.full(len(hashes), shard, np.uint32)
    for p in range(partitions):
        sel = order[bounds[p] : bounds[p + 1]]
        write_parquet(
            layout.hashes(p, shard),
            pa.table(
                {"hash": hashes[sel], "id": id_array.take(pa.array(sel)), "shard": shard_column[sel]},
                schema=HASH_SCHEMA,
            ),
            storage_options,
            compression="zstd",
        )
    stats = {"shard": shard, "ids": len(id_array), "id_bytes": int(id_array.nbytes)}
    storage.write_json(marker, stats, storage_options)
    return stats


# ---------------------------------------------------------------------------- step 2


def find_duplicates(round_no: int, partition: int, layout: IdCheckLayout, storage_options=None) -> dict:
    """Ids of one partition held by more than one shard -> per shard, the ids it drops.

    The keeper of an id is the lowest-index shard holding it, among shards of earlier rounds
    if any holds it (they keep what they have), else among this round's. Only this round's
    shards drop. Ids are compared as strings, among the rows whose hash repeats.
    """
    done = layout.drops_done(round_no, partition)
    if storage.exists(done, storage_options):
        return storage.read_json(done, storage_options)
    plan = _read_plan(layout, round_no, storage_options)
    new = sorted(int(i) for i, _ in plan["new"])
    shards = sorted(new + [int(i) for i, _ in plan["earlier"]])
    tables = [read_parquet(layout.hashes(partition, s), storage_options) for s in shards]
    rows = pa.concat_tables(tables) if tables else HASH_SCHEMA.empty_table()
    n_ids = rows.num_rows
    del tables
    _, inverse, counts = np.unique(rows.column("hash").to_numpy(), return_inverse=True, return_counts=True)
    candidates = rows.filter(pa.array(counts[inverse] > 1)).select(["id", "shard"])
    del rows
    found = pl.from_arrow(candidates).unique()  # an id twice in one shard is not this check's concern
    found = found.with_columns(
        # priority: earlier rounds' shards first, then by index
        priority=pl.col("shard").is_in(new).cast(pl.UInt64) * (1 << 32) + pl.col("shard").cast(pl.UInt64)
    )
    per_id = (
        found.group_by("id")
        .agg(pl.col("shard").n_unique().alias("holders"), pl.col("priority").min().alias("best"))
        .filter(pl.col("holders") > 1)
    )
    drops = (
        found.join(per_id, on="id")
        .filter(pl.col("shard").is_in(new) & (pl.col("priority") != pl.col("best")))
        .select("id", "shard", (pl.col("best") % (1 << 32)).cast(pl.UInt32).alias("kept_in"))
        .sort("shard", "id")
    )
    by_shard = {}
    for (shard,), group in drops.group_by("shard", maintain_order=True):
        write_parquet(
            layout.drops(round_no, partition, int(shard)),
            group.select("id", "kept_in").to_arrow().cast(DROP_SCHEMA),
            storage_options,
            compression="zstd",
        )
        by_shard[str(int(shard))] = group.height
    stats = {
        "partition": partition,
        "ids": n_ids,
        "duplicate_ids": int(drops.get_column("id").n_unique()),
        "drops": by_shard,
    }
    storage.write_json(done, stats, storage_options)
    return stats


# ---------------------------------------------------------------------------- step 3


def _rows(uri: str, storage_options) -> int | None:
    md = _footer(uri, storage_options)
    return None if md is None else md.num_rows


def _write_dropped(
    round_no: int,
    shard: int,
    partitions: Sequence[int],
    layout: IdCheckLayout,
    stage: StageLayout,
    storage_options,
    batch_rows: int,
) -> tuple[int, int]:
    """Write the rows `shard` drops, labelled, to their own file; returns (rows, chars)."""
    drops = pa.concat_tables([read_parquet(layout.drops(round_no, p, shard), storage_options) for p in partitions])
    plan = _read_plan(layout, round_no, storage_options)
    uris = dict((int(i), uri) for i, uri in plan["new"] + plan["earlier"])
    holders = sorted(uris)
    holder_uris = pa.array([uris[i] for i in holders], pa.string())
    here = f"{uris[shard]} (shard {shard}) output row "
    drop_ids = drops.column("id").combine_chunks()
    kept_in = drops.column("kept_in").combine_chunks()
    writer = ShardWriter(
        layout.dropped(round_no, shard), empty_schema=S.REMOVED_SCHEMA, storage_options=storage_options
    )
    chars, first_row = 0, 0
    try:
        for batch in read_documents(stage.part(shard), batch_rows=batch_rows, storage_options=storage_options):
            hit = pc.fill_null(pc.is_in(batch.column(S.ID), value_set=drop_ids), False)
            if pc.any(hit).as_py():
                rows = batch.filter(hit)
                rows_at = pa.array(np.flatnonzero(hit.to_numpy(zero_copy_only=False)) + first_row, pa.int64())
                row_numbers = rows_at.cast(pa.string())
                keeper = kept_in.take(pc.index_in(rows.column(S.ID), value_set=drop_ids))
                keeper_uri = holder_uris.take(
                    pa.array(np.searchsorted(holders, keeper.to_numpy(zero_copy_only=False)))
                )
                detail = pc.binary_join_element_wise(
                    here,
                    row_numbers,
                    ": id also in shard ",
                    keeper.cast(pa.string()),
                    " (",
                    keeper_uri,
                    "), which keeps it",
                    "",
                )
                labelled = rows.append_column(
                    S.DROP_REASON, pa.array([REASON] * rows.num_rows, pa.string())
                ).append_column(S.DROP_DETAIL, detail)
                # the drop columns of every `_removed/` row: shard and row of the output shard it leaves
                writer.write(
                    S.align_to_schema(complete_drops(labelled, stage.part(shard), "row", rows_at), S.REMOVED_SCHEMA)
                )
                chars += S.text_chars(rows.column(S.TEXT))
            first_row += batch.num_rows
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return writer.rows, chars


def _updated_marker(before: dict, dropped: int, chars: int) -> dict:
    """The shard's `_done` marker once `dropped` rows (`chars` characters) left its kept rows."""
    marker = copy.deepcopy(before)
    marker["docs_kept"] -= dropped
    marker["chars_kept"] -= chars
    for key, n in (("docs_dropped", dropped), ("chars_dropped", chars)):
        counts = dict(marker.get(key, {}))
        counts[REASON] = counts.get(REASON, 0) + n
        marker[key] = dict(sorted(counts.items()))
    counters = dict(marker.get("counters", {}))
    counters[COUNTER] = counters.get(COUNTER, 0) + dropped
    marker["counters"] = dict(sorted(counters.items()))
    outcomes = (
        marker["docs_kept"] + sum(marker["docs_dropped"].values()) + sum(marker.get("docs_skipped", {}).values())
    )
    if marker["docs_in"] != outcomes:
        raise AssertionError(
            f"{marker.get('input')}: counts do not reconcile after dropping duplicate ids: "
            f"in={marker['docs_in']} kept={marker['docs_kept']} dropped={marker['docs_dropped']}"
        )
    return marker


def _copy_without(src: str, dst: str, drop_ids: pa.Array, storage_options, batch_rows: int) -> None:
    writer = ShardWriter(dst, storage_options=storage_options)
    try:
        for batch in read_documents(src, batch_rows=batch_rows, storage_options=storage_options):
            writer.write(
                batch.filter(pc.invert(pc.fill_null(pc.is_in(batch.column(S.ID), value_set=drop_ids), False)))
            )
    except BaseException:
        writer.abort()
        raise
    writer.close()


def _append(src: str | None, extra: str, dst: str, storage_options, batch_rows: int) -> None:
    writer = ShardWriter(dst, empty_schema=S.REMOVED_SCHEMA, storage_options=storage_options)
    try:
        for uri in ([src] if src else []) + [extra]:
            for batch in read_documents(uri, batch_rows=batch_rows, storage_options=storage_options):
                writer.write(S.align_to_schema(batch, S.REMOVED_SCHEMA))  # an older `_removed/`: null drop columns
    except BaseException:
        writer.abort()
        raise
    writer.close()


def drop_duplicate_ids(
    round_no: int,
    shard: int,
    partitions: Sequence[int],
    layout: IdCheckLayout,
    stage: StageLayout,
    storage_options=None,
    batch_rows: int = 8192,
) -> dict:
    """Drop from one shard the ids step 2 found it shares with a keeper shard.

    Order: the dropped rows (own file), then `pending` (row counts and `_done` marker before),
    then the kept rows, `_removed` (what it had + the dropped rows) and `_done`, each only if the
    row counts say it is not written yet, then the marker. `partitions`: those whose step 2
    found drops for this shard.
    """
    marker = layout.applied(round_no, shard)
    if storage.exists(marker, storage_options):
        return storage.read_json(marker, storage_options)
    part, removed, done = stage.part(shard), stage.removed(shard), stage.done(shard)
    pending_uri = layout.pending(round_no, shard)
    if storage.exists(pending_uri, storage_options):
        pending = storage.read_json(pending_uri, storage_options)
    else:  # nothing of the shard has changed yet
        before = {
            "part_rows": _rows(part, storage_options),
            "removed_rows": _rows(removed, storage_options) or 0,
            "marker": storage.read_json(done, storage_options),
        }
        dropped, chars = _write_dropped(round_no, shard, partitions, layout, stage, storage_options, batch_rows)
        pending = {"shard": shard, "dropped": dropped, "chars": chars, **before}
        storage.write_json(pending_uri, pending, storage_options)
    dropped_uri, n = layout.dropped(round_no, shard), pending["dropped"]

    part_rows = _rows(part, storage_options)
    if part_rows == pending["part_rows"] and n:
        drop_ids = read_parquet(dropped_uri, storage_options, columns=[S.ID]).column(S.ID).combine_chunks()
        _copy_without(part, part, drop_ids, storage_options, batch_rows)
    elif part_rows != pending["part_rows"] - n:
        raise RuntimeError(
            f"{part}: {part_rows} rows, expected {pending['part_rows']} (before dropping duplicate ids) "
            f"or {pending['part_rows'] - n} (after); the shard changed outside the id check"
        )
    removed_rows = _rows(removed, storage_options) or 0
    if removed_rows == pending["removed_rows"] and n:
        _append(removed if pending["removed_rows"] else None, dropped_uri, removed, storage_options, batch_rows)
    elif removed_rows != pending["removed_rows"] + n:
        raise RuntimeError(
            f"{removed}: {removed_rows} rows, expected {pending['removed_rows']} (before dropping duplicate "
            f"ids) or {pending['removed_rows'] + n} (after); the shard changed outside the id check"
        )
    updated = _updated_marker(pending["marker"], n, pending["chars"])
    storage.write_json(done, updated, storage_options)
    result = {"shard": shard, "docs_dropped": n, "chars_dropped": pending["chars"], "docs_kept": updated["docs_kept"]}
    storage.write_json(marker, result, storage_options)
    return result


STEPS: dict[str, Callable[..., dict]] = {"hash": hash_shard, "duplicates": find_duplicates, "drop": drop_duplicate_ids}


# ---------------------------------------------------------------------------- the whole check


def _map(executor: Executor, step: str, args: list[tuple], storage_options) -> list:
    """Step `step` over its argument tuples on `executor` (nothing to do: no call at all)."""
    if not args:
        return []
    return executor.map(STEPS[step], args, step=f"normalize:ids-{step}", storage_options=storage_options)


def run_round(round_no: int, stage: StageLayout, storage_options=None, executor: Executor | None = None) -> dict:
    """Steps 1-3 of one round; returns its totals (also written as the round's marker, last)."""
    executor = executor or SerialExecutor()
    layout = IdCheckLayout(stage.dir)
    if storage.exists(layout.round_done(round_no), storage_options):
        return storage.read_json(layout.round_done(round_no), storage_options)
    plan = _read_plan(layout, round_no, storage_options)
    partitions = plan["partitions"]
    _map(
        executor,
        "hash",
        [(int(i), stage.part(int(i)), layout, partitions, storage_options) for i, _ in plan["new"]],
        storage_options,
    )
    found = _map(
        executor, "duplicates", [(round_no, p, layout, storage_options) for p in range(partitions)], storage_options
    )
    affected: dict[int, list[int]] = {}
    for f in found:
        for shard in f["drops"]:
            affected.setdefault(int(shard), []).append(f["partition"])
    applied = _map(
        executor,
        "drop",
        [(round_no, s, sorted(ps), layout, stage, storage_options) for s, ps in sorted(affected.items())],
        storage_options,
    )
    totals = {
        "round": round_no,
        "partitions": partitions,
        "shards": len(plan["new"]),
        "shards_earlier": len(plan["earlier"]),
        "ids_compared": sum(f["ids"] for f in found),
        "duplicate_ids": sum(f["duplicate_ids"] for f in found),
        "docs_dropped": sum(a["docs_dropped"] for a in applied),
        "chars_dropped": sum(a["chars_dropped"] for a in applied),
        "shards_rewritten": sorted(a["shard"] for a in applied),
    }
    storage.write_json(layout.round_done(round_no), totals, storage_options)
    return totals


def check_unique_ids(
    stage: StageLayout,
    shards: Sequence[tuple[int, str]],
    storage_options=None,
    executor: Executor | None = None,
    docs: Mapping[int, int] | None = None,
    partitions: int | None = None,
) -> dict:
    """Make ids unique across the finished shards of a normalize stage (rounds as needed).

    `shards`: (index, input URI) of every shard normalize finished (quarantined ones have no
    output and are left out). Returns totals over every round of the stage so far, and the
    rounds this call ran.
    """
    ran = []
    while (round_no := next_round(stage, shards, storage_options, docs, partitions)) is not None:
        ran.append(run_round(round_no, stage, storage_options, executor))
    rounds = storage.list_json(IdCheckLayout(stage.dir).rounds_done, storage_options)
    return {
        "rounds": len(rounds),
        "rounds_run": [r["round"] for r in ran],
        "partitions": rounds[0]["partitions"] if rounds else None,
        **{k: sum(r[k] for r in rounds) for k in ("shards", "duplicate_ids", "docs_dropped", "chars_dropped")},
        "shards_rewritten": sorted({s for r in rounds for s in r["shards_rewritten"]}),
        "rewrote_now": any(r["shards_rewritten"] for r in ran),
    }


RESTATED_KEYS = ("docs_kept", "docs_dropped", "chars_kept", "chars_dropped", "counters", "funnel")


def restate_summary(summary: dict, stage: StageLayout, storage_options=None) -> dict:
    """`summary` (a stage summary from the shard runner) with the figures the check changes
    (counts, chars, counters, the funnel) recomputed from the shards' `_done` markers as they
    are now; everything else (quarantine, timings, workers) is the runner's."""
    markers = {m["index"]: m for m in storage.list_json(storage.join(stage.dir, "_done"), storage_options)}
    done = [markers[r["index"]] for r in summary["shard_results"] if not r.get("quarantined")]
    recomputed = summarize_stage(summary["name"], summary["output"], done, summary["seconds"])
    restated = {**summary, **{k: recomputed[k] for k in RESTATED_KEYS}}
    restated["shard_results"] = [
        r if r.get("quarantined") else {**r, "docs_kept": markers[r["index"]]["docs_kept"]}
        for r in summary["shard_results"]
    ]
    return restated
