"""The distributed dedup steps as plain functions (no Ray): edge ownership, columns read,
partition count, verification threshold."""

from __future__ import annotations

import glob
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mixforge.dedup import pipeline as dd
from mixforge.dedup.config import DedupConfig, MinHashConfig
from tests.helpers import prose


def _near(text: str, positions: list[int], tag: str) -> str:
    words = text.split(" ")
    for p in positions:
        words[p] = f"{tag}{p}"
    return " ".join(words)


def _shards(tmp_path, extra: dict | None = None) -> tuple[list[str], dict[str, str]]:
    """Three contract shards; near-duplicates across shards. Returns URIs and the expected
    duplicate_of of every removed id (keep rule: smallest id)."""
    a, d = prose(1, 30), prose(2, 30)
    rows = [
        [("a", a), ("u1", prose(3, 30)), ("d", d)],
        [("a2", _near(a, [10, 60, 110], "x")), ("d2", _near(d, [5, 50], "y")), ("u2", prose(4, 30))],
        [("a3", _near(a, [20, 160, 210], "z")), ("u3", prose(5, 30)), ("d3", d)],
    ]
    uris = []
    for i, shard in enumerate(rows):
        n = len(shard)
        cols = {"id": [r[0] for r in shard], "text": [r[1] for r in shard], "source": ["t"] * n,
                "url": pa.nulls(n, pa.string()), "meta": pa.nulls(n, pa.string())}
        cols.update({k: v[i] for k, v in (extra or {}).items()})
        path = tmp_path / "in" / f"part-{i:05d}.parquet"
        path.parent.mkdir(exist_ok=True)
        pq.write_table(pa.table(cols), path)
        uris.append(str(path))
    return uris, {"a2": "a", "a3": "a", "d2": "d", "d3": "d"}


def _run_steps(tmp_path, name: str, uris: list[str], cfg: DedupConfig) -> dd.DedupLayout:
    layout = dd.DedupLayout(str(tmp_path / name))
    shards = list(range(len(uris)))
    for s, uri in enumerate(uris):
        dd.sign_shard(s, uri, layout, cfg, batch_rows=2)
    for p in range(cfg.partitions):
        dd.partition_edges(p, shards, layout)
    for s in shards:
        dd.verify_shard_edges(s, cfg.partitions, layout, cfg.minhash)
    dd.cluster(shards, cfg.partitions, layout, cfg)
    return layout


def _removed(layout: dd.DedupLayout, uris: list[str]) -> dict[str, str]:
    out = {}
    for s, uri in enumerate(uris):
        ids = pq.read_table(uri, columns=["id"]).column("id").to_pylist()
        t = pq.read_table(layout.assignment(s)).to_pylist()
        out.update({ids[r["row"]]: r["duplicate_of"] for r in t if not r["is_kept"]})
    return out


def test_edges_are_written_by_owner_shard_and_verify_reads_only_its_own(tmp_path):
    uris, expected = _shards(tmp_path)
    cfg = DedupConfig(partitions=4)
    layout = _run_steps(tmp_path, "run", uris, cfg)
    assert _removed(layout, uris) == expected
    files = 0
    for p in range(cfg.partitions):
        for s in range(len(uris)):
            t = pq.read_table(layout.edges(p, s))
            files += 1
            owner = dd.edge_owner(t.column("src").to_numpy(), t.column("dst").to_numpy())
            assert (owner == s).all(), (p, s)
    assert files == cfg.partitions * len(uris)
    # Shard 1's verify task needs only shard 1's edge files: the others gone, it still verifies.
    before = pq.read_table(layout.verified(1))
    for path in glob.glob(str(tmp_path / "run" / "_work" / "edges" / "p-*" / "s-*.parquet")):
        if not path.endswith("s-00001.parquet"):
            os.remove(path)
    os.remove(layout.verified(1))
    os.remove(layout.verified_done(1))
    stats = dd.verify_shard_edges(1, cfg.partitions, layout, cfg.minhash)
    assert pq.read_table(layout.verified(1)).equals(before) and stats["verified"] + stats["exact"] == before.num_rows
    # Resumed: the marker answers, nothing is recomputed.
    assert dd.verify_shard_edges(1, cfg.partitions, layout, cfg.minhash)["skipped"] is True


@pytest.mark.parametrize("partitions", [1, 7])
def test_same_result_whatever_the_partition_count(tmp_path, partitions):
    uris, expected = _shards(tmp_path)
    ref = _run_steps(tmp_path, "ref", uris, DedupConfig(partitions=3))
    other = _run_steps(tmp_path, f"p{partitions}", uris, DedupConfig(partitions=partitions))
    for s in range(len(uris)):
        assert pq.read_table(ref.assignment(s)).equals(pq.read_table(other.assignment(s)))
    assert _removed(other, uris) == expected


