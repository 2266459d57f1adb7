"""The dedup composite in this process (`SerialExecutor`): the library DAG itself, step by step
(edge ownership, columns read, partition count, verification threshold), boilerplate and the index."""

from __future__ import annotations

import glob
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mixforge.config import CurateConfig
from mixforge.dedup import keys, steps
from mixforge.dedup.composite import plan_dedup, run_dedup
from mixforge.dedup.config import DedupConfig, MinHashConfig
from mixforge.dedup.index import check_index, settings_fingerprint
from mixforge.dedup.layouts import (
    EDGE_SCHEMA,
    SIGNATURE_ROW_GROUP,
    DedupLayout,
    IndexLayout,
    Sources,
    write_signatures,
    write_table,
)
from mixforge.dedup.minhash import estimated_jaccard
from mixforge.dedup.partitions import (
    MAX_AUTO_PARTITIONS,
    MIN_PARTITIONS,
    PARTITION_INPUT_BYTES,
    auto_partitions,
    resolve_partitions,
)
from mixforge.dedup.run import DedupRun
from mixforge.executor import SerialExecutor, StepFailed
from mixforge.runs import StageLayout
from tests.helpers import prose


def _near(text: str, positions: list[int], tag: str) -> str:
    words = text.split(" ")
    for p in positions:
        words[p] = f"{tag}{p}"
    return " ".join(words)


