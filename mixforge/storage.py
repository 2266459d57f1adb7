"""Object-store access for any fsspec URI: local paths, file://, s3://, gs://, ...

Credentials never travel in storage options (those are flow parameters, which Prefect stores in
plain text): they come from the environment (AWS_ACCESS_KEY_ID, ...), the fsspec/boto
configuration (~/.aws/credentials, `profile: NAME`), or a Prefect Secret block. Options carry at
most a reference to that block (`secret_block: NAME`); `filesystem()` resolves it in the process
that first needs it (the flow run: the driver) and keeps the credentials in that process's memory
only; `tasks.executor.ray_map` hands them to Ray workers as task arguments (see `handed_secrets`).
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import posixpath
import re
import stat
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import fsspec
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from pydantic import AfterValidator, BeforeValidator
from pydantic_core import PydanticCustomError

from mixforge.config_errors import ConfigError
from mixforge.names import validate_name

SHARD_SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.gz", ".json.zst")


def filesystem(uri: str, storage_options: Mapping[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path within it) for a URI (a `secret_block` reference in the options is resolved)."""
    return url_to_fs(uri, **resolve_options(storage_options))


# ----------------------------------------------------------------------------- secrets

SECRET_BLOCK_OPTION = "secret_block"

# A key is a secret when its words (split at `_`, `-`, `.`, spaces and camelCase; case ignored)
# joined together contain one of these...
SECRET_KEY_PARTS = (
    "secret",
    "token",
    "password",
    "passwd",
    "passphrase",
    "credential",
    "accesskey",
    "apikey",
    "accountkey",
    "privatekey",
    "sastoken",
    "connectionstring",
    "authorization",
)
# ...or one of its words is one of these, or its last word is `key` (key, secret_key, account_key,
# sse_customer_key, ...; `kms_key_id` is not a secret, `aws_access_key_id` is, by `accesskey`).
SECRET_KEY_WORDS = ("pwd", "sas")
# gcsfs's `token` may name a way to authenticate rather than hold a credential.
NON_SECRET_TOKEN_VALUES = ("anon", "google_default", "cloud", "browser", "cache")
_URL_WITH_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://[^/@\s:]*:[^/@\s]+@", re.IGNORECASE)

SECRET_HELP = (
    "storage options are flow parameters, which Prefect stores in plain text, so credentials are refused there. "
    "Put them in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN; "
    "GOOGLE_APPLICATION_CREDENTIALS; AZURE_STORAGE_*), in the fsspec/boto configuration (~/.aws/credentials; "
    "choose a profile with `profile: NAME` in storage.options), or in a Prefect Secret block whose value is a "
    'JSON object of fsspec options (e.g. {"key": ..., "secret": ...}) named by storage.secret_block'
)


def _key_words(key: str) -> list[str]:
    spaced = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key))
    return [w for w in re.split(r"[^a-z0-9]+", spaced.lower()) if w]


def is_secret_key(key: str, value: Any = None) -> bool:
    """Whether an fsspec option named `key` holds a credential (see SECRET_KEY_PARTS)."""
    words = _key_words(str(key))
    if not words:
        return False
    if words == ["token"] and isinstance(value, str) and value in NON_SECRET_TOKEN_VALUES:
        return False
    joined = "".join(words)
    return (
        any(part in joined for part in SECRET_KEY_PARTS)
        or any(w in SECRET_KEY_WORDS for w in words)
        or words[-1] == "key"
    )


def secret_option_paths(options: Any, prefix: str = "") -> list[str]:
    """Dotted paths of every secret-looking key (any depth, lists included) or URL with a password in `options`."""
    found = []
    if isinstance(options, Mapping):
        for key, value in options.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if not prefix and key == SECRET_BLOCK_OPTION:
                continue  # the reference to a Prefect Secret block: a name, not a secret
            if is_secret_key(key, value):
                found.append(path)
            else:
                found += secret_option_paths(value, path)
    elif isinstance(options, (list, tuple)):
        for i, value in enumerate(options):
            found += secret_option_paths(value, f"{prefix}[{i}]")
    elif isinstance(options, str) and _URL_WITH_PASSWORD.match(options):
        found.append(f"{prefix} (a URL with a password)")
    return found


