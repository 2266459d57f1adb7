"""Object-store access for any fsspec URI: local paths, file://, s3://, gs://, ...

Credentials and endpoints come from the usual environment (AWS_* variables, ~/.aws) or from
explicit `storage_options` (e.g. {"endpoint_url": ..., "key": ..., "secret": ...}), which are
passed along to Ray workers so remote processes see the same store.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import uuid
from dataclasses import dataclass
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import fsspec
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

SHARD_SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.gz", ".json.zst")


def filesystem(uri: str, storage_options: Mapping[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path within it) for a URI."""
    return url_to_fs(uri, **dict(storage_options or {}))


def full_uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """The URI a user would type for `path` on `fs` (protocol kept for remote stores)."""
    return path if is_local(fs) else fs.unstrip_protocol(path)


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def join(uri: str, *parts: str) -> str:
    return posixpath.join(uri.rstrip("/"), *parts)


def is_metadata_name(path: str) -> bool:
    """Names starting with `_` or `.` (in any path segment) are metadata, never input."""
    return any(seg.startswith(("_", ".")) for seg in path.replace("\\", "/").split("/") if seg not in ("", ".", ".."))


def is_shard(path: str) -> bool:
    return path.endswith(SHARD_SUFFIXES)


@dataclass(frozen=True)
class InputShard:
    uri: str
    size: int | None


def discover_shards(pattern: str, storage_options: Mapping[str, Any] | None = None) -> list[InputShard]:
    """Sorted input shards for a glob, a single file, or a prefix/directory (searched recursively).

    Metadata names (`_stats.json`, `_removed/`, `_done/`, dotfiles) are never picked up, so a
    run's own output folder can be used as input to the next stage. One listing call gives
    the sizes too (they go into the run id).
    """
    fs, path = filesystem(pattern, storage_options)
    if any(ch in path for ch in "*?["):
        found = fs.glob(path, detail=True)
        root = path.split("*")[0].split("?")[0].split("[")[0]
    elif fs.isfile(path):
        return [InputShard(full_uri(fs, path), fs.size(path))]
    elif fs.isdir(path):
        found = fs.find(path, detail=True)
        root = path
    else:
        raise FileNotFoundError(f"no input found at {pattern!r}")
    shards = [
        InputShard(full_uri(fs, p), info.get("size"))
        for p, info in found.items()
        if info.get("type", "file") == "file" and is_shard(p)
        and not is_metadata_name(p[len(root):] if p.startswith(root) else posixpath.basename(p))
    ]
    return sorted(shards, key=lambda s: s.uri)


def file_sizes(uris: Sequence[str], storage_options: Mapping[str, Any] | None = None, max_listings: int = 64) -> dict[str, int]:
    """{uri: bytes} from one listing per parent folder (at most `max_listings` folders; beyond that,
    or for files that cannot be listed, sizes are left out: they only order work, never decide it)."""
    if not uris:
        return {}
    fs, _ = filesystem(uris[0], storage_options)
    by_parent: dict[str, dict[str, str]] = {}
    for uri in uris:
        path = filesystem(uri, storage_options)[1]
        by_parent.setdefault(posixpath.dirname(path), {})[path] = uri
    if len(by_parent) > max_listings:
        return {}
    sizes = {}
    for parent, wanted in by_parent.items():
        fs.invalidate_cache(parent)  # a fresh listing, and none left cached to hide later writes
        try:
            listing = fs.ls(parent, detail=True)
        except Exception:  # noqa: BLE001 - e.g. no list permission: sizes only order the work
            continue
        finally:
            fs.invalidate_cache(parent)
        for info in listing:
            name = info["name"].rstrip("/")
            if name in wanted and info.get("size") is not None:
                sizes[wanted[name]] = int(info["size"])
    return sizes


@contextlib.contextmanager
def atomic_open(uri: str, storage_options: Mapping[str, Any] | None = None) -> Iterator[Any]:
    """Open `uri` for binary writing so that no reader ever sees a partial file.

    Local disk: write a hidden temp file beside the target, then rename over it.
    Object stores: an object only becomes visible when its (multipart) upload completes,
    so writing to the final key is already atomic; an aborted write leaves nothing behind.
    """
    fs, path = filesystem(uri, storage_options)
    if is_local(fs):
        parent = os.path.dirname(path)
        os.makedirs(parent, exist_ok=True)
        tmp = os.path.join(parent, f".tmp-{uuid.uuid4().hex}-{os.path.basename(path)}")
        try:
            with open(tmp, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    else:
        f = fs.open(path, "wb")
        try:
            yield f
        except BaseException:
            f.discard()  # abort the upload: closing would publish a partial object
            f.closed = True  # and never let __del__ close (= publish) it
            raise
        f.close()


def write_bytes(uri: str, data: bytes, storage_options: Mapping[str, Any] | None = None) -> None:
    with atomic_open(uri, storage_options) as f:
        f.write(data)


def create_only(uri: str, data: bytes, storage_options: Mapping[str, Any] | None = None) -> bool:
    """Write `data` only if nothing exists at `uri`; False if another writer got there first.

    S3 supports this with a conditional PUT (If-None-Match), local disk with O_EXCL + link.
    """
    fs, path = filesystem(uri, storage_options)
    try:
        if is_local(fs):
            parent = os.path.dirname(path)
            os.makedirs(parent, exist_ok=True)
            tmp = os.path.join(parent, f".tmp-{uuid.uuid4().hex}")
            with open(tmp, "wb") as f:
                f.write(data)
            try:
                os.link(tmp, path)  # fails if `path` exists; the file appears complete
            finally:
                os.remove(tmp)
        else:
            fs.pipe_file(path, data, mode="create")
    except FileExistsError:
        return False
    return True


def write_json(uri: str, obj: Any, storage_options: Mapping[str, Any] | None = None) -> None:
    write_bytes(uri, json.dumps(obj, indent=2, sort_keys=True, default=str).encode() + b"\n", storage_options)


def read_json(uri: str, storage_options: Mapping[str, Any] | None = None) -> Any:
    fs, path = filesystem(uri, storage_options)
    with fs.open(path, "rb") as f:
        return json.loads(f.read())


def exists(uri: str, storage_options: Mapping[str, Any] | None = None) -> bool:
    fs, path = filesystem(uri, storage_options)
    return fs.exists(path)


def list_json(prefix_uri: str, storage_options: Mapping[str, Any] | None = None) -> list[Any]:
    """Every `*.json` object directly under a prefix, parsed (empty if the prefix is absent)."""
    fs, path = filesystem(prefix_uri, storage_options)
    try:
        names = sorted(p for p in fs.ls(path, detail=False) if p.endswith(".json"))
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        with fs.open(name, "rb") as f:
            out.append(json.loads(f.read()))
    return out
