"""`mixforge explain`: one document's path through a run, read from the store.

For each stage of the run (in pipeline order): kept (with the columns that stage added: language,
quality scores and labels, duplicate cluster) or dropped (the `_removed/` drop columns: reason,
rule, value, threshold, shard and row), or not reached; then its duplicate cluster (which document
dedup kept for it, and which copies it dropped), the rows generated from it (`parent_id`, in runs
that read this one) and the mixture versions of the store that contain it.

Every read is a pyarrow.dataset scan of the few columns needed with a pushdown filter on the id, so a
large run costs a pass over its id columns, not over its text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds

from mixforge import schema as S
from mixforge import storage
from mixforge.config_errors import ConfigError
from mixforge.runs import RunLayout
from mixforge.schema import DUP_CLUSTER, DUP_COUNT, DUPLICATE_OF, PARENT_ID

_SKIP = {S.TEXT, S.META}  # never read: the bulk of a shard
MAX_LISTED = 50  # cluster members and children listed at most
SHOWN_COLUMNS = 8  # a kept stage's columns in the text output (--json has them all)


class NotInRun(ConfigError):
    """The run does not exist, or the document is in none of its stages (exit code 2)."""


def _files(fs, pattern: str) -> list[str]:
    return sorted(fs.glob(pattern))


def _dataset(fs, files: list[str]) -> ds.Dataset | None:
    """One dataset over `files` with their schemas unified (a `_removed/` file of an older version, or
    an empty one, has fewer columns)."""
    if not files:
        return None
    parts = [ds.dataset(f, format="parquet", filesystem=fs) for f in files]
    schema = pa.unify_schemas([p.schema for p in parts], promote_options="permissive")
    return ds.dataset(files, schema=schema, format="parquet", filesystem=fs)


def _find(dataset: ds.Dataset | None, column: str, value: str, columns: list[str], limit: int | None = None):
    """Rows whose `column` equals `value` (pushdown filter), with `columns` and the file they are in."""
    if dataset is None or column not in dataset.schema.names:
        return []
    wanted = [c for c in dict.fromkeys([column, *columns]) if c in dataset.schema.names]
    scanner = dataset.scanner(columns=[*wanted, "__filename"], filter=ds.field(column) == value)
    rows = scanner.head(limit).to_pylist() if limit is not None else scanner.to_table().to_pylist()
    return rows


def _plain(value: Any) -> Any:
    """JSON-safe scalar: NaN (nothing measured) as None."""
    return None if isinstance(value, float) and value != value else value


def _stage_names(fs, run_path: str, manifest: Mapping[str, Any]) -> list[str]:
    """The run's stage folders, in pipeline order (normalize, then the configured stages, then others)."""
    present = sorted(
        p.rstrip("/").rsplit("/", 1)[-1]
        for p in fs.ls(run_path, detail=False)
        if fs.isdir(p) and not p.rstrip("/").rsplit("/", 1)[-1].startswith(("_", "."))
    )
    configured = ["normalize", *manifest.get("config", {}).get("stages", [])]
    return [s for s in dict.fromkeys(configured) if s in present] + [s for s in present if s not in configured]