def _redacted(options: Any, prefix: str = "") -> Any:
    """`options` with every secret value replaced, so that no error message can echo it."""
    if isinstance(options, Mapping):
        return {
            k: "<redacted>"
            if (prefix or k != SECRET_BLOCK_OPTION) and is_secret_key(k, v)
            else _redacted(v, f"{prefix}.{k}")
            for k, v in options.items()
        }
    if isinstance(options, (list, tuple)):
        return [_redacted(v, prefix + "[]") for v in options]
    if isinstance(options, str) and _URL_WITH_PASSWORD.match(options):
        return _URL_WITH_PASSWORD.sub(lambda m: m.group(0).split("://")[0] + "://<redacted>:<redacted>@", options)
    return options


def secret_options_message(paths: Sequence[str], where: str | None = "storage.options") -> str:
    named = ", ".join(f"{where}.{p}" if where else p for p in paths)
    return f"{named}: {'looks' if len(paths) == 1 else 'look'} like a credential; {SECRET_HELP}"


class SecretInStorageOptions(ConfigError):
    """A credential was put in storage options (flow parameters); the message says where it belongs."""


def refuse_secret_options(options: Mapping[str, Any] | None, where: str = "storage.options") -> dict[str, Any]:
    """`options` as a dict, or SecretInStorageOptions naming every secret-looking key (never its value)."""
    paths = secret_option_paths(options or {})
    if paths:
        raise SecretInStorageOptions(secret_options_message(paths, where))
    if (options or {}).get(SECRET_BLOCK_OPTION) is not None:
        validate_name(options[SECRET_BLOCK_OPTION], "Prefect Secret block name")
    return dict(options or {})


def _refuse_in_model(options: dict[str, Any], help: str = SECRET_HELP) -> dict[str, Any]:
    paths = secret_option_paths(options)
    if paths:
        # The error's own type lets config._format_errors leave the (redacted) input out.
        named = ", ".join(paths)
        raise PydanticCustomError(
            "secret_storage_option",
            "{message}",
            {"message": f"{named}: {'looks' if len(paths) == 1 else 'look'} like a credential; {help}"},
        )
    if options.get(SECRET_BLOCK_OPTION) is not None:
        validate_name(options[SECRET_BLOCK_OPTION], "Prefect Secret block name")
    return options


# A pydantic type for fsspec options in config models: secret-looking keys are refused, and the
# input is redacted *before* the check so that no ValidationError (Prefect prints them) echoes it.
StorageOptions = Annotated[dict[str, Any], AfterValidator(_refuse_in_model), BeforeValidator(_redacted)]

RUNTIME_ENV_HELP = (
    "the Ray runtime_env is a flow parameter, which Prefect stores in plain text (and Ray records), so credentials "
    "are refused there. Give them to the Ray nodes' own environment (the image, a Kubernetes Secret, an instance "
    "role); for the store, see storage.secret_block"
)

# The same rule for a Ray runtime_env (env_vars such as AWS_SECRET_ACCESS_KEY or HF_TOKEN, pip URLs with a password).
RuntimeEnv = Annotated[
    dict[str, Any], AfterValidator(lambda v: _refuse_in_model(v, RUNTIME_ENV_HELP)), BeforeValidator(_redacted)
]


# Credentials from Prefect Secret blocks, by block name: this process's memory only.
_SECRETS: dict[str, dict[str, Any]] = {}
_SECRETS_LOCK = threading.Lock()


def _in_ray_worker() -> bool:
    ray = sys.modules.get("ray")
    if ray is None:
        return False
    try:
        return ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE
    except Exception:  # noqa: BLE001 - no runtime context: not a worker
        return False


