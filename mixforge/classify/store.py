"""Versioned models in the store: `<root>/models/<name>/vNNNN/{model.bin | centroids.npy} + card.json [+ card.md]`.

Publishing a version, safe under concurrent trainings on any fsspec store (S3 has no rename):
1. claim the next free number with a create-only write of `vNNNN/_claim.json` (the loser of a race
   gets FileExistsError and tries the next number), so no two builds ever write the same folder;
2. write the model file(s) into the claimed folder, and the readable card (`card.md`) when there is one;
3. commit `card.json` create-only. A version *exists* once its card does: readers list and load
   only versions with a card, and the card holds the sha256 of every file, checked on load.
A build that dies between 1 and 3 leaves a claimed number without a card: it is skipped, never reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import tempfile
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixforge import __version__, storage
from mixforge.names import VERSION_RE, validate_name, version_label

CARD = "card.json"
CARD_MD = "card.md"  # the card for people, rendered from card.json (not listed in its `files`)
CLAIM = "_claim.json"
MAX_CLAIM_ATTEMPTS = 1000


def models_dir(root: str, name: str) -> str:
    return storage.join(root, "models", validate_name(name, "model name"))


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str  # "v0003"
    uri: str  # the version folder
    card: dict

    def file(self, name: str) -> str:
        return storage.join(self.uri, name)


def _version_numbers(name_dir: str, storage_options) -> tuple[set[int], set[int]]:
    """(numbers with any entry = claimed, numbers with a committed card)."""
    fs, path = storage.filesystem(name_dir, storage_options)
    fs.invalidate_cache(path)
    try:
        entries = fs.ls(path, detail=False)
    except FileNotFoundError:
        return set(), set()
    claimed, committed = set(), set()
    for entry in entries:
        m = VERSION_RE.match(posixpath.basename(entry.rstrip("/")))
        if not m:
            continue
        claimed.add(int(m.group(1)))
    for n in sorted(claimed):
        if fs.exists(posixpath.join(path, version_label(n), CARD)):
            committed.add(n)
    return claimed, committed


def list_versions(
    root_or_name_dir: str, name: str | None = None, storage_options: Mapping[str, Any] | None = None
) -> list[str]:
    """Committed versions ("v0001", ...) of a model, oldest first."""
    name_dir = models_dir(root_or_name_dir, name) if name else root_or_name_dir
    return [version_label(n) for n in sorted(_version_numbers(name_dir, storage_options)[1])]


def publish(
    root: str,
    name: str,
    files: Mapping[str, str | os.PathLike | bytes],
    card: dict,
    storage_options: Mapping[str, Any] | None = None,
    markdown: Callable[[dict], str] | None = None,
) -> ModelVersion:
    """Publish `files` (name -> local path or bytes) and `card` as the next version of model `name`.

    The card gets `name`, `version`, `uri`, `files` ({name: {sha256, bytes}}), `created`,
    `code_version` and `build_id` added. `markdown(full card)`, when given, is written as `card.md`
    before the card is committed, so a committed version always has it.
    """
    name_dir = models_dir(root, name)
    build_id = uuid.uuid4().hex
    claimed, _ = _version_numbers(name_dir, storage_options)
    claim = json.dumps({"build_id": build_id, "claimed": storage.utc_timestamp()}).encode()
    n = storage.create_next(
        max(claimed, default=0) + 1,
        lambda n: storage.join(name_dir, version_label(n), CLAIM),
        lambda n: claim,
        storage_options,
        MAX_CLAIM_ATTEMPTS,
        what=f"a version of {name_dir}",
    )
    version = version_label(n)
    uri = storage.join(name_dir, version)

    described = {}
    for fname, content in files.items():
        data = content if isinstance(content, bytes) else Path(content).read_bytes()
        storage.write_bytes(storage.join(uri, fname), data, storage_options)
        described[fname] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    full = {
        **card,
        "name": name,
        "version": version,
        "uri": uri,
        "files": described,
        "created": card.get("created") or storage.utc_timestamp(),
        "code_version": __version__,
        "build_id": build_id,
    }
    from mixforge import contracts

    contracts.validate(full, contracts.ModelCard)  # what every card holds (docs/schemas/model-card); kinds add theirs
    if markdown is not None:
        storage.write_bytes(storage.join(uri, CARD_MD), markdown(full).encode(), storage_options)
    body = json.dumps(full, indent=2, sort_keys=True, default=str).encode() + b"\n"
    if not storage.create_only(storage.join(uri, CARD), body, storage_options):  # cannot happen: we own the claim
        raise RuntimeError(f"{uri}/{CARD} appeared during publishing; the claim of {version} was not exclusive")
    return ModelVersion(name, version, uri, full)


def resolve(uri: str, storage_options: Mapping[str, Any] | None = None) -> ModelVersion:
    """A committed model version from: a version folder, a file inside one, or a model folder (latest)."""
    uri = uri.rstrip("/")
    base = posixpath.basename(uri)
    if not VERSION_RE.match(base) and "." in base:  # a file in a version folder (model.bin, centroids.npy)
        uri = posixpath.dirname(uri)
        base = posixpath.basename(uri)
    if VERSION_RE.match(base):
        card_uri = storage.join(uri, CARD)
        if not storage.exists(card_uri, storage_options):
            raise FileNotFoundError(f"model version {uri} has no {CARD}: it does not exist or was never committed")
        card = storage.read_json(card_uri, storage_options)
        return ModelVersion(card.get("name", posixpath.basename(posixpath.dirname(uri))), base, uri, card)
    versions = list_versions(uri, storage_options=storage_options)
    if not versions:
        raise FileNotFoundError(f"no committed model version under {uri} (expected {uri}/v0001/{CARD})")
    return resolve(storage.join(uri, versions[-1]), storage_options)


def fetch(version: ModelVersion, fname: str, storage_options: Mapping[str, Any] | None = None) -> str:
    """A local, sha256-verified copy of one file of a version (see `local_copy`)."""
    expected = version.card.get("files", {}).get(fname, {}).get("sha256")
    return local_copy(version.file(fname), storage_options, expected)


def local_copy(src: str, storage_options: Mapping[str, Any] | None = None, expected: str | None = None) -> str:
    """A local copy of the model file `src`, checked against sha256 `expected` when given: local files
    are used in place, remote ones cached once per machine under `$MIXFORGE_MODEL_CACHE/<sha256>/<name>`
    (keyed by the sha256 of the URI when there is no expected hash)."""
    fs, path = storage.filesystem(src, storage_options)
    if storage.is_local(fs):
        if expected and sha256_file(path) != expected:
            raise ValueError(f"{src}: sha256 does not match its model card")
        return path
    fname = posixpath.basename(path)
    cache = Path(os.environ.get("MIXFORGE_MODEL_CACHE", Path(tempfile.gettempdir()) / "mixforge-models"))
    target = cache / (expected or hashlib.sha256(src.encode()).hexdigest()) / fname
    if target.is_file() and (not expected or sha256_file(str(target)) == expected):
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{fname}.{os.getpid()}.{uuid.uuid4().hex}.part")
    try:
        fs.get_file(path, str(tmp))
        if expected and sha256_file(str(tmp)) != expected:
            raise ValueError(f"{src}: sha256 does not match its model card")
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return str(target)


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
