"""Mixture versions in the store: layout, atomic allocation, reading, listing, diffs.

    <store>/mixtures/<name>/v0001/manifest.json   the version: spec, pool, groups, every data file
    <store>/mixtures/<name>/v0001/README.md       data card (+ PNG plots beside it), rendered from the manifest
    <store>/mixtures/<name>/_data/<key>/<phase>/part-00000.parquet   data files, listed by manifests
    <store>/mixtures/<name>/_data/<key>/_card/*.png   the card's plots, written before the commit
    <store>/mixtures/<name>/_builds/<build id>/   scratch of one build (removed when it finishes)

A version exists once its manifest is committed with a create-only write; a build that loses the
race for a number takes the next one. Data files are written before the manifest, under a prefix
keyed by everything that determines their bytes (spec, pool fingerprints, code version): builds
that share a prefix write identical bytes, so a concurrent identical build can never change what
an existing version's files hold, and readers only ever reach files through a manifest.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mixforge import storage
from mixforge.mixtures import card
from mixforge.names import VERSION_RE, is_valid_name, parse_version, validate_name, version_label

# Part of every data key: /2 draws by per-shard keys with a bucketed shuffle and commits the card
# with the manifest; /3 adds the lineage columns (pool_shard, pool_row, pool_copy) to every row. Each
# format's bytes differ from the one before for the same spec, so its data goes to new prefixes and
# never overwrites files that older versions list. Readers accept /2 (no lineage columns) and /3.
MANIFEST_FORMAT = "mixforge.mixture/3"


class VersionNotFound(FileNotFoundError):
    pass


def now() -> str:
    """The manifests' timestamps (`storage.utc_timestamp`, the one format of every timestamp)."""
    return storage.utc_timestamp()


@dataclass(frozen=True)
class MixtureLayout:
    store: str
    name: str

    def __post_init__(self) -> None:
        # every path of a mixture is built here: a name is checked before it is joined to the store
        # (InvalidName, a ConfigError: `mixtures show ../x` is refused, never resolved)
        validate_name(self.name, "mixture name")

    @property
    def dir(self) -> str:
        return storage.join(self.store, "mixtures", self.name)

    def version_dir(self, version: str) -> str:
        return storage.join(self.dir, version)

    def manifest(self, version: str) -> str:
        return storage.join(self.version_dir(version), "manifest.json")

    def readme(self, version: str) -> str:
        return storage.join(self.version_dir(version), "README.md")

    def data_prefix(self, key: str) -> str:
        return storage.join(self.dir, "_data", key)

    def scratch(self, build_id: str) -> str:
        return storage.join(self.dir, "_builds", build_id)


def _ls_names(uri: str, storage_options: Mapping[str, Any] | None) -> list[str]:
    fs, path = storage.filesystem(uri, storage_options)
    fs.invalidate_cache(path)  # listings are cached by s3fs: a racing build's commit must be seen
    try:
        entries = fs.ls(path, detail=False)
    except FileNotFoundError:
        return []
    return [e.rstrip("/").rsplit("/", 1)[-1] for e in entries]


def list_versions(layout: MixtureLayout, storage_options: Mapping[str, Any] | None = None) -> list[str]:
    return sorted((n for n in _ls_names(layout.dir, storage_options) if VERSION_RE.match(n)), key=parse_version)


def list_mixtures(store: str, storage_options: Mapping[str, Any] | None = None) -> list[str]:
    # folders that are no valid mixture name were not made by mixforge: left out, not an error
    return sorted(n for n in _ls_names(storage.join(store, "mixtures"), storage_options) if is_valid_name(n))


SIGNIFICANT_DIGITS = 12


