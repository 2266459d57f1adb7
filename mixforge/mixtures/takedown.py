"""Takedowns: a new version derived from an existing one minus documents, without resampling.

Each data file of the parent is one call of `takedown_file` on the executor: it reads the file's
id and url columns and, only when some row is excluded, the whole file, which it writes again
without those rows, in the same order (files are immutable: untouched ones are listed again as they
are). The driver keeps each file's manifest entry and what it lost (rows and tokens per group, the
ids removed), and records in the manifest what was excluded, why, and how much each group lost.
Which rows an exclusion matches is the planner's own rule (pool.excluded_expr), so a takedown and
every later build (exclusions.with_standing_takedowns) leave out the same documents.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from mixforge import schema as S
from mixforge import storage
from mixforge.executor import Executor, SerialExecutor
from mixforge.mixtures.plan import epochs_of, realised_shares
from mixforge.mixtures.pool import excluded_rows
from mixforge.mixtures.spec import Exclusions
from mixforge.mixtures.versions import MixtureLayout, commit, now, read_manifest, summary
from mixforge.mixtures.write import parquet_bytes
from mixforge.runs import sha256_json
from mixforge.schema import MIX_GROUP, N_TOKENS
from mixforge.shards import parquet_file, read_parquet

# what a takedown's `mix` summary adds to a version's summary (the manifest holds the rest)
TAKEDOWN_FIGURES = ("removed_rows", "removed_tokens", "removed_unique_ids", "reason")


def takedown_file(
    entry: dict[str, Any],
    exclude: Exclusions,
    prefix: str,
    row_group_rows: int,
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One data file of the parent version: its manifest entry in the derived version (the same entry
    when no row is excluded, else a new file under `prefix`) and what it lost."""
    with parquet_file(entry["uri"], storage_options) as pf:
        probe = pf.read(columns=[c for c in (S.ID, S.URL) if c in pf.schema_arrow.names], use_threads=False)
    mask = excluded_rows(probe, exclude)
    if not mask.any():
        return {"entry": entry, "removed_rows": 0, "removed_ids": [], "lost": {}}
    table = read_parquet(entry["uri"], storage_options)
    gone = table.filter(pa.array(mask))
    lost = (
        pl.from_arrow(gone.select([MIX_GROUP, N_TOKENS]))
        .group_by(MIX_GROUP)
        .agg(pl.len().alias("rows"), pl.col(N_TOKENS).sum().alias("tokens"))
    )
    kept = table.filter(pa.array(~mask))
    data = parquet_bytes(kept, row_group_rows)
    uri = storage.join(prefix, entry["phase"], f"part-{entry['part']:05d}.parquet")
    storage.write_bytes(uri, data, storage_options)
    return {
        "entry": {
            **entry,
            "uri": uri,
            "rows": kept.num_rows,
            "tokens": int(pc.sum(kept.column(N_TOKENS)).as_py() or 0),
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        },
        "removed_rows": int(mask.sum()),
        "removed_ids": sorted(set(gone.column(S.ID).to_pylist())),
        "lost": {group: (int(rows), int(tokens)) for group, rows, tokens in lost.iter_rows()},
    }


def _phases_after(parent: dict[str, Any], lost: Mapping[tuple[str, str], tuple[int, int]]) -> list[dict[str, Any]]:
    """The parent's phases with each group's lost rows and tokens taken off (shares and epochs as the
    planner computes them)."""
    phases = []
    for p in parent["phases"]:
        groups = []
        for g in p["groups"]:
            rows, tokens = lost.get((p["name"], g["name"]), (0, 0))
            realised = g["realised_tokens"] - tokens
            groups.append(
                {
                    **g,
                    "realised_tokens": realised,
                    "realised_docs": g["realised_docs"] - rows,
                    "removed_rows": rows,
                    "removed_tokens": tokens,
                    "epochs": round(epochs_of(realised, g["available_tokens"]), 6),
                }
            )
        total, shares = realised_shares([g["realised_tokens"] for g in groups])
        for g, share in zip(groups, shares):
            g["realised_share"] = share
        phases.append(
            {**p, "groups": groups, "realised_tokens": total, "docs": sum(g["realised_docs"] for g in groups)}
        )
    return phases