def _write(path, rows: list[tuple[str, str]], extra: dict | None = None) -> str:
    n = len(rows)
    cols = {
        "id": [r[0] for r in rows],
        "text": [r[1] for r in rows],
        "source": ["t"] * n,
        "url": pa.nulls(n, pa.string()),
        "meta": pa.nulls(n, pa.string()),
        **(extra or {}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(cols), path)
    return str(path)


def _shards(tmp_path, extra: dict | None = None) -> tuple[list[str], dict[str, str]]:
    """Three contract shards; near-duplicates across shards. Returns URIs and the expected
    duplicate_of of every removed id (keep rule: smallest id)."""
    a, d = prose(1, 30), prose(2, 30)
    rows = [
        [("a", a), ("u1", prose(3, 30)), ("d", d)],
        [("a2", _near(a, [10, 60, 110], "x")), ("d2", _near(d, [5, 50], "y")), ("u2", prose(4, 30))],
        [("a3", _near(a, [20, 160, 210], "z")), ("u3", prose(5, 30)), ("d3", d)],
    ]
    uris = [
        _write(tmp_path / "in" / f"part-{i:05d}.parquet", shard, {k: v[i] for k, v in (extra or {}).items()})
        for i, shard in enumerate(rows)
    ]
    return uris, {"a2": "a", "a3": "a", "d2": "d", "d3": "d"}


def _run_dedup(tmp_path, name: str, uris: list[str], cfg: DedupConfig) -> tuple[dict, DedupRun]:
    """The library's dedup DAG in this process (batches of 2 rows); its summary and the run it planned
    (its work files kept: the tests read them)."""
    inputs = list(enumerate(uris))
    layout = StageLayout(str(tmp_path / name))
    config = CurateConfig(stages=["dedup"], dedup=cfg, read={"batch_rows": 2})
    summary = run_dedup(layout, name, inputs, config, SerialExecutor(), keep_work=True)
    return summary, plan_dedup(layout.dir, inputs, cfg, batch_rows=2)


def _removed(run: DedupRun, uris: list[str]) -> dict[str, str]:
    out = {}
    for s, uri in enumerate(uris):
        ids = pq.read_table(uri, columns=["id"]).column("id").to_pylist()
        t = pq.read_table(run.work.assignment(s)).to_pylist()
        out.update({ids[r["row"]]: r["duplicate_of"] for r in t if not r["is_kept"]})
    return out


def _outputs(stage_dir: str) -> tuple[pa.Table, pa.Table]:
    """The stage's kept and `_removed` rows (every part file, in shard order)."""
    kept = pa.concat_tables([pq.read_table(p) for p in sorted(glob.glob(f"{stage_dir}/part-*.parquet"))])
    removed = [pq.read_table(p) for p in sorted(glob.glob(f"{stage_dir}/_removed/*.parquet"))]
    return kept, pa.concat_tables(removed) if removed else pa.table({"id": pa.array([], pa.string())})


def test_edges_are_written_by_owner_shard_and_verify_reads_only_its_own(tmp_path):
    uris, expected = _shards(tmp_path)
    cfg = DedupConfig(partitions=4)
    summary, run = _run_dedup(tmp_path, "run", uris, cfg)
    layout = run.work
    assert _removed(run, uris) == expected
    kept, removed = _outputs(str(tmp_path / "run"))
    assert sorted(kept.column("id").to_pylist()) == ["a", "d", "u1", "u2", "u3"]
    assert dict(zip(removed.column("id").to_pylist(), removed.column("duplicate_of").to_pylist())) == expected
    assert summary["docs_in"] == 9 and summary["docs_kept"] == 5 and summary["dedup"]["partitions"] == 4
    files = 0
    for p in range(cfg.partitions):
        for s in range(len(uris)):
            t = pq.read_table(layout.edges(p, s))
            files += 1
            owner = steps.edge_owner(t.column("src").to_numpy(), t.column("dst").to_numpy())
            assert (owner == s).all(), (p, s)
    assert files == cfg.partitions * len(uris)
    # Shard 1's verify task needs only shard 1's edge files: the others gone, it still verifies.
    before = pq.read_table(layout.verified(1))
    for path in glob.glob(str(tmp_path / "run" / "_work" / "edges" / "p-*" / "s-*.parquet")):
        if not path.endswith("s-00001.parquet"):
            os.remove(path)
    os.remove(layout.verified(1))
    os.remove(layout.verified_done(1))
    stats = steps.verify_shard_edges(run, 1)
    assert pq.read_table(layout.verified(1)).equals(before) and stats["verified"] + stats["exact"] == before.num_rows
    # Resumed: the marker answers, nothing is recomputed.
    assert steps.verify_shard_edges(run, 1)["skipped"] is True


@pytest.mark.parametrize("partitions", [1, 7])
def test_same_result_whatever_the_partition_count(tmp_path, partitions):
    uris, expected = _shards(tmp_path)
    _, ref = _run_dedup(tmp_path, "ref", uris, DedupConfig(partitions=3))
    _, other = _run_dedup(tmp_path, f"p{partitions}", uris, DedupConfig(partitions=partitions))
    for s in range(len(uris)):
        assert pq.read_table(ref.work.assignment(s)).equals(pq.read_table(other.work.assignment(s)))
    assert _removed(other, uris) == expected
    for a, b in zip(_outputs(str(tmp_path / "ref")), _outputs(str(tmp_path / f"p{partitions}"))):
        assert a.equals(b)


def test_signing_reads_only_id_text_and_the_keep_column(tmp_path):
    uris, _ = _shards(tmp_path, extra={"quality": [[0.1, 0.2, 0.3]] * 3, "blob": [[b"x" * 10] * 3] * 3})
    assert steps._sign_columns(uris[0], DedupConfig(), None) == ["id", "text"]
    assert steps._sign_columns(uris[0], DedupConfig(partitions=1, keep={"rule": "longest"}), None) == ["id", "text"]
    highest = DedupConfig(partitions=2, keep={"rule": "highest", "column": "quality"})
    assert steps._sign_columns(uris[0], highest, None) == ["id", "text", "quality"]
    _, run = _run_dedup(tmp_path, "q", uris, highest)
    values = pq.read_table(run.work.nodes(0)).column("value").to_pylist()
    assert values == [0.1, 0.2, 0.3]
    with pytest.raises(KeyError, match="'missing'.*does not have"):
        steps._sign_columns(uris[0], DedupConfig(keep={"rule": "earliest", "column": "missing"}), None)


def test_partitions_grow_with_the_input_unless_set(tmp_path):
    assert auto_partitions(0) == MIN_PARTITIONS == 16
    assert auto_partitions(0, minimum=1) == 1 and auto_partitions(3 * PARTITION_INPUT_BYTES, minimum=1) == 3
    assert auto_partitions(40 * PARTITION_INPUT_BYTES) == 40
    assert auto_partitions(40 * PARTITION_INPUT_BYTES + 1) == 41
    assert auto_partitions(1 << 50) == MAX_AUTO_PARTITIONS
    uris, _ = _shards(tmp_path)
    # tiny input without an index: one partition (each (partition, shard) pair costs files; nothing grows later)
    assert resolve_partitions(DedupConfig(), uris).partitions == 1
    assert resolve_partitions(DedupConfig(partitions=5), uris).partitions == 5  # explicit wins
    index = IndexLayout(str(tmp_path / "index"))
    assert resolve_partitions(DedupConfig(), uris, index).partitions == 16  # no index yet: auto
    check_index(index, DedupConfig(partitions=7))
    assert resolve_partitions(DedupConfig(), uris, index).partitions == 7  # the index's setting wins over auto
    with pytest.raises(ValueError, match="other settings"):
        check_index(index, resolve_partitions(DedupConfig(partitions=5), uris, index))
    with pytest.raises(ValueError, match="resolved partitions"):
        check_index(index, DedupConfig())


def test_verification_allows_for_the_estimate_noise():
    cfg = MinHashConfig()
    se = (0.8 * 0.2 / 112) ** 0.5
    assert cfg.verify_threshold == pytest.approx(0.8 - 2.5 * se)
    assert MinHashConfig(verify_margin=0).verify_threshold == 0.8
    assert MinHashConfig(threshold=1.0).verify_threshold == 1.0  # identical signatures only: no noise to allow for
    assert MinHashConfig(bands=32, rows=16).verify_threshold > cfg.verify_threshold  # more permutations, less noise
    # The margin is a verification setting: an index built under one margin serves another.
    assert settings_fingerprint(DedupConfig(partitions=4)) == settings_fingerprint(
        DedupConfig(partitions=4, minhash={"verify_margin": 0.0, "threshold": 0.9})
    )
    # A pair whose estimate is 0.75 (84 of 112 entries equal) passes by default, not at margin 0.
    a = np.arange(112, dtype=np.uint64)
    b = a.copy()
    b[:28] += 1000
    est = float(estimated_jaccard(a, b)[0])
    assert est == 0.75 and est >= cfg.verify_threshold and est < MinHashConfig(verify_margin=0).verify_threshold


@pytest.mark.parametrize("flag", [0, 1 << 63])  # run keys, and index keys (top bit set: unsigned statistics)
def test_partner_signatures_are_read_by_row_group(tmp_path, flag):
    keys = np.uint64(flag) | np.arange(5000, dtype=np.uint64) * np.uint64(3)
    sigs = np.stack([keys, keys + np.uint64(1)], axis=1)
    sig = pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), len(keys), [None, pa.py_buffer(sigs.tobytes())])
    table = pa.table({"doc": keys, "sig": sig})
    uri = str(tmp_path / "sig.parquet")
    write_signatures(uri, table, None)
    meta = pq.ParquetFile(uri).metadata
    assert meta.num_row_groups == -(-5000 // SIGNATURE_ROW_GROUP) > 5
    assert meta.row_group(0).column(1).compression == "UNCOMPRESSED"  # random bits: not worth zstd's time
    wanted = np.sort(keys[[3000, 3001, 4999]])
    assert steps._row_groups_holding(meta, wanted) == [3000 // SIGNATURE_ROW_GROUP, 4999 // SIGNATURE_ROW_GROUP]
    assert steps._row_groups_holding(meta, np.zeros(0, np.uint64)) == []
    got_keys, got_sigs = steps._signature_rows(uri, wanted, None)
    assert got_keys.tolist() == wanted.tolist() and (got_sigs[:, 1] == wanted + np.uint64(1)).all()


def test_boilerplate_and_a_persistent_index_in_process(tmp_path):
    """Night 1 builds the index; night 2 (boilerplate removal on) is deduplicated against it, and resumes."""
    footer = "Copyright 2026 Example Media Group. All rights reserved. Terms of use apply."
    old = prose(21, 30)
    night1 = [[("n1-a", old), ("n1-b", prose(22, 30))], [("n1-c", prose(23, 30)), ("n1-a-copy", old)]]
    night2 = [
        [("n2-x", _near(old, [5, 50, 95], "z") + "\n" + footer), ("n2-y", prose(24, 30) + "\n" + footer)],
        [("n2-y-copy", prose(24, 30) + "\n" + footer), ("n2-z", prose(25, 30) + "\n" + footer)],
    ]
    index = str(tmp_path / "index")
    cfg = DedupConfig(index=index, boilerplate={"enabled": True, "min_docs": 3})
    summaries = []
    for night, rows in (("night1", night1), ("night2", night2)):
        uris = [_write(tmp_path / night / f"s{i}.parquet", shard) for i, shard in enumerate(rows)]
        summaries.append(_run_dedup(tmp_path, f"{night}-dedup", uris, cfg)[0])
    first, second = summaries
    assert (first["docs_in"], first["docs_kept"]) == (4, 3) and first["dedup"]["boilerplate_lines"] == 0
    assert first["index"] == {"uri": index, "segment": 1, "docs_added": 3}
    assert (second["docs_in"], second["docs_kept"]) == (4, 2)
    assert second["dedup"]["index_segments_used"] == 1 and second["dedup"]["duplicates_of_indexed"] == 1
    assert second["dedup"]["boilerplate_lines"] == 1 and second["counters"]["boilerplate.lines_removed"] == 4
    assert second["index"] == {"uri": index, "segment": 2, "docs_added": 2}
    assert IndexLayout(index).committed_runs() == {"night1-dedup", "night2-dedup"}
    stage_dir = str(tmp_path / "night2-dedup")
    kept, removed = _outputs(stage_dir)
    assert sorted(kept.column("id").to_pylist()) == ["n2-y", "n2-z"]
    assert all(footer not in t for t in kept.column("text").to_pylist())
    # the pool's document wins over a new one; the boilerplate line did not hide the exact copy
    assert dict(zip(removed.column("id").to_pylist(), removed.column("duplicate_of").to_pylist())) == {
        "n2-x": "n1-a",
        "n2-y-copy": "n2-y",
    }
    # _stats.json is the composite's summary (dedup figures, index), written once
    stats = json.loads(open(os.path.join(stage_dir, "_stats.json")).read())
    assert stats["dedup"] == second["dedup"] and stats["index"] == second["index"]
    # Resumed: every step answers from its markers, the index gets no second segment.
    uris = [os.path.join(tmp_path, "night2", f"s{i}.parquet") for i in range(2)]
    again, _ = _run_dedup(tmp_path, "night2-dedup", uris, cfg)
    assert again["index"] == second["index"] and IndexLayout(index).segments() == [1, 2]
    # (index_segments_used: the segments committed when the run is planned, its own included on a resume)
    same = [k for k in second["dedup"] if k not in ("seconds_total", "index_segments_used")]
    assert {k: again["dedup"][k] for k in same} == {k: second["dedup"][k] for k in same}
    for a, b in zip(_outputs(stage_dir), (kept, removed)):
        assert a.equals(b)


def test_a_failing_step_names_its_shard(tmp_path):
    uris, _ = _shards(tmp_path)
    inputs = [(5, uris[0]), (9, str(tmp_path / "in" / "missing.parquet"))]
    with pytest.raises(StepFailed, match=r"(?s)step 'dedup:signatures': 1 of 2 unit\(s\).*dedup:signatures 9: "):
        config = CurateConfig(stages=["dedup"], dedup={"partitions": 2})
        run_dedup(StageLayout(str(tmp_path / "out")), "r", inputs, config, SerialExecutor())


def test_key_layout_is_derived_from_its_bit_widths(tmp_path):
    # the numbers the layout was written with, before they were derived
    assert (keys.INDEX_GROUP_FLAG, keys.MAX_SEGMENTS, keys.MAX_INDEX_SHARDS, keys.MAX_INDEX_ROWS) == (
        1 << 39,
        1 << 23,
        1 << 16,
        1 << 24,
    )
    assert int(keys.INDEX_FLAG) == 1 << 63 and keys.INDEX_SEGMENT_SHIFT == 40
    run_keys = np.concatenate([keys.doc_keys(0, 0, 2), keys.doc_keys(7, 5, 2), keys.doc_keys(65535, 16777214, 2)])
    assert keys.key_shard(run_keys).tolist() == [0, 0, 7, 7, 65535, 65535]
    assert keys.key_row(run_keys).tolist() == [0, 1, 5, 6, 16777214, 16777215]
    layout, index = DedupLayout(str(tmp_path / "run")), IndexLayout(str(tmp_path / "index"))
    sources = Sources(layout, index)
    for segment in (1, keys.MAX_SEGMENTS - 1):
        indexed = keys.index_keys(segment, run_keys)
        assert keys.is_index_key(indexed).all() and not keys.is_index_key(run_keys).any()
        assert (indexed > run_keys.max()).all()  # index keys sort after every run key
        groups = keys.key_group(indexed)
        assert [keys.index_group(int(g)) for g in groups] == [(segment, s) for s in keys.key_shard(run_keys).tolist()]
        assert sources.nodes(int(groups[2])) == index.nodes(segment, 7)
        assert sources.signatures(int(groups[4])) == index.signatures(segment, 65535)
    # run groups are their shard, up to the largest a run key holds (the top bit is the index flag)
    assert keys.index_group(int(keys.key_group(keys.doc_keys(2**31 - 1, 0, 1))[0])) is None
    assert sources.nodes(int(keys.key_group(run_keys)[2])) == layout.nodes(7)
    with pytest.raises(ValueError, match="at most 65536 shards"):
        keys.index_keys(1, keys.doc_keys(65536, 0, 1))


def test_verify_keeps_exact_edges_and_fuzzy_ones_whose_estimate_passes(tmp_path):
    """The production verify step over hand-written edges and signatures (4-wide, threshold 0.75)."""
    cfg = DedupConfig(partitions=1, minhash={"threshold": 0.75, "verify_margin": 0})
    run = DedupRun(DedupLayout(str(tmp_path / "run")), cfg, (0, 1))
    k = {name: int(key) for name, key in zip("abcd", keys.doc_keys(0, 0, 4))} | {"e": int(keys.doc_keys(1, 0, 1)[0])}
    sigs = {"a": [1, 2, 3, 4], "b": [1, 2, 3, 5], "c": [9, 9, 9, 9], "d": [1, 9, 9, 9], "e": [1, 2, 9, 9]}

    def write_signatures(shard: int, names: str) -> None:
        doc = np.array([k[n] for n in names], np.uint64)
        raw = np.array([sigs[n] for n in names], np.uint64)
        column = pa.FixedSizeBinaryArray.from_buffers(pa.binary(32), len(doc), [None, pa.py_buffer(raw.tobytes())])
        write_table(run.work.signatures(shard), pa.table({"doc": doc, "sig": column}), None)

    write_signatures(0, "abcd")
    write_signatures(1, "e")
    # edges owned by shard 0 (src is its document): b~a 0.75, c~a 0, d~c exact (estimate 0.75 anyway), e~a 0.5;
    # the same pair from two partitions (here: twice) counts once
    src = [k["b"], k["c"], k["d"], k["a"], k["b"]]
    dst = [k["a"], k["a"], k["c"], k["e"], k["a"]]
    exact = [False, False, True, False, False]
    write_table(run.work.edges(0, 0), pa.table({"src": src, "dst": dst, "exact": exact}, schema=EDGE_SCHEMA), None)
    write_table(run.work.edges(0, 1), EDGE_SCHEMA.empty_table(), None)
    stats = steps.verify_shard_edges(run, 0)
    kept = pq.read_table(run.work.verified(0))
    assert sorted(zip(kept.column("src").to_pylist(), kept.column("dst").to_pylist())) == sorted(
        [(k["b"], k["a"]), (k["d"], k["c"])]
    )
    assert stats == {"shard": 0, "candidates": 3, "verified": 1, "exact": 1}
    # an endpoint without a signature is an error, never a silent "not a duplicate"
    write_signatures(1, "")
    os.remove(run.work.verified_done(0))
    with pytest.raises(KeyError, match="no signature"):
        steps.verify_shard_edges(run, 0)