def _load_secret_block(name: str) -> dict[str, Any]:
    from prefect.blocks.system import Secret

    try:
        block = Secret.load(name)
        if hasattr(block, "__await__"):  # called from async code: Block.load dispatched to its coroutine
            from prefect.utilities.asyncutils import run_coro_as_sync

            block = run_coro_as_sync(block)
        value = block.get()
    except ValueError as e:
        raise ConfigError(
            f"storage.secret_block {name!r}: no Prefect Secret block of that name can be loaded ({e}); "
            f"create one with prefect.blocks.system.Secret(value={{...fsspec options...}}).save({name!r})"
        ) from None
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"storage.secret_block {name!r}: its value must be a JSON object of fsspec options "
            f'(e.g. {{"key": ..., "secret": ...}}), not a {type(value).__name__}'
        )
    return dict(value)


def secret_block_options(name: str) -> dict[str, Any]:
    """The fsspec options held by Prefect Secret block `name`, loaded once per process.

    On a Ray worker they must have been handed over by the driver (`handed_secrets`): a remote
    worker need not reach the Prefect API, and must not look the block up on its own.
    """
    with _SECRETS_LOCK:
        if name in _SECRETS:
            return _SECRETS[name]
        if _in_ray_worker():
            raise ConfigError(
                f"storage.secret_block {name!r} was not handed to this Ray worker: run Ray work through "
                "tasks.executor.ray_map (it passes the driver's resolved credentials as task arguments), "
                "or leave secret_block out and let the workers authenticate from their own environment or role"
            )
        _SECRETS[name] = _load_secret_block(name)
        return _SECRETS[name]


