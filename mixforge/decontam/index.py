"""The benchmark n-gram index: built in parallel, stored once per content, reused.

    <index root>/<key>/_index.json          the manifest (create-only, written last: its presence = built)
    <index root>/<key>/part-00000.npz       `hashes` (uint64, sorted), `masks` (uint64: bit b = benchmark b
                                            of the manifest), `items` (uint32: benchmark items holding it)
    <index root>/<key>/_build/              the build's steps (markers, per-file pieces), removed when done

`key` is the sha256 (first 20 hex digits) of the benchmark files' contents (sha256 each), their
benchmark names and fields, the n-gram settings and the normalisation version: the same benchmarks
and settings give the same folder, so a second run (or another run id, or another pipeline) reuses it,
and a changed file gives a new one. Nothing is ever overwritten.

Build: one step per benchmark file (items -> their distinct n-gram hashes, each with the number of
items of that file holding it, split into hash-range partitions), then one step per partition (the
pieces of every file merged: items summed, benchmark bits ORed, frequent and stop-listed n-grams left
out). Partitions are contiguous hash ranges, so the parts concatenated in order are the sorted index.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from mixforge import storage
from mixforge.config_errors import ConfigError
from mixforge.decontam.config import DecontamConfig
from mixforge.decontam.ngrams import NORMALIZATION, hash_ngram_texts, ngram_table, normalized_word_lists
from mixforge.executor import Call, Executor
from mixforge.runs import sha256_json
from mixforge.shards import _open_shard, parquet_file, read_parquet, shard_format

log = logging.getLogger("mixforge")

MANIFEST = "_index.json"
FORMAT = "mixforge.decontam-index/1"


@dataclass(frozen=True)
class BenchmarkFile:
    benchmark: int  # position of its set in the config (its bit in the masks)
    uri: str
    fields: tuple[str, ...]
    sha256: str


@dataclass(frozen=True)
class IndexPlan:
    uri: str  # the index folder (<root>/<key>)
    key: str
    files: tuple[BenchmarkFile, ...]
    benchmarks: tuple[str, ...]
    ngram: int
    numbers: bool
    partitions: int
    max_items: int | None
    stop_hashes: np.ndarray

    @property
    def build_dir(self) -> str:
        return storage.join(self.uri, "_build")

    def part(self, p: int) -> str:
        return storage.join(self.uri, f"part-{p:05d}.npz")


def index_root(config: DecontamConfig, store: str) -> str:
    return config.index or storage.join(store, "index", "decontam")


def _sha256(uri: str, storage_options: Mapping[str, Any] | None) -> str:
    fs, path = storage.filesystem(uri, storage_options)
    digest = hashlib.sha256()
    with fs.open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def benchmark_files(config: DecontamConfig, storage_options: Mapping[str, Any] | None = None) -> list[tuple[int, str]]:
    """(position of its set, URI) of every benchmark file; FileNotFoundError naming a set that has none."""
    files = []
    for b, bench in enumerate(config.benchmarks):
        try:
            found = storage.discover_inputs(bench.uri, storage_options)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"benchmark {bench.name!r}: {e.args[0] if e.args else e}") from None
        if not found.shards:
            skipped = "".join(f"; skipped {s['uri']} ({s['reason']})" for s in found.skipped[:3])
            raise FileNotFoundError(
                f"benchmark {bench.name!r}: no Parquet or JSONL file (.parquet, .jsonl, .jsonl.gz, .jsonl.zst) "
                f"at {bench.uri!r}{skipped}"
            )
        files += [(b, s.uri) for s in found.shards]
    return files


def check_benchmarks(config: DecontamConfig, storage_options: Mapping[str, Any] | None = None) -> None:
    """The pre-flight of the stage (before Prefect or Ray start; reads footers and first lines only): every
    benchmark has a file, each file can be read and has the configured fields (a Parquet file's columns, a
    JSONL file's first row). ConfigError naming the benchmark, the file and what is wrong."""
    try:
        files = benchmark_files(config, storage_options)
    except (FileNotFoundError, PermissionError) as e:
        raise ConfigError(f"extra_stages.decontaminate.benchmarks: {e}") from None
    for b, uri in files:
        bench = config.benchmarks[b]
        where = f"extra_stages.decontaminate.benchmarks[{b}] ({bench.name!r}): {uri}"
        try:
            fields = _first_fields(uri, storage_options)
        except Exception as e:  # noqa: BLE001 - any read failure is a file to fix, said before any work
            raise ConfigError(f"{where} cannot be read ({type(e).__name__}: {e})") from None
        if fields is None:
            raise ConfigError(f"{where} holds no rows")
        missing = [f for f in bench.fields if f not in fields]
        if missing:
            raise ConfigError(
                f"{where} has no field {', '.join(map(repr, missing))} (fields: {', '.join(sorted(fields)[:20])}); "
                "set the benchmark's fields"
            )


def _first_fields(uri: str, storage_options: Mapping[str, Any] | None) -> set[str] | None:
    """A Parquet file's columns (from its footer) or the fields of a JSONL file's first row (None: no row)."""
    if shard_format(uri) == "parquet":
        with parquet_file(uri, storage_options) as pf:
            return set(pf.schema_arrow.names)
    with _open_shard(uri, storage_options) as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                row = orjson.loads(line)
                if not isinstance(row, dict):
                    raise ValueError(f"line {number} is a JSON {type(row).__name__}, not an object")
                return set(row)
    return None


def plan_index(config: DecontamConfig, store: str, storage_options: Mapping[str, Any] | None = None) -> IndexPlan:
    """Where the index of `config`'s benchmarks is: its files found and hashed (read once by the driver:
    benchmark sets are small), its key computed. FileNotFoundError naming a set that has no file."""
    files = [
        BenchmarkFile(b, uri, config.benchmarks[b].fields, _sha256(uri, storage_options))
        for b, uri in benchmark_files(config, storage_options)
    ]
    settings = {
        "format": FORMAT,
        "normalization": NORMALIZATION,
        "ngram": config.ngram,
        "normalize_numbers": config.normalize_numbers,
        "max_benchmark_items": config.max_benchmark_items,
        "stop_ngrams": sorted(config.stop_ngrams),
        "partitions": config.index_partitions,
        "benchmarks": [
            {
                "name": bench.name,
                "fields": list(bench.fields),
                "files": sorted(f.sha256 for f in files if f.benchmark == b),
            }
            for b, bench in enumerate(config.benchmarks)
        ],
    }
    key = sha256_json(settings)[:20]
    return IndexPlan(
        uri=storage.join(index_root(config, store), key),
        key=key,
        files=tuple(files),
        benchmarks=tuple(b.name for b in config.benchmarks),
        ngram=config.ngram,
        numbers=config.normalize_numbers,
        partitions=config.index_partitions,
        max_items=config.max_benchmark_items,
        stop_hashes=np.unique(hash_ngram_texts(list(config.stop_ngrams), config.ngram, config.normalize_numbers)),
    )


# ----------------------------------------------------------------------------- reading benchmark items


def _item_text(row: Mapping[str, Any], fields: Sequence[str], uri: str, line: int) -> str:
    parts = []
    for name in fields:
        if name not in row:
            raise ValueError(f"{uri} row {line}: no field {name!r} (fields: {sorted(row)[:20]})")
        value = row[name]
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            parts += [str(v) for v in value if v is not None]
        else:
            parts.append(str(value))
    return "\n".join(parts)


def read_items(uri: str, fields: Sequence[str], storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """The text of every item (row) of one benchmark file: its `fields` joined by newlines."""
    if shard_format(uri) == "parquet":
        table = read_parquet(uri, storage_options)
        missing = [f for f in fields if f not in table.column_names]
        if missing:
            raise ValueError(f"{uri}: no field(s) {missing} (columns: {table.column_names[:20]})")
        rows = table.select(list(fields)).to_pylist()
        return [_item_text(r, fields, uri, i) for i, r in enumerate(rows)]
    items = []
    with _open_shard(uri, storage_options) as f:
        for i, line in enumerate(f, start=1):
            if line.strip():
                items.append(_item_text(orjson.loads(line), fields, uri, i))
    return items


# ----------------------------------------------------------------------------- steps


def partition_of(hashes: np.ndarray, partitions: int) -> np.ndarray:
    """The hash-range partition of each hash: floor(hi32 * partitions / 2^32), monotone in the hash."""
    return ((hashes >> np.uint64(32)) * np.uint64(partitions) >> np.uint64(32)).astype(np.int64)


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _load_npz(uri: str, storage_options: Mapping[str, Any] | None) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(storage.read_bytes(uri, storage_options))) as z:
        return {k: z[k] for k in z.files}


def index_file(plan: IndexPlan, number: int, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Step 1, one benchmark file: its items' distinct n-grams, counted by items, in partition pieces
    `_build/file-<number>/part-<p>.npz`; its marker `_build/file-<number>.json` (a rerun skips it)."""
    marker = storage.join(plan.build_dir, f"file-{number:05d}.json")
    if storage.exists(marker, storage_options):
        return storage.read_json(marker, storage_options)
    started = time.perf_counter()
    bf = plan.files[number]
    items = read_items(bf.uri, bf.fields, storage_options)
    words = normalized_word_lists(pa.array(items, pa.string()), plan.numbers)
    hashes, offsets = ngram_table(words, plan.ngram)
    counts = np.diff(offsets)
    item_of = np.repeat(np.arange(len(items), dtype=np.int64), counts)
    # items per n-gram, each item once: a stable sort keeps each hash's items in order, so a pair is new
    # where the hash or the item changes (a 2-D np.unique of the pairs is 5x slower)
    order = np.argsort(hashes, kind="stable")
    h, it = hashes[order], item_of[order]
    new_pair = np.ones(len(h), bool)
    new_pair[1:] = (h[1:] != h[:-1]) | (it[1:] != it[:-1])
    h = h[new_pair]
    starts = np.flatnonzero(np.r_[True, h[1:] != h[:-1]]) if len(h) else np.zeros(0, np.int64)
    unique = h[starts]
    per_item = np.diff(np.r_[starts, len(h)])
    part = partition_of(unique, plan.partitions)
    bounds = np.searchsorted(part, np.arange(plan.partitions + 1))
    for p in range(plan.partitions):
        lo, hi = bounds[p], bounds[p + 1]
        piece = _npz(hashes=unique[lo:hi], items=per_item[lo:hi].astype(np.uint32))
        storage.write_bytes(
            storage.join(plan.build_dir, f"file-{number:05d}", f"part-{p:05d}.npz"), piece, storage_options
        )
    stats = {
        "file": bf.uri,
        "benchmark": plan.benchmarks[bf.benchmark],
        "items": len(items),
        "items_without_ngrams": int((counts == 0).sum()),  # shorter than n words
        "ngrams": len(unique),
        "seconds": round(time.perf_counter() - started, 4),
    }
    storage.write_json(marker, stats, storage_options)
    return stats


def merge_partition(plan: IndexPlan, p: int, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Step 2, one hash partition: every file's piece merged into the index part `part-<p>.npz`
    (marker `_build/part-<p>.json`)."""
    marker = storage.join(plan.build_dir, f"part-{p:05d}.json")
    if storage.exists(marker, storage_options):
        return storage.read_json(marker, storage_options)
    started = time.perf_counter()
    hashes, items, masks = [], [], []
    for number, bf in enumerate(plan.files):
        piece = _load_npz(storage.join(plan.build_dir, f"file-{number:05d}", f"part-{p:05d}.npz"), storage_options)
        hashes.append(piece["hashes"])
        items.append(piece["items"])
        masks.append(np.full(len(piece["hashes"]), np.uint64(1) << np.uint64(bf.benchmark), np.uint64))
    h = np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)
    order = np.argsort(h, kind="stable")
    h, it, m = h[order], np.concatenate(items)[order].astype(np.int64), np.concatenate(masks)[order]
    unique, starts = np.unique(h, return_index=True)
    total_items = np.add.reduceat(it, starts) if len(h) else np.zeros(0, np.int64)
    mask = np.bitwise_or.reduceat(m, starts) if len(h) else np.zeros(0, np.uint64)
    frequent = total_items > plan.max_items if plan.max_items is not None else np.zeros(len(unique), bool)
    stopped = np.isin(unique, plan.stop_hashes) & ~frequent
    keep = ~(frequent | stopped)
    storage.write_bytes(
        plan.part(p),
        _npz(hashes=unique[keep], masks=mask[keep], items=total_items[keep].astype(np.uint32)),
        storage_options,
    )
    stats = {
        "partition": p,
        "ngrams": int(keep.sum()),
        "frequent_dropped": int(frequent.sum()),
        "stop_dropped": int(stopped.sum()),
        "seconds": round(time.perf_counter() - started, 4),
    }
    storage.write_json(marker, stats, storage_options)
    return stats


# ----------------------------------------------------------------------------- build and load


def build_index(
    plan: IndexPlan, executor: Executor, storage_options: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The index's manifest: read back when the index exists (`reused: true`), else built on `executor`
    (one step per benchmark file, then one per partition) and published create-only."""
    manifest_uri = storage.join(plan.uri, MANIFEST)
    if storage.exists(manifest_uri, storage_options):
        return {**storage.read_json(manifest_uri, storage_options), "reused": True}
    started = time.perf_counter()
    files = executor.map(
        index_file,
        [Call(f"benchmark file {f.uri}", (plan, i, storage_options)) for i, f in enumerate(plan.files)],
        step="decontaminate:index-files",
        storage_options=storage_options,
        progress_name="decontaminate (index: benchmark files)",
    )
    parts = executor.map(
        merge_partition,
        [Call(f"index partition {p}", (plan, p, storage_options)) for p in range(plan.partitions)],
        step="decontaminate:index-partitions",
        storage_options=storage_options,
        progress_name="decontaminate (index: partitions)",
    )
    manifest = {
        "format": FORMAT,
        "key": plan.key,
        "uri": plan.uri,
        "normalization": NORMALIZATION,
        "ngram": plan.ngram,
        "normalize_numbers": plan.numbers,
        "partitions": plan.partitions,
        "max_benchmark_items": plan.max_items,
        "stop_ngrams": len(plan.stop_hashes),
        "benchmarks": list(plan.benchmarks),
        "files": [{"uri": f.uri, "sha256": f.sha256, "benchmark": plan.benchmarks[f.benchmark]} for f in plan.files],
        "per_file": files,
        "items": sum(f["items"] for f in files),
        "items_without_ngrams": sum(f["items_without_ngrams"] for f in files),
        "ngrams": sum(p["ngrams"] for p in parts),
        "frequent_dropped": sum(p["frequent_dropped"] for p in parts),
        "stop_dropped": sum(p["stop_dropped"] for p in parts),
        "built_at": storage.utc_timestamp(),
        "build_seconds": round(time.perf_counter() - started, 3),
    }
    if not storage.create_only(manifest_uri, json.dumps(manifest, indent=2).encode(), storage_options):
        return {**storage.read_json(manifest_uri, storage_options), "reused": True}  # a concurrent build won
    fs, path = storage.filesystem(plan.build_dir, storage_options)
    fs.rm(path, recursive=True)
    log.info("decontaminate: index %s built: %d n-grams of %d items", plan.uri, manifest["ngrams"], manifest["items"])
    return {**manifest, "reused": False}


@dataclass
class LoadedIndex:
    hashes: np.ndarray  # uint64, sorted, distinct
    masks: np.ndarray  # uint64, the benchmarks of each n-gram (bit b: benchmark b)


def load_index(uri: str, partitions: int, storage_options: Mapping[str, Any] | None = None) -> LoadedIndex:
    parts = [_load_npz(storage.join(uri, f"part-{p:05d}.npz"), storage_options) for p in range(partitions)]
    return LoadedIndex(
        np.concatenate([x["hashes"] for x in parts]).astype(np.uint64),
        np.concatenate([x["masks"] for x in parts]).astype(np.uint64),
    )
