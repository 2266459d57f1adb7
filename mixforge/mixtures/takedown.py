"""Takedowns: a new version derived from an existing one minus documents, without resampling.

Files holding none of the excluded documents are listed again as they are (files are immutable);
the others are rewritten without those rows, in the same order. The manifest records what was
excluded, why, and how much each group lost.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mixforge import schema as S
from mixforge import storage
from mixforge.mixtures import build as B
from mixforge.mixtures.pool import MIX_GROUP, N_TOKENS, glob_to_regex
from mixforge.mixtures.spec import Exclusions, MixSpec, sha256_json
from mixforge.mixtures.versions import MixtureLayout, list_versions, read_manifest, summary
from mixforge.mixtures.write import parquet_bytes


def with_standing_takedowns(spec: MixSpec) -> MixSpec:
    """`spec` with every earlier takedown of its mixture added to `exclude`, so that a new build
    (a resample, e.g. the nightly) never brings a taken-down document back."""
    layout = MixtureLayout(spec.store, spec.name)
    ids, patterns = set(spec.exclude.ids), list(spec.exclude.url_patterns)
    for version in list_versions(layout, spec.storage_options):
        takedown = storage.read_json(layout.manifest(version), spec.storage_options).get("takedown")
        if takedown:
            ids.update(takedown["ids"])
            patterns += [p for p in takedown["url_patterns"] if p not in patterns]
    if ids == set(spec.exclude.ids) and patterns == list(spec.exclude.url_patterns):
        return spec
    return spec.model_copy(update={"exclude": Exclusions(ids=sorted(ids), url_patterns=patterns)})


def excluded_mask(table: pa.Table, ids: set[str], url_patterns: Sequence[str]) -> np.ndarray:
    mask = np.zeros(table.num_rows, bool)
    if ids:
        mask |= pc.is_in(table.column(S.ID), value_set=pa.array(sorted(ids), pa.string())).to_numpy(zero_copy_only=False)
    if url_patterns and S.URL in table.column_names:
        urls = table.column(S.URL)
        for pattern in url_patterns:
            mask |= pc.fill_null(pc.match_substring_regex(urls, glob_to_regex(pattern)), False).to_numpy(zero_copy_only=False)
    return mask


def derive_version(store: str, name: str, from_version: str | None, *, ids: Sequence[str] = (), url_patterns: Sequence[str] = (),
                   reason: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Commit a new version of `name`: `from_version` minus `ids` and URLs matching `url_patterns` (globs)."""
    if not ids and not url_patterns:
        raise ValueError("a takedown needs ids or URL patterns")
    if not reason.strip():
        raise ValueError("a takedown needs a reason (it is recorded in the manifest)")
    started = B.now()
    parent = read_manifest(store, name, from_version, storage_options)
    layout = MixtureLayout(store, name)
    id_set = set(map(str, ids))
    key = sha256_json({"parent": parent["data_key"], "files": [f["sha256"] for f in parent["files"]],
                       "ids": sorted(id_set), "urls": sorted(url_patterns)})[:20]
    prefix = layout.data_prefix(key)
    row_group_rows = parent["spec"]["output"]["row_group_rows"]

    files, removed_ids, per_file = [], set(), []
    lost: dict[tuple[str, str], dict[str, int]] = {}
    for entry in parent["files"]:
        fs, path = storage.filesystem(entry["uri"], storage_options)
        with fs.open(path, "rb") as f:
            table = pq.read_table(f)
        mask = excluded_mask(table, id_set, url_patterns)
        if not mask.any():
            files.append(entry)
            continue
        gone = table.filter(pa.array(mask))
        removed_ids.update(gone.column(S.ID).to_pylist())
        for group, tok in zip(gone.column(MIX_GROUP).to_pylist(), gone.column(N_TOKENS).to_pylist()):
            d = lost.setdefault((entry["phase"], group), {"rows": 0, "tokens": 0})
            d["rows"] += 1
            d["tokens"] += tok
        kept = table.filter(pa.array(~mask))
        data = parquet_bytes(kept, row_group_rows)
        uri = storage.join(prefix, entry["phase"], f"part-{entry['part']:05d}.parquet")
        storage.write_bytes(uri, data, storage_options)
        files.append({**entry, "uri": uri, "rows": kept.num_rows, "tokens": int(pc.sum(kept.column(N_TOKENS)).as_py() or 0),
                      "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
        per_file.append({"from": entry["uri"], "to": uri, "removed_rows": int(mask.sum())})

    if not lost:
        raise ValueError(f"takedown: no document of {name} {parent['version']} matches the given ids or URL patterns; "
                         "no version was made")
    phases = []
    for p in parent["phases"]:
        groups = []
        for g in p["groups"]:
            d = lost.get((p["name"], g["name"]), {"rows": 0, "tokens": 0})
            g = {**g, "realised_tokens": g["realised_tokens"] - d["tokens"], "realised_docs": g["realised_docs"] - d["rows"],
                 "removed_rows": d["rows"], "removed_tokens": d["tokens"]}
            g["epochs"] = round(g["realised_tokens"] / g["available_tokens"], 6) if g["available_tokens"] else 0.0
            groups.append(g)
        total = sum(g["realised_tokens"] for g in groups)
        for g in groups:
            g["realised_share"] = g["realised_tokens"] / total if total else 0.0
        phases.append({**p, "groups": groups, "realised_tokens": total, "docs": sum(g["realised_docs"] for g in groups)})

    body = {k: v for k, v in parent.items() if k not in ("version", "timestamps")}
    body.update({"files": files, "phases": phases, "data_key": key, "timestamps": {"started": started},
                 "derived_from": {"version": parent["version"], "manifest": layout.manifest(parent["version"])},
                 "takedown": {"reason": reason, "ids": sorted(id_set), "url_patterns": list(url_patterns),
                              "removed_rows": sum(d["rows"] for d in lost.values()),
                              "removed_tokens": sum(d["tokens"] for d in lost.values()),
                              "removed_unique_ids": len(removed_ids), "removed_ids": sorted(removed_ids), "files": per_file},
                 "notes": list(parent.get("notes", [])) + [f"takedown of {len(removed_ids)} documents from {parent['version']}: {reason}"]})
    version, manifest = B.commit(store, name, body, storage_options)
    return summary(manifest, store) | {"takedown": {k: manifest["takedown"][k] for k in ("removed_rows", "removed_tokens", "removed_unique_ids", "reason")}}
