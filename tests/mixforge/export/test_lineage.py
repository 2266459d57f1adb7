"""Lineage: mixture rows name their pool shard, row and copy (mixforge.mixture/3), and `mixforge lineage`
maps a token offset of an export part, or a training step, back to the documents behind it."""

from __future__ import annotations

import collections

import numpy as np
import pyarrow.parquet as pq
import pytest

from mixforge import schema as S
from mixforge.mixtures import build as B
from mixforge.mixtures.versions import MANIFEST_FORMAT, read_manifest
from tests.mixforge.mixtures.test_mixtures import make_spec, write_pool

REHYDRATE = [
    {
        "name": "books",
        "where": {"source": "books"},
        "weight": 0.5,
        "sampling": {"method": "rehydrate", "repeats": [{"min_dup": 1, "times": 1}, {"min_dup": 2, "times": 3}]},
        "max_epochs": 3,
    },
    {"name": "rest", "where": {}, "weight": 0.5},
]


@pytest.fixture(scope="module")
def mixture(tmp_path_factory) -> tuple[str, dict]:
    """A small mixture whose books are repeated (copies 0..2): (store, manifest)."""
    root = tmp_path_factory.mktemp("lineage")
    pool = write_pool(str(root), shards=3, per_shard=120)
    spec = make_spec(pool, str(root / "store"), budget_tokens=12_000, groups=REHYDRATE)
    summary = B.build_mixture(spec)
    return str(root / "store"), read_manifest(str(root / "store"), "test-mix", summary["version"])


def test_mixture_rows_carry_their_pool_shard_row_and_copy(mixture):
    _, manifest = mixture
    assert manifest["format"] == MANIFEST_FORMAT == "mixforge.mixture/3"
    pools = [pq.read_table(s["uri"]) for s in manifest["pool"]["shards"]]
    copies = collections.defaultdict(list)
    for f in manifest["files"]:
        table = pq.read_table(f["uri"])
        assert table.column_names[-3:] == [S.POOL_SHARD, S.POOL_ROW, S.POOL_COPY]
        assert [table.schema.field(c).type for c in table.column_names[-3:]] == ["int32", "int64", "int32"]
        for row in table.select([S.ID, S.TEXT, S.POOL_SHARD, S.POOL_ROW, S.POOL_COPY]).to_pylist():
            source = pools[row[S.POOL_SHARD]].slice(row[S.POOL_ROW], 1).to_pylist()[0]
            assert (source[S.ID], source[S.TEXT]) == (row[S.ID], row[S.TEXT])
            copies[(f["phase"], row[S.ID])].append(row[S.POOL_COPY])
    # each document's copies in a phase are numbered 0..k-1, and some are repeated
    assert all(sorted(c) == list(range(len(c))) for c in copies.values())
    assert max(len(c) for c in copies.values()) == 3
    assert len({len(c) for c in copies.values()}) > 1 and np.mean([len(c) for c in copies.values()]) > 1