def tidy_floats(value: Any) -> Any:
    """Every float to 12 significant digits, the one rule for computed figures in a manifest: a
    share of 0.1 + 0.2 is written 0.3, not 0.30000000000000004."""
    if isinstance(value, float):
        return float(f"{value:.{SIGNIFICANT_DIGITS}g}") if math.isfinite(value) else value
    if isinstance(value, dict):
        return {k: tidy_floats(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [tidy_floats(v) for v in value]
    return value


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, indent=2, sort_keys=True, default=str).encode() + b"\n"


def commit_version(
    layout: MixtureLayout,
    make_manifest: Callable[[str], dict[str, Any]],
    storage_options: Mapping[str, Any] | None = None,
    max_attempts: int = 1000,
) -> tuple[str, dict[str, Any]]:
    """Allocate the next version number and commit its manifest create-only; (version, manifest).

    `make_manifest(version)` builds the manifest for a candidate number; a lost race moves on
    to the next number (the data files stay valid: they are listed by whichever manifest wins).
    """
    existing = list_versions(layout, storage_options)
    manifests: dict[int, dict[str, Any]] = {}

    def body(n: int) -> bytes:
        manifests[n] = make_manifest(version_label(n))
        return manifest_bytes(manifests[n])

    n = storage.create_next(
        parse_version(existing[-1]) + 1 if existing else 1,
        lambda n: layout.manifest(version_label(n)),
        body,
        storage_options,
        max_attempts,
        what=f"a version of mixture {layout.name!r}",
    )
    return version_label(n), manifests[n]


def commit(
    store: str,
    name: str,
    body: dict[str, Any],
    storage_options: Mapping[str, Any] | None = None,
    card_plots: bool = True,
) -> tuple[str, dict[str, Any]]:
    """Commit a new version of mixture `name` whose manifest is `body` (every field but `version`, the
    commit time and the data card): prepare the card under the data prefix (its statistics go into
    the manifest, its plots beside the data), commit the manifest create-only, then write the card
    beside it. A crash after the commit leaves a version whose card `ensure_card` rebuilds from
    the manifest alone. Builds and takedowns both end here."""
    layout = MixtureLayout(store, name)
    # computed figures tidied; the spec is kept as written (its hash is of those values)
    body = {**tidy_floats({k: v for k, v in body.items() if k != "spec"}), "spec": body["spec"]}
    body = {**body, "card": card.prepare_card(body, layout.data_prefix(body["data_key"]), storage_options, card_plots)}

    def make(version: str) -> dict[str, Any]:
        from mixforge import contracts

        manifest = {**body, "version": version, "timestamps": {**body["timestamps"], "committed": now()}}
        contracts.validate(manifest, contracts.MixManifest)  # the manifest's contract (docs/schemas)
        return manifest

    version, manifest = commit_version(layout, make, storage_options)
    card.write_card(manifest, layout.version_dir(version), storage_options)
    return version, manifest


def ensure_card(
    store: str, name: str, version: str | None = None, storage_options: Mapping[str, Any] | None = None
) -> str:
    """The version's README.md, rebuilt from its manifest first if it is missing; returns its markdown."""
    manifest = read_manifest(store, name, version, storage_options)
    layout = MixtureLayout(store, name)
    readme = layout.readme(manifest["version"])
    try:
        return storage.read_bytes(readme, storage_options).decode()
    except FileNotFoundError:
        return card.write_card(manifest, layout.version_dir(manifest["version"]), storage_options)


def resolve_version(
    layout: MixtureLayout, version: str | None, storage_options: Mapping[str, Any] | None = None
) -> str:
    versions = list_versions(layout, storage_options)
    if not versions:
        raise VersionNotFound(f"mixture {layout.name!r} has no versions in {layout.store}")
    if version in (None, "latest"):
        return versions[-1]
    if re.fullmatch(r"\d+", version):
        version = version_label(int(version))
    if version not in versions:
        raise VersionNotFound(f"mixture {layout.name!r} has no version {version} (versions: {', '.join(versions)})")
    return version


def read_manifest(
    store: str, name: str, version: str | None = None, storage_options: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    layout = MixtureLayout(store, name)
    version = resolve_version(layout, version, storage_options)
    return storage.read_json(layout.manifest(version), storage_options)


def data_files(manifest: dict[str, Any]) -> list[str]:
    """URIs of every data file of a version (what training code loads)."""
    return [f["uri"] for f in manifest["files"]]


# ----------------------------------------------------------------------------- summaries


def summary(manifest: dict[str, Any], store: str) -> dict[str, Any]:
    """The `mix` JSON summary of a version (DESIGN.md), from its manifest."""
    layout = MixtureLayout(store, manifest["name"])
    version = manifest["version"]
    groups = []
    for phase in manifest["phases"]:
        for g in phase["groups"]:
            groups.append(
                {
                    "name": g["name"],
                    "phase": phase["name"],
                    "target_share": round(g["target_share"], 6),
                    "realised_share": round(g["realised_share"], 6),
                    "requested_share": round(g["requested_share"], 6),
                    "docs": g["realised_docs"],
                    "unique_docs": g["unique_docs"],
                    "tokens": g["realised_tokens"],
                    "epochs": round(g["epochs"], 4),
                    "max_epochs": g["max_epochs"],
                    "short": g["short"],
                }
            )
    return {
        "name": manifest["name"],
        "version": version,
        "uri": layout.version_dir(version),
        "manifest": layout.manifest(version),
        "card": layout.readme(version),
        "groups": groups,
        "tokens": sum(f["tokens"] for f in manifest["files"]),
        "docs": sum(f["rows"] for f in manifest["files"]),
        "files": len(manifest["files"]),
        "derived_from": manifest.get("derived_from"),
        "notes": manifest.get("notes", []),
    }


def version_rows(
    store: str, name: str | None = None, storage_options: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """One row per version (of one mixture, or of all): what `mixtures list` prints."""
    rows = []
    for mixture in [name] if name else list_mixtures(store, storage_options):
        layout = MixtureLayout(store, mixture)
        for version in list_versions(layout, storage_options):
            m = storage.read_json(layout.manifest(version), storage_options)
            rows.append(
                {
                    "name": mixture,
                    "version": version,
                    "created_at": m["timestamps"]["committed"],
                    "tokens": sum(f["tokens"] for f in m["files"]),
                    "docs": sum(f["rows"] for f in m["files"]),
                    "files": len(m["files"]),
                    "spec_hash": m["spec_hash"][:12],
                    "derived_from": (m.get("derived_from") or {}).get("version"),
                    "manifest": layout.manifest(version),
                }
            )
    return rows


def _ids(manifest: dict[str, Any], storage_options: Mapping[str, Any] | None) -> set[str]:
    from mixforge.shards import read_parquet

    ids: set[str] = set()
    for uri in data_files(manifest):
        ids.update(read_parquet(uri, storage_options, columns=["id"]).column(0).to_pylist())
    return ids


def _named_items(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(x, dict) and "name" in x for x in value) and bool(value)


def spec_changes(a: Any, b: Any, path: str = "") -> list[dict[str, Any]]:
    """The fields that differ between two specs (as manifests hold them), one entry each: its dotted
    path (groups and phases by name: `groups[web].where.source`), `changed`, `added` or `removed`,
    and the values in a and b (null where absent). A reordering of named items is one `reordered`
    entry: a document joins the first group it matches, so group order is part of the spec."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in list(a) + [k for k in b if k not in a]:
            sub = f"{path}.{key}" if path else str(key)
            if key not in b:
                out.append({"path": sub, "change": "removed", "a": a[key], "b": None})
            elif key not in a:
                out.append({"path": sub, "change": "added", "a": None, "b": b[key]})
            else:
                out += spec_changes(a[key], b[key], sub)
        return out
    if _named_items(a) and _named_items(b):
        xa, xb = {x["name"]: x for x in a}, {x["name"]: x for x in b}
        out = []
        for key in list(xa) + [k for k in xb if k not in xa]:
            sub = f"{path}[{key}]"
            if key not in xb:
                out.append({"path": sub, "change": "removed", "a": xa[key], "b": None})
            elif key not in xa:
                out.append({"path": sub, "change": "added", "a": None, "b": xb[key]})
            else:
                out += spec_changes(xa[key], xb[key], sub)
        common_a, common_b = [k for k in xa if k in xb], [k for k in xb if k in xa]
        if common_a != common_b:
            out.append({"path": path, "change": "reordered", "a": list(xa), "b": list(xb)})
        return out
    return [] if a == b else [{"path": path, "change": "changed", "a": a, "b": b}]


def diff(
    store: str, name: str, a: str, b: str, storage_options: Mapping[str, Any] | None = None, sample: int = 20
) -> dict[str, Any]:
    """What changed between two versions: the spec's fields, group weights, tokens, documents added
    and removed."""
    ma = read_manifest(store, name, a, storage_options)
    mb = read_manifest(store, name, b, storage_options)

    def by_key(m: dict) -> dict[tuple[str, str], dict]:
        return {(p["name"], g["name"]): g for p in m["phases"] for g in p["groups"]}

    ga, gb = by_key(ma), by_key(mb)
    groups = []
    for key in sorted(set(ga) | set(gb)):
        x, y = ga.get(key, {}), gb.get(key, {})
        groups.append(
            {
                "phase": key[0],
                "name": key[1],
                "share_a": x.get("realised_share", 0.0),
                "share_b": y.get("realised_share", 0.0),
                "share_change_pp": round((y.get("realised_share", 0.0) - x.get("realised_share", 0.0)) * 100, 4),
                "tokens_a": x.get("realised_tokens", 0),
                "tokens_b": y.get("realised_tokens", 0),
                "docs_a": x.get("realised_docs", 0),
                "docs_b": y.get("realised_docs", 0),
            }
        )
    ids_a, ids_b = _ids(ma, storage_options), _ids(mb, storage_options)
    added, removed = sorted(ids_b - ids_a), sorted(ids_a - ids_b)
    tokens_a, tokens_b = (sum(f["tokens"] for f in m["files"]) for m in (ma, mb))
    return {
        "name": name,
        "a": ma["version"],
        "b": mb["version"],
        "spec_changed": ma["spec_hash"] != mb["spec_hash"],
        "spec_changes": spec_changes(ma["spec"], mb["spec"]),
        "tokens_a": tokens_a,
        "tokens_b": tokens_b,
        "tokens_change": tokens_b - tokens_a,
        "docs_a": sum(f["rows"] for f in ma["files"]),
        "docs_b": sum(f["rows"] for f in mb["files"]),
        "unique_docs_a": len(ids_a),
        "unique_docs_b": len(ids_b),
        "docs_added": len(added),
        "docs_removed": len(removed),
        "added_sample": added[:sample],
        "removed_sample": removed[:sample],
        "groups": groups,
    }
