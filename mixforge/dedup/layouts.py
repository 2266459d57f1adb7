"""Where a dedup run's files live: its work files (`DedupLayout`), the pool's persistent index
(`IndexLayout`), and for any document key, which of the two holds its rows (`Sources`); the work
files' schemas, and how they are written and read (whole Parquet files, each written atomically).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from mixforge import storage
from mixforge.dedup.keys import index_group
from mixforge.shards import write_parquet

BUCKET_SCHEMA = pa.schema([("band", pa.uint16()), ("band_hash", pa.uint64()), ("doc", pa.uint64())])
EDGE_SCHEMA = pa.schema([("src", pa.uint64()), ("dst", pa.uint64()), ("exact", pa.bool_())])
ASSIGN_SCHEMA = pa.schema(
    [
        ("row", pa.uint32()),
        ("dup_cluster", pa.string()),
        ("dup_count", pa.int64()),
        ("is_kept", pa.bool_()),
        ("duplicate_of", pa.string()),
        ("reason", pa.string()),
    ]
)
# Rows per row group of signature files (230 KB): verify reads only the groups holding the partners it needs,
# usually a few rows of each other shard, so a smaller group decodes less for each.
SIGNATURE_ROW_GROUP = 256


@dataclass(frozen=True)
class DedupLayout:
    """Working files of one dedup run, under `<stage dir>/_work/`."""

    stage_dir: str

    def _p(self, *parts: str) -> str:
        return storage.join(self.stage_dir, "_work", *parts)

    def buckets(self, partition: int, shard: int) -> str:
        return self._p("buckets", f"p-{partition:04d}", f"s-{shard:05d}.parquet")

    def nodes(self, shard: int) -> str:
        return self._p("nodes", f"s-{shard:05d}.parquet")

    def signatures(self, shard: int) -> str:
        return self._p("signatures", f"s-{shard:05d}.parquet")

    def signed(self, shard: int) -> str:
        return self._p("signed", f"s-{shard:05d}.json")

    def edges(self, partition: int, shard: int) -> str:
        """Candidate edges of one partition owned by one shard (`edge_owner`)."""
        return self._p("edges", f"p-{partition:04d}", f"s-{shard:05d}.parquet")

    def edges_done(self, partition: int) -> str:
        return self._p("edges", f"p-{partition:04d}", "_done.json")

    def verified(self, shard: int) -> str:
        return self._p("verified", f"s-{shard:05d}.parquet")

    def verified_done(self, shard: int) -> str:
        return self._p("verified", f"s-{shard:05d}.json")

    def assignment(self, shard: int) -> str:
        return self._p("assign", f"s-{shard:05d}.parquet")

    @property
    def clustered(self) -> str:
        return self._p("assign", "_clusters.json")

    def line_counts(self, partition: int, shard: int) -> str:
        return self._p("lines", f"p-{partition:04d}", f"s-{shard:05d}.parquet")

    def boilerplate(self, partition: int) -> str:
        return self._p("boilerplate", f"p-{partition:04d}.parquet")

    @property
    def index_segment(self) -> str:
        """The index segment this run claimed (`index.claim_segment`): the same one on resume."""
        return self._p("index_segment.json")

    @property
    def indexed(self) -> str:
        """Written once this run's segment is committed to the index."""
        return self._p("indexed.json")


@dataclass(frozen=True)
class IndexLayout:
    """A pool's persistent dedup index: one segment per run that added documents.

    <index>/_index.json                       settings every segment was built with
    <index>/segments/s-000001.json            commit marker of a segment (written last)
    <index>/buckets/p-0003/s-000001.parquet   band rows of the segment's documents, by partition
    <index>/nodes/s-000001/00004.parquet      keys, ids, exact hashes, keep values
    <index>/signatures/s-000001/00004.parquet MinHash signatures (for verification)
    """

    uri: str

    @property
    def settings(self) -> str:
        return storage.join(self.uri, "_index.json")

    def claim(self, seg: int) -> str:
        return storage.join(self.uri, "segments", f"s-{seg:06d}.claim")

    def committed(self, seg: int) -> str:
        return storage.join(self.uri, "segments", f"s-{seg:06d}.json")

    def buckets(self, partition: int, seg: int) -> str:
        return storage.join(self.uri, "buckets", f"p-{partition:04d}", f"s-{seg:06d}.parquet")

    def nodes(self, seg: int, shard: int) -> str:
        return storage.join(self.uri, "nodes", f"s-{seg:06d}", f"{shard:05d}.parquet")

    def signatures(self, seg: int, shard: int) -> str:
        return storage.join(self.uri, "signatures", f"s-{seg:06d}", f"{shard:05d}.parquet")

    def segments(self, storage_options=None) -> list[int]:
        """Committed segments, sorted."""
        markers = storage.list_json(storage.join(self.uri, "segments"), storage_options)
        return sorted(int(m["segment"]) for m in markers)

    def committed_runs(self, storage_options=None) -> set[str]:
        """Run ids whose documents are in the index (each segment's commit marker names its run)."""
        return {m.get("run_id") for m in storage.list_json(storage.join(self.uri, "segments"), storage_options)}


@dataclass(frozen=True)
class Sources:
    """Where the node and signature rows of any key live: this run's work files or the index."""

    layout: DedupLayout
    index: IndexLayout | None = None

    def nodes(self, group: int) -> str:
        """The node file of a key group (`keys.key_group`)."""
        seg = index_group(group)
        return self.index.nodes(*seg) if seg else self.layout.nodes(group)

    def signatures(self, group: int) -> str:
        """The signature file of a key group (`keys.key_group`)."""
        seg = index_group(group)
        return self.index.signatures(*seg) if seg else self.layout.signatures(group)


def write_table(uri: str, table: pa.Table, storage_options, row_group_size: int | None = None) -> None:
    """A dedup work file (zstd)."""
    write_parquet(uri, table, storage_options, compression="zstd", row_group_size=row_group_size)


def write_signatures(uri: str, table: pa.Table, storage_options) -> None:
    """A signature file (`doc`, `sig`), in row groups of `SIGNATURE_ROW_GROUP`; the signatures uncompressed
    (min-hashes are random bits: zstd only spends time on them, both ways)."""
    write_parquet(
        uri,
        table,
        storage_options,
        compression={"doc": "zstd", "sig": "none"},
        row_group_size=SIGNATURE_ROW_GROUP,
    )
