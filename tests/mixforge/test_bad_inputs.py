"""The bad-input suite: every row the generator wrote is kept, dropped with a reason naming its shard
and line/row, or inside a quarantined shard that the ledger names; nothing is silently gone.

Checked twice against the generator's own record (tests/badinputs.py): once at the reader, and
once through the real curate flow (normalize -> filter -> dedup on Ray, under Prefect), stage by
stage, reading the kept shards and the `_removed/` audit back.
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections import Counter

import pyarrow.parquet as pq
import pytest

from mixforge import schema as S
from mixforge.shards import ReadConfig, ShardUnreadable, read_raw
from tests.badinputs import KEPT, MAX_DOC_BYTES, QUARANTINED, TAG_PATTERN, Corpus, generate

NORMALIZE_REASONS = {"empty_text"}  # drops made by the normalize stage itself, after the reader


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Corpus:
    return generate(str(tmp_path_factory.mktemp("bad") / "raw"))


def tag_of(row: dict) -> str:
    """The generator's tag of an output row: in `meta`, or in the text preview of a row the reader could not parse."""
    for value in (row.get(S.META), row.get(S.TEXT)):
        if value and (m := TAG_PATTERN.search(value)):
            return m.group(0)
    raise AssertionError(f"a row without a generator tag: {str(row)[:300]}")


def check_kept_row(row: dict, expected, shard) -> None:
    if expected.id is not None:
        assert row[S.ID] == expected.id
    if expected.derived_id:
        assert re.fullmatch(rf"{re.escape(row[S.SOURCE])}/{S.shard_tag(shard.path)}/[0-9a-f]{{16}}-\d+", row[S.ID]), (
            row[S.ID]
        )
    if expected.source is not None:
        assert row[S.SOURCE] == expected.source
    if expected.meta is not None:
        meta = json.loads(row[S.META])
        for key, value in expected.meta.items():
            assert meta.get(key, "<absent>") == value, (expected.tag, key, meta.get(key, "<absent>"), value)


def test_the_generator_covers_at_least_30_kinds(corpus):
    assert len(corpus.kinds) >= 30, corpus.kinds
    outcomes = corpus.outcomes()
    assert outcomes[KEPT] and outcomes[QUARANTINED] and len(outcomes) >= 9  # kept, quarantined, 7 drop reasons
    tags = [r.tag for r in corpus.rows]
    assert len(tags) == len(set(tags))
    for shard in corpus.shards:
        assert os.path.exists(shard.path)


def test_the_reader_accounts_for_every_row(corpus):
    """read_raw over each shard: documents and rejects hold exactly the rows the generator wrote,
    each with its outcome and position; unreadable shards raise with the byte offset and the ledger."""
    options = ReadConfig(max_doc_bytes=MAX_DOC_BYTES, batch_rows=5)  # small batches: ids and duplicates across batches
    accounted = Counter()
    for shard in corpus.shards:
        expected = {r.tag: r for r in shard.rows}
        if shard.quarantined:
            with pytest.raises(ShardUnreadable) as err:
                list(read_raw(shard.path, options))
            assert str(err.value).startswith(f"{shard.path}: ") and re.search(shard.error, str(err.value)), str(
                err.value
            )
            assert 0 <= err.value.rows_decoded <= len(shard.rows)
            assert err.value.rows_declared == shard.rows_declared
            accounted[QUARANTINED] += len(shard.rows)
            continue
        seen: dict[str, str] = {}
        for batch in read_raw(shard.path, options):
            assert batch.docs.schema == S.CORE_SCHEMA
            for row, position in zip(batch.docs.to_pylist(), batch.positions.to_pylist()):
                tag = tag_of(row)
                assert tag not in seen, f"{tag} read twice"
                seen[tag] = KEPT
                assert position == expected[tag].position, (shard.kind, tag)
                check_kept_row(row, expected[tag], shard)
            for row in batch.rejects.to_pylist():
                tag = tag_of(row)
                assert tag not in seen, f"{tag} read twice"
                seen[tag] = row[S.DROP_REASON]
                assert row[S.DROP_DETAIL].startswith(f"{shard.path} {shard.unit} {expected[tag].position}: "), row[
                    S.DROP_DETAIL
                ]
        want = {t: (KEPT if r.outcome in NORMALIZE_REASONS else r.outcome) for t, r in expected.items()}
        assert seen == want, shard.kind
        accounted.update(seen.values())
    assert sum(accounted.values()) == len(corpus.rows)