def test_signing_reads_only_id_text_and_the_keep_column(tmp_path):
    uris, _ = _shards(tmp_path, extra={"quality": [[0.1, 0.2, 0.3]] * 3, "blob": [[b"x" * 10] * 3] * 3})
    assert dd._sign_columns(uris[0], DedupConfig(), None) == ["id", "text"]
    assert dd._sign_columns(uris[0], DedupConfig(partitions=1, keep={"rule": "longest"}), None) == ["id", "text"]
    highest = DedupConfig(partitions=2, keep={"rule": "highest", "column": "quality"})
    assert dd._sign_columns(uris[0], highest, None) == ["id", "text", "quality"]
    layout = _run_steps(tmp_path, "q", uris, highest)
    values = pq.read_table(layout.nodes(0)).column("value").to_pylist()
    assert values == [0.1, 0.2, 0.3]
    with pytest.raises(KeyError, match="'missing'.*does not have"):
        dd._sign_columns(uris[0], DedupConfig(keep={"rule": "earliest", "column": "missing"}), None)


def test_partitions_grow_with_the_input_unless_set(tmp_path):
    assert dd.auto_partitions(0) == dd.MIN_PARTITIONS == 16
    assert dd.auto_partitions(40 * dd.PARTITION_INPUT_BYTES) == 40
    assert dd.auto_partitions(40 * dd.PARTITION_INPUT_BYTES + 1) == 41
    assert dd.auto_partitions(1 << 50) == dd.MAX_AUTO_PARTITIONS
    uris, _ = _shards(tmp_path)
    assert dd.resolve_partitions(DedupConfig(), uris).partitions == 16  # tiny input
    assert dd.resolve_partitions(DedupConfig(partitions=5), uris).partitions == 5  # explicit wins
    index = dd.IndexLayout(str(tmp_path / "index"))
    assert dd.resolve_partitions(DedupConfig(), uris, index).partitions == 16  # no index yet: auto
    dd.check_index(index, DedupConfig(partitions=7))
    assert dd.resolve_partitions(DedupConfig(), uris, index).partitions == 7  # the index's setting wins over auto
    with pytest.raises(ValueError, match="other settings"):
        dd.check_index(index, dd.resolve_partitions(DedupConfig(partitions=5), uris, index))
    with pytest.raises(ValueError, match="resolved partitions"):
        dd.check_index(index, DedupConfig())


def test_verification_allows_for_the_estimate_noise():
    cfg = MinHashConfig()
    se = (0.8 * 0.2 / 112) ** 0.5
    assert cfg.verify_threshold == pytest.approx(0.8 - 2.5 * se)
    assert MinHashConfig(verify_margin=0).verify_threshold == 0.8
    assert MinHashConfig(threshold=1.0).verify_threshold == 1.0  # identical signatures only: no noise to allow for
    assert MinHashConfig(bands=32, rows=16).verify_threshold > cfg.verify_threshold  # more permutations, less noise
    # The margin is a verification setting: an index built under one margin serves another.
    assert dd.settings_fingerprint(DedupConfig(partitions=4)) == dd.settings_fingerprint(
        DedupConfig(partitions=4, minhash={"verify_margin": 0.0, "threshold": 0.9}))
    # A pair whose estimate is 0.75 (84 of 112 entries equal) passes by default, not at margin 0.
    a = np.arange(112, dtype=np.uint64)
    b = a.copy()
    b[:28] += 1000
    est = float(dd.estimated_jaccard(a, b)[0])
    assert est == 0.75 and est >= cfg.verify_threshold and est < MinHashConfig(verify_margin=0).verify_threshold


@pytest.mark.parametrize("flag", [0, 1 << 63])  # run keys, and index keys (top bit set: unsigned statistics)
def test_partner_signatures_are_read_by_row_group(tmp_path, flag):
    keys = np.uint64(flag) | np.arange(5000, dtype=np.uint64) * np.uint64(3)
    sigs = np.stack([keys, keys + np.uint64(1)], axis=1)
    table = pa.table({"doc": keys, "sig": pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), len(keys), [None, pa.py_buffer(sigs.tobytes())])})
    uri = str(tmp_path / "sig.parquet")
    dd._write_table(uri, table, None, dd.SIGNATURE_ROW_GROUP)
    meta = pq.ParquetFile(uri).metadata
    assert meta.num_row_groups == 5
    wanted = np.sort(keys[[3000, 3001, 4999]])
    assert dd._row_groups_holding(meta, wanted) == [2, 4]
    assert dd._row_groups_holding(meta, np.zeros(0, np.uint64)) == []
    got_keys, got_sigs = dd._signature_rows(uri, wanted, None)
    assert got_keys.tolist() == wanted.tolist() and (got_sigs[:, 1] == wanted + np.uint64(1)).all()