def _merged(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merged(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def resolve_options(storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """fsspec keyword arguments: `storage_options` with a `secret_block` reference replaced by the
    block's options (merged in, nested dicts such as client_kwargs included). Never write the result anywhere."""
    options = dict(storage_options or {})
    name = options.pop(SECRET_BLOCK_OPTION, None)
    return _merged(options, secret_block_options(name)) if name else options


def secret_blocks_in(storage_options: Mapping[str, Any] | None) -> list[str]:
    name = (storage_options or {}).get(SECRET_BLOCK_OPTION)
    return [name] if name else []


def resolved_secrets() -> dict[str, dict[str, Any]]:
    """Every Secret block this process has resolved, for handing to Ray workers in memory."""
    with _SECRETS_LOCK:
        return dict(_SECRETS)


@contextlib.contextmanager
def handed_secrets(secrets: Mapping[str, Mapping[str, Any]]) -> Iterator[None]:
    """Make credentials handed over by the driver resolvable in this (worker) process while the block runs."""
    with _SECRETS_LOCK:
        before = dict(_SECRETS)
        _SECRETS.update({name: dict(value) for name, value in secrets.items()})
    try:
        yield
    finally:
        with _SECRETS_LOCK:
            _SECRETS.clear()
            _SECRETS.update(before)


def forget_secrets() -> None:
    """Drop every resolved credential from this process (e.g. after a flow run)."""
    with _SECRETS_LOCK:
        _SECRETS.clear()


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
    """A shard format by its extension, in any case (`.JSONL`, `.Parquet`)."""
    return path.lower().endswith(SHARD_SUFFIXES)


@dataclass(frozen=True)
class InputShard:
    uri: str
    size: int | None


@dataclass(frozen=True)
class Discovery:
    """What an input pattern found: the shards, and every other entry it matched with the reason it
    was left out. Metadata names (`_x`, `.x`: a run's own outputs) are left out by design and only
    counted (a metadata folder counts once; it is not listed)."""

    pattern: str
    shards: list[InputShard]
    skipped: list[dict[str, str]] = field(default_factory=list)  # [{"uri": ..., "reason": ...}], sorted by uri
    metadata_skipped: int = 0

    def as_dict(self) -> dict[str, Any]:
        """For run summaries: counts and the skipped entries (not the shard list)."""
        return {
            "pattern": self.pattern,
            "shards": len(self.shards),
            "skipped": list(self.skipped),
            "metadata_skipped": self.metadata_skipped,
        }


_COMPRESSIONS = (".gz", ".zst", ".bz2", ".xz", ".lz4", ".zip", ".br", ".snappy", ".7z", ".tar")


def _extension(path: str) -> str:
    """`.txt`, `.json.bz2` (a compression keeps the format before it), or `no extension`."""
    base = posixpath.basename(path.rstrip("/"))
    stem, ext = posixpath.splitext(base)
    if ext.lower() in _COMPRESSIONS:
        ext = posixpath.splitext(stem)[1] + ext
    return ext or "no extension"


def _not_a_shard(path: str) -> str:
    expected = ", ".join(s for s in SHARD_SUFFIXES if not s.startswith(".json."))
    return f"not a shard format ({_extension(path)}; expected {expected})"


DIRECTORY_IN_GLOB = "a directory: a glob does not descend into folders (name the folder, or use '**')"


@dataclass
class _Found:
    """Entries seen while listing: candidate files (uri, size, identity, through a symlink), skips, metadata."""

    files: list[tuple[str, int | None, Any, bool]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    metadata: int = 0
    folder: bool = False  # the pattern named a folder that exists (an empty one is not "nothing there")

    def skip(self, uri: str, reason: str) -> None:
        self.skipped.append({"uri": uri, "reason": reason})


def _oserror_reason(e: OSError) -> str:
    if e.errno == errno.ELOOP:
        return "symlink loop"
    if isinstance(e, PermissionError):
        return "unreadable: permission denied"
    return f"unreadable: {(e.strerror or type(e).__name__).lower()}"


def _local_entry(path: str, is_link: bool) -> tuple[os.stat_result | None, str | None]:
    """(stat following symlinks, None) or (None, why it cannot be used)."""
    try:
        return os.stat(path), None
    except FileNotFoundError:
        return None, "broken symlink" if is_link else "vanished while listing"
    except OSError as e:
        return None, _oserror_reason(e)


def _add_local_file(found: _Found, path: str, st: os.stat_result, is_link: bool) -> None:
    """A local file as an input shard, or skipped with the reason."""
    if not stat.S_ISREG(st.st_mode):
        found.skip(path, "not a regular file")
    elif not is_shard(path):
        found.skip(path, _not_a_shard(path))
    elif not os.access(path, os.R_OK):
        found.skip(path, "unreadable: permission denied")
    else:
        found.files.append((path, st.st_size, (st.st_dev, st.st_ino), is_link))


def _walk_local(top: str, found: _Found, matches, root: str, max_depth: int | None, glob: bool) -> None:
    """List `top` recursively, following symlinks (fsspec's local find silently drops them all),
    without ever entering a folder twice: a symlink back to a folder being listed is a loop, one to
    a folder listed elsewhere is reported, not listed again."""
    top_stat = os.stat(top)
    ancestors: list[tuple[int, int]] = []
    visited: dict[tuple[int, int], str] = {}

    def walk(dirpath: str, st: os.stat_result, depth: int) -> None:
        ident = (st.st_dev, st.st_ino)
        visited[ident] = dirpath
        ancestors.append(ident)
        try:
            with os.scandir(dirpath) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            found.skip(dirpath, _oserror_reason(e))
            ancestors.pop()
            return
        for entry in entries:
            path = dirpath.rstrip("/") + "/" + entry.name
            relative = path[len(root) :]
            if is_metadata_name(relative):
                if matches(path) or not glob:
                    found.metadata += 1
                continue
            is_link = entry.is_symlink()
            est, problem = _local_entry(path, is_link)
            if problem is not None:
                if matches(path):
                    found.skip(path, problem)
                continue
            if stat.S_ISDIR(est.st_mode):
                sub = (est.st_dev, est.st_ino)
                if max_depth is not None and depth + 1 >= max_depth:  # beyond the glob's reach
                    if matches(path):
                        found.skip(path, "symlink loop" if sub in ancestors else DIRECTORY_IN_GLOB)
                elif sub in ancestors:
                    found.skip(path, f"symlink loop (points back to {visited[sub]})")
                elif sub in visited:
                    found.skip(path, f"symlink to a folder already listed ({visited[sub]})")
                else:
                    walk(path, est, depth + 1)
            elif matches(path):
                _add_local_file(found, path, est, is_link)
        ancestors.pop()

    walk(top, top_stat, 0)


def _glob_root(path: str) -> str:
    """The folder a glob is relative to: everything before the first wildcard, up to its last `/`."""
    head = re.split(r"[*?\[]", path, maxsplit=1)[0]
    return head[: head.rfind("/") + 1] if "/" in head else ""


def discover_inputs(pattern: str, storage_options: Mapping[str, Any] | None = None) -> Discovery:
    """Input shards for a glob, a single file, or a prefix/directory (searched recursively), and
    what was left out and why.

    Extensions match in any case. Skipped, with a reason: other formats (`not a shard format (.txt; ...)`),
    `broken symlink`, `symlink loop (...)`, `not a regular file`, `unreadable: permission denied`, a
    second path to a file already found (`same file as ...`), folders a glob matched but does not
    enter. Metadata names (`_stats.json`, `_removed/`, `_done/`, dotfiles) are never inputs, so a
    run's own output folder can be the next stage's input; they are only counted. One listing gives
    the sizes too (they go into the run id). FileNotFoundError (naming the pattern) when nothing is
    there or the glob matches nothing at all; an empty folder gives an empty discovery.
    """
    fs, path = filesystem(pattern, storage_options)
    found = _Found()
    glob = any(ch in path for ch in "*?[")
    if is_local(fs):
        _discover_local(fs, path, glob, found, pattern)
    else:
        _discover_remote(fs, path, glob, found, pattern)
    if not found.files and not found.skipped and not found.metadata and not found.folder:
        raise FileNotFoundError(f"no input found at {pattern!r}" + (" (the glob matches nothing)" if glob else ""))
    shards = _distinct_files(fs, found)
    return Discovery(
        pattern, sorted(shards, key=lambda s: s.uri), sorted(found.skipped, key=lambda s: s["uri"]), found.metadata
    )


def _discover_local(fs, path: str, glob: bool, found: _Found, pattern: str) -> None:
    if glob:
        from fsspec.utils import glob_translate

        regex = re.compile(glob_translate(path))
        root = _glob_root(path)
        top = root.rstrip("/") or "/"
        # without `**`, a glob reaches as many folders down as it has `/` after its root
        depth = None if "**" in path else path[len(root) :].count("/") + 1
        if not os.path.isdir(top):
            raise FileNotFoundError(
                f"no input found at {pattern!r} (the glob matches nothing: {top!r} is not a folder)"
            )
        _walk_local(top, found, lambda p: bool(regex.match(p)), root, depth, glob=True)
    elif os.path.isdir(path):
        found.folder = True
        _walk_local(path.rstrip("/") or "/", found, lambda p: True, path.rstrip("/") + "/", None, glob=False)
    elif os.path.lexists(path):
        is_link = os.path.islink(path)
        st, problem = _local_entry(path, is_link)
        if problem is not None:
            found.skip(path, problem)
        else:
            _add_local_file(found, path, st, is_link)
    else:
        raise FileNotFoundError(f"no input found at {pattern!r}")


def _discover_remote(fs, path: str, glob: bool, found: _Found, pattern: str) -> None:
    if glob:
        listing = fs.glob(path, detail=True)
        root = _glob_root(path)
    elif fs.isfile(path):
        listing, root = {path: fs.info(path)}, path  # a file named on purpose is never metadata
    elif fs.isdir(path):
        found.folder = True
        listing, root = fs.find(path, detail=True), path.rstrip("/") + "/"
    else:
        raise FileNotFoundError(f"no input found at {pattern!r}")
    for p, info in listing.items():
        uri = full_uri(fs, p)
        kind = info.get("type", "file")
        if is_metadata_name(p[len(root) :] if p.startswith(root) else posixpath.basename(p)):
            found.metadata += 1
        elif kind == "directory":
            if glob and "**" not in path:
                found.skip(uri, DIRECTORY_IN_GLOB)
        elif kind != "file":
            found.skip(uri, "not a regular file")
        elif not is_shard(p):
            found.skip(uri, _not_a_shard(p))
        else:
            found.files.append((uri, info.get("size"), None, False))


def _distinct_files(fs, found: _Found) -> list[InputShard]:
    """One shard per file: a second path to the same local file (a symlink, a hard link) would read it twice."""
    shards, by_identity = [], {}
    for uri, size, ident, _is_link in sorted(found.files, key=lambda f: (f[3], f[0])):  # real paths first
        if ident is not None and ident in by_identity:
            found.skip(uri, f"same file as {by_identity[ident]} (read once)")
            continue
        if ident is not None:
            by_identity[ident] = uri
        shards.append(InputShard(full_uri(fs, uri) if ident is None else uri, size))
    return shards


def discover_shards(pattern: str, storage_options: Mapping[str, Any] | None = None) -> list[InputShard]:
    """Sorted input shards for a glob, a file or a prefix (`discover_inputs(...).shards`)."""
    return discover_inputs(pattern, storage_options).shards


def file_sizes(
    uris: Sequence[str], storage_options: Mapping[str, Any] | None = None, max_listings: int = 64
) -> dict[str, int]:
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


# Local writes hand their dirty pages to the kernel's writeback every this many bytes, without waiting:
# the fsync that makes the file durable before it is renamed into place then waits only for the tail,
# instead of stalling the worker while the whole file goes to disk (RocksDB's `bytes_per_sync`).
WRITEBACK_BYTES = 8 << 20
_SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>: start writeback of the range's dirty pages, do not wait


def _load_sync_file_range() -> Callable[[int], int] | None:
    """`start_writeback(fd)` through Linux's sync_file_range(2); None where the C library lacks it."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return lambda fd: fn(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)  # 0, 0: from the start to the end of the file


_start_writeback = _load_sync_file_range()


class _EarlyWritebackFile(io.BufferedWriter):
    """A buffered local file that starts the kernel's writeback of what it has written every
    WRITEBACK_BYTES (nothing where sync_file_range is missing): a hint that does not wait for the disk."""

    def __init__(self, path: str) -> None:
        super().__init__(io.FileIO(path, "wb"))
        self._since_writeback = 0

    def write(self, data) -> int:
        n = super().write(data)
        self._since_writeback += n
        if self._since_writeback >= WRITEBACK_BYTES and _start_writeback is not None:
            self._since_writeback = 0
            _start_writeback(self.raw.fileno())  # what is still in this object's buffer goes at fsync
        return n


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
            with _EarlyWritebackFile(tmp) as f:
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


def create_next(
    first: int,
    uri_of: Callable[[int], str],
    data_of: Callable[[int], bytes],
    storage_options: Mapping[str, Any] | None = None,
    max_attempts: int = 1000,
    what: str = "a number",
) -> int:
    """The one allocator of numbered, immutable things (model versions, mixture versions, dedup index
    segments): write `data_of(n)` create-only at `uri_of(n)` for n = first, first + 1, ... until one
    write wins, and return that n. Two writers racing for a number both move on safely: the loser
    simply takes the next one, and nothing is ever overwritten."""
    n = first
    for _ in range(max_attempts):
        if create_only(uri_of(n), data_of(n), storage_options):
            return n
        n += 1
    raise RuntimeError(f"could not claim {what} after {max_attempts} attempts (from {uri_of(first)})")


def utc_timestamp(seconds: float | None = None) -> str:
    """Every timestamp mixforge writes (run manifests, cards, markers, leases): UTC, ISO 8601, to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def write_json(uri: str, obj: Any, storage_options: Mapping[str, Any] | None = None) -> None:
    write_bytes(uri, json.dumps(obj, indent=2, sort_keys=True, default=str).encode() + b"\n", storage_options)


def read_bytes(uri: str, storage_options: Mapping[str, Any] | None = None) -> bytes:
    fs, path = filesystem(uri, storage_options)
    with fs.open(path, "rb") as f:
        return f.read()


def read_json(uri: str, storage_options: Mapping[str, Any] | None = None) -> Any:
    return json.loads(read_bytes(uri, storage_options))


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