# ----------------------------------------------------------------------------- the curate flow


def read_rows(paths: list[str]) -> list[dict]:
    return [row for p in paths for row in pq.read_table(p).to_pylist()]


def stage_files(stage: dict) -> tuple[list[str], list[str]]:
    out = stage["output"]
    return sorted(glob.glob(f"{glob.escape(out)}/part-*.parquet")), sorted(
        glob.glob(f"{glob.escape(out)}/_removed/part-*.parquet")
    )


def tags_by_outcome(stage: dict) -> tuple[dict[str, dict], dict[str, dict]]:
    """(kept rows by tag, removed rows by tag) of a stage, read back from its files; no tag twice."""
    kept_files, removed_files = stage_files(stage)
    kept, removed = {}, {}
    for rows, into in ((read_rows(kept_files), kept), (read_rows(removed_files), removed)):
        for row in rows:
            tag = tag_of(row)
            assert tag not in kept and tag not in removed, f"{stage['name']}: {tag} written twice"
            into[tag] = row
    return kept, removed


def check_drop_details_point_at_rows(stage: dict, removed: dict[str, dict], inputs: dict[str, list[dict]]) -> None:
    """A later stage's drop detail names its input shard and row: that row holds the dropped document."""
    for tag, row in removed.items():
        m = re.fullmatch(r"(.+) row (\d+)(: .*)?", row[S.DROP_DETAIL], re.DOTALL)
        assert m and m.group(1) in inputs, f"{stage['name']}: {row[S.DROP_DETAIL]!r}"
        assert tag_of(inputs[m.group(1)][int(m.group(2))]) == tag