def explain(store: str, run_id: str, doc_id: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The `explain` summary of `doc_id` in run `run_id` (contracts.ExplainSummary)."""
    layout = RunLayout(store, run_id)
    fs, run_path = storage.filesystem(layout.dir, storage_options)
    try:
        manifest = storage.read_json(layout.manifest, storage_options)
    except FileNotFoundError:
        raise NotInRun(f"no run {run_id!r} in {store} (no {layout.manifest})") from None

    stages: list[dict[str, Any]] = []
    previous: set[str] = set(S.CORE_COLUMNS)
    cluster: dict[str, Any] | None = None
    gone = False
    for name in _stage_names(fs, run_path, manifest):
        stage_dir = f"{run_path}/{name}"
        kept_ds = _dataset(fs, _files(fs, f"{stage_dir}/part-*.parquet"))
        removed_ds = _dataset(fs, _files(fs, f"{stage_dir}/_removed/part-*.parquet"))
        columns = [] if kept_ds is None else [c for c in kept_ds.schema.names if c not in _SKIP]
        added = [c for c in columns if c not in previous]  # what this stage wrote
        previous |= set(columns)
        entry: dict[str, Any] = {"name": name}
        kept = _find(kept_ds, S.ID, doc_id, added, limit=1)
        if kept:
            row = kept[0]
            entry.update(outcome="kept", file=storage.full_uri(fs, row.pop("__filename")))
            row.pop(S.ID)
            entry["columns"] = {k: _plain(v) for k, v in row.items()}
            if DUP_CLUSTER in row:
                cluster = _cluster(removed_ds, doc_id, row[DUP_CLUSTER], row.get(DUP_COUNT), kept=doc_id)
        else:
            drop_cols = [*S.DROP_COLUMNS, DUP_CLUSTER, DUP_COUNT, DUPLICATE_OF]
            removed = _find(removed_ds, S.ID, doc_id, drop_cols, limit=1)
            if removed:
                row = removed[0]
                entry.update(outcome="dropped", file=storage.full_uri(fs, row.pop("__filename")))
                entry["drop"] = {
                    key: _plain(row.get(col))
                    for key, col in (
                        ("reason", S.DROP_REASON),
                        ("rule", S.DROP_RULE),
                        ("value", S.DROP_VALUE),
                        ("op", S.DROP_OP),
                        ("threshold", S.DROP_THRESHOLD),
                        ("shard", S.DROP_SHARD),
                        ("row", S.DROP_ROW),
                        ("unit", S.DROP_UNIT),
                        ("detail", S.DROP_DETAIL),
                    )
                }
                if row.get(DUPLICATE_OF) is not None:
                    cluster = _cluster(
                        removed_ds, doc_id, row.get(DUP_CLUSTER), row.get(DUP_COUNT), kept=row[DUPLICATE_OF]
                    )
                gone = True
            else:
                entry["outcome"] = "not reached" if gone else "absent"  # absent: e.g. its shard was quarantined
        stages.append(entry)
    if not any(s["outcome"] in ("kept", "dropped") for s in stages):
        raise NotInRun(f"document {doc_id!r} is not in run {run_id!r} ({store}): no stage kept or dropped it")
    final = next(s for s in reversed(stages) if s["outcome"] in ("kept", "dropped"))
    return {
        "run_id": run_id,
        "store": store,
        "id": doc_id,
        "outcome": final["outcome"],
        "stages": stages,
        "duplicate_cluster": cluster,
        "children": _children(fs, store, layout, doc_id, storage_options),
        "mixtures": _mixtures(store, doc_id, storage_options),
    }


def _cluster(removed_ds, doc_id: str, cluster_id: str | None, size: int | None, kept: str) -> dict[str, Any] | None:
    """The duplicate cluster of a document: its id, size, the document dedup kept, the copies it dropped."""
    if cluster_id is None or (size or 1) <= 1 and kept == doc_id:
        return None
    dropped = _find(removed_ds, DUP_CLUSTER, cluster_id, [S.ID], limit=MAX_LISTED)
    return {"cluster": cluster_id, "size": size, "kept": kept, "dropped": [r[S.ID] for r in dropped]}


def _children(fs, store: str, layout: RunLayout, doc_id: str, storage_options) -> list[dict[str, Any]]:
    """Rows generated from the document (`parent_id`), in this run and in runs that read it (rephrase)."""
    runs_dir = storage.filesystem(storage.join(store, "runs"), storage_options)[1]
    here = storage.filesystem(layout.dir, storage_options)[1]
    found: list[dict[str, Any]] = []
    for manifest_path in _files(fs, f"{runs_dir}/*/_run.json"):
        run_path = manifest_path.rsplit("/", 1)[0]
        run_id = run_path.rsplit("/", 1)[-1]
        if run_path != here:
            with fs.open(manifest_path, "rb") as f:
                inputs = json.load(f).get("inputs", [])
            if not any(here in str(i.get("uri", "")) for i in inputs):
                continue
        for part_dir in sorted({p.rsplit("/", 1)[0] for p in _files(fs, f"{run_path}/*/part-*.parquet")}):
            dataset = _dataset(fs, _files(fs, f"{part_dir}/part-*.parquet"))
            for row in _find(dataset, PARENT_ID, doc_id, [S.ID, "rephrase_style"], limit=MAX_LISTED):
                found.append(
                    {
                        "id": row[S.ID],
                        "run_id": run_id,
                        "stage": part_dir.rsplit("/", 1)[-1],
                        **({"style": row["rephrase_style"]} if row.get("rephrase_style") is not None else {}),
                    }
                )
    return found[:MAX_LISTED]


def _mixtures(store: str, doc_id: str, storage_options) -> list[dict[str, str]]:
    """The mixture versions of the store whose data files hold the document (each file scanned once)."""
    from mixforge.mixtures import versions as V

    per_version: list[tuple[str, str, list[str]]] = []
    for name in V.list_mixtures(store, storage_options):
        layout = V.MixtureLayout(store, name)
        for version in V.list_versions(layout, storage_options):
            try:
                manifest = storage.read_json(layout.manifest(version), storage_options)
            except FileNotFoundError:
                continue
            per_version.append((name, version, V.data_files(manifest)))
    uris = sorted({u for _, _, files in per_version for u in files})
    if not uris:
        return []
    fs, _ = storage.filesystem(uris[0], storage_options)
    paths = {storage.filesystem(u, storage_options)[1]: u for u in uris}
    holding = {paths.get(r["__filename"], r["__filename"]) for r in _find(_dataset(fs, list(paths)), S.ID, doc_id, [])}
    return [{"name": n, "version": v} for n, v, files in per_version if holding & set(files)]


def format_explain(summary: Mapping[str, Any]) -> str:
    """The summary for people: one line per stage, then cluster, children and mixtures."""
    lines = [f"document {summary['id']!r} in run {summary['run_id']}: {summary['outcome']}"]
    for stage in summary["stages"]:
        outcome = stage["outcome"]
        if outcome == "dropped":
            drop = stage["drop"]
            lines.append(f"  {stage['name']:<10} dropped: {drop.get('reason')} ({drop.get('detail')})")
        elif outcome == "kept":
            columns = stage.get("columns", {})
            cols = ", ".join(f"{k}={_short(v)}" for k, v in list(columns.items())[:SHOWN_COLUMNS])
            more = f" (+{len(columns) - SHOWN_COLUMNS} more: --json)" if len(columns) > SHOWN_COLUMNS else ""
            lines.append(f"  {stage['name']:<10} kept" + (f": {cols}{more}" if cols else ""))
        else:
            lines.append(f"  {stage['name']:<10} {outcome}")
    c = summary.get("duplicate_cluster")
    if c:
        dropped = ", ".join(c["dropped"]) or "none"
        lines.append(f"  duplicate cluster {c['cluster']!r} of {c['size']}: kept {c['kept']!r}; dropped {dropped}")
    for child in summary["children"]:
        lines.append(f"  generated: {child['id']} (run {child['run_id']}, {child['stage']})")
    mixtures = ", ".join(f"{m['name']} {m['version']}" for m in summary["mixtures"]) or "none"
    lines.append(f"  mixtures containing it: {mixtures}")
    return "\n".join(lines)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return text if len(text) <= 40 else text[:39] + "…"


def print_explain(summary: Mapping[str, Any], as_json: bool) -> None:
    """The CLI's printer: the contract-checked JSON, or the lines for people."""
    if as_json:
        from mixforge import contracts

        contracts.print_json(summary, contracts.ExplainSummary)
    else:
        print(format_explain(summary))