def derive_manifest(
    store: str,
    name: str,
    from_version: str | None,
    *,
    ids: Sequence[str] = (),
    url_patterns: Sequence[str] = (),
    reason: str,
    storage_options: Mapping[str, Any] | None = None,
    executor: Executor | None = None,
) -> dict[str, Any]:
    """Commit a new version of `name`: `from_version` (default: latest) minus `ids` and URLs matching
    `url_patterns` (globs); returns its manifest. Each data file is a call on `executor` (in-process by default)."""
    if not ids and not url_patterns:
        raise ValueError("a takedown needs ids or URL patterns")
    if not reason.strip():
        raise ValueError("a takedown needs a reason (it is recorded in the manifest)")
    executor = executor or SerialExecutor()
    started = now()
    parent = read_manifest(store, name, from_version, storage_options)
    layout = MixtureLayout(store, name)
    id_set = set(map(str, ids))
    exclude = Exclusions(ids=sorted(id_set), url_patterns=list(url_patterns))
    key = sha256_json(
        {
            "parent": parent["data_key"],
            "files": [f["sha256"] for f in parent["files"]],
            "ids": sorted(id_set),
            "urls": sorted(url_patterns),
        }
    )[:20]
    prefix = layout.data_prefix(key)
    row_group_rows = parent["spec"]["output"]["row_group_rows"]

    results = executor.map(
        takedown_file,
        [(entry, exclude, prefix, row_group_rows, storage_options) for entry in parent["files"]],
        step="mix-takedown",
        storage_options=storage_options,
    )
    removed_ids: set[str] = set()
    lost: dict[tuple[str, str], tuple[int, int]] = {}
    per_file = []
    for entry, r in zip(parent["files"], results):
        if not r["removed_rows"]:
            continue
        removed_ids.update(r["removed_ids"])
        for group, (rows, tokens) in r["lost"].items():
            before = lost.get((entry["phase"], group), (0, 0))
            lost[(entry["phase"], group)] = (before[0] + rows, before[1] + tokens)
        per_file.append({"from": entry["uri"], "to": r["entry"]["uri"], "removed_rows": r["removed_rows"]})
    if not lost:
        raise ValueError(
            f"takedown: no document of {name} {parent['version']} matches the given ids or URL patterns; "
            "no version was made"
        )

    body = {k: v for k, v in parent.items() if k not in ("version", "timestamps")}
    body.update(
        {
            "files": [r["entry"] for r in results],
            "phases": _phases_after(parent, lost),
            "data_key": key,
            "timestamps": {"started": started},
            "derived_from": {"version": parent["version"], "manifest": layout.manifest(parent["version"])},
            "takedown": {
                "reason": reason,
                "ids": sorted(id_set),
                "url_patterns": list(url_patterns),
                "removed_rows": sum(rows for rows, _ in lost.values()),
                "removed_tokens": sum(tokens for _, tokens in lost.values()),
                "removed_unique_ids": len(removed_ids),
                "removed_ids": sorted(removed_ids),
                "files": per_file,
            },
            "notes": list(parent.get("notes", []))
            + [f"takedown of {len(removed_ids)} documents from {parent['version']}: {reason}"],
        }
    )
    _, manifest = commit(store, name, body, storage_options)
    return manifest


def takedown_figures(manifest: dict[str, Any]) -> dict[str, Any]:
    """What a takedown removed, as its `mix` summary reports it."""
    return {k: manifest["takedown"][k] for k in TAKEDOWN_FIGURES}


def takedown_summary(manifest: dict[str, Any], store: str) -> dict[str, Any]:
    """The `mix` summary of a version made by a takedown (the version's summary plus `takedown`)."""
    return summary(manifest, store) | {"takedown": takedown_figures(manifest)}


def derive_version(
    store: str,
    name: str,
    from_version: str | None,
    *,
    ids: Sequence[str] = (),
    url_patterns: Sequence[str] = (),
    reason: str,
    storage_options: Mapping[str, Any] | None = None,
    executor: Executor | None = None,
) -> dict[str, Any]:
    """`derive_manifest`, returning the new version's `mix` summary."""
    manifest = derive_manifest(
        store,
        name,
        from_version,
        ids=ids,
        url_patterns=url_patterns,
        reason=reason,
        storage_options=storage_options,
        executor=executor,
    )
    return takedown_summary(manifest, store)