def test_curate_flow_accounts_for_every_row(corpus, tmp_path, ray_local, prefect_harness):
    from flows.curate import curate
    from mixforge.config import CurateConfig, RayConfig, ReadConfig

    config = CurateConfig(
        stages=["normalize", "filter", "dedup"],
        read=ReadConfig(max_doc_bytes=MAX_DOC_BYTES),
        ray=RayConfig(max_shards_in_flight=4, max_retries=0),
    )
    summary = curate(input=corpus.root, output=str(tmp_path / "store"), config=config)
    normalize, filt, dedup = summary["stages"]
    readable = [s for s in corpus.shards if not s.quarantined]
    by_tag = corpus.by_tag()

    # --- normalize: the reader's and normalize's outcomes, row by row, against the generator
    expected_quarantined = {s.path: s for s in corpus.shards if s.quarantined}
    ledger = {q["shard"]: q for q in normalize["quarantined"]}
    assert set(ledger) == set(expected_quarantined)
    for path, q in ledger.items():
        shard = expected_quarantined[path]
        assert q["error"].startswith(f"{path}: ") and re.search(shard.error, q["error"]), q["error"]
        assert 0 <= q["rows_decoded"] <= len(shard.rows) and q["rows_declared"] == shard.rows_declared
    assert normalize["docs_quarantined"] is None  # JSONL shards do not declare their rows
    assert normalize["docs_quarantined_decoded"] == sum(q["rows_decoded"] for q in ledger.values())
    markers = glob.glob(f"{glob.escape(normalize['output'])}/_quarantine/part-*.json")
    assert sorted(json.load(open(m))["shard"] for m in markers) == sorted(ledger)
    assert all({"rows_decoded", "rows_declared"} <= set(json.load(open(m))) for m in markers)

    kept, removed = tags_by_outcome(normalize)
    want = {r.tag: r.outcome for s in readable for r in s.rows}
    got = {**{t: KEPT for t in kept}, **{t: row[S.DROP_REASON] for t, row in removed.items()}}
    assert got == want  # every row of every readable shard, each with the generator's outcome
    assert not {r.tag for s in expected_quarantined.values() for r in s.rows} & set(
        got
    )  # nothing of a quarantined shard
    for tag, row in removed.items():
        shard, expected = by_tag[tag]
        assert row[S.DROP_DETAIL].startswith(f"{shard.path} {shard.unit} {expected.position}: "), row[S.DROP_DETAIL]
    for tag, row in kept.items():
        check_kept_row(row, by_tag[tag][1], by_tag[tag][0])
    outcomes = Counter(want.values())
    assert normalize["docs_in"] == len(want) == sum(len(s.rows) for s in readable)
    assert normalize["docs_kept"] == outcomes[KEPT]
    assert normalize["docs_dropped"] == {r: n for r, n in outcomes.items() if r != KEPT}

    # --- filter, then dedup: each stage's input is exactly the previous stage's kept rows
    previous_kept = kept
    figures = {"normalize": (normalize["docs_in"], normalize["docs_kept"], sum(normalize["docs_dropped"].values()))}
    for stage in (filt, dedup):
        inputs = {}
        for uri in sorted(
            glob.glob(f"{glob.escape(normalize['output'] if stage is filt else filt['output'])}/part-*.parquet")
        ):
            inputs[uri] = pq.read_table(uri).to_pylist()
        assert {tag_of(r) for rows in inputs.values() for r in rows} == set(previous_kept)
        kept, removed = tags_by_outcome(stage)
        assert set(kept) | set(removed) == set(previous_kept) and not set(kept) & set(removed)
        assert stage["docs_in"] == len(previous_kept) == stage["docs_kept"] + sum(stage["docs_dropped"].values())
        assert (
            stage["docs_kept"] == len(kept)
            and Counter(r[S.DROP_REASON] for r in removed.values()) == stage["docs_dropped"]
        )
        assert stage["quarantined"] == [] and stage["docs_quarantined"] == 0
        if stage is filt:  # the generator's low-quality rows, and only those
            assert set(removed) == {r.tag for r in corpus.rows if r.dropped_by == "filter"}
        check_drop_details_point_at_rows(stage, removed, inputs)
        figures[stage["name"]] = (stage["docs_in"], stage["docs_kept"], len(removed))
        previous_kept = kept

    # Exact copies from two shards (same source, no ids) reached dedup as two documents: one kept.
    for group in corpus.copy_groups:
        survivors = [t for t in group if t in kept]
        assert len(survivors) == 1 and kept[survivors[0]]["dup_count"] == len(group)
        for tag in group:
            if tag != survivors[0]:
                assert dedup_row(tag, dedup)["duplicate_of"] == kept[survivors[0]][S.ID]

    # --- the ledger over the whole run, against the generator's row counts
    rows_in_quarantined = sum(len(s.rows) for s in expected_quarantined.values())
    dropped = sum(n for _, _, n in figures.values())
    assert len(corpus.rows) == len(kept) + dropped + rows_in_quarantined
    print(
        f"\nbad-input suite: {len(corpus.kinds)} kinds, {len(corpus.shards)} shards, "
        f"{len(corpus.rows)} rows generated; "
        f"quarantined: {len(expected_quarantined)} shards holding {rows_in_quarantined} rows "
        f"({normalize['docs_quarantined_decoded']} decoded before the error); "
        + "; ".join(f"{name}: {i} in = {k} kept + {d} dropped" for name, (i, k, d) in figures.items())
        + f"; final {len(kept)} kept"
    )


def dedup_row(tag: str, stage: dict) -> dict:
    _, removed_files = stage_files(stage)
    return next(r for r in read_rows(removed_files) if tag_of(r) == tag)
