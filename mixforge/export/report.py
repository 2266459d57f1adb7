"""What an export tells people: its `--json` summary, the text the CLI prints, the rows and markdown of
its Prefect artifacts, and the "Training-ready exports" section of the version's data card.

All of it is read from export manifests, so it can be rebuilt at any time from the store."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Any

from mixforge import storage
from mixforge.mixtures.versions import MixtureLayout

EXPORTS_HEADING = "## Training-ready exports"


def manifest_uri(manifest: Mapping[str, Any]) -> str:
    return storage.join(manifest["uri"], "manifest.json")


def export_key(manifest: Mapping[str, Any]) -> str:
    """The export's folder name: `<format>-<tokenizer key>[-<tag>]`."""
    return posixpath.basename(manifest["uri"].rstrip("/"))


def token_rows(manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per phase and group: documents and tokens exported (repeats included)."""
    return [
        {
            "version": manifest["version"],
            "export": export_key(manifest),
            "phase": phase["name"],
            "group": group["name"],
            "docs": group["docs"],
            "tokens": group["tokens"],
            "files": len(phase["files"]),
        }
        for phase in manifest["phases"]
        for group in phase["groups"]
    ]


def export_summary(manifest: Mapping[str, Any], store: str, seconds: float | None = None) -> dict[str, Any]:
    """The `--json` of `mixforge export` (contracts.ExportSummary)."""
    tokenizer = manifest["tokenizer"]
    summary = {
        "mixture": manifest["mixture"],
        "version": manifest["version"],
        "key": export_key(manifest),
        "uri": manifest["uri"],
        "manifest": manifest_uri(manifest),
        "format": manifest["export_format"],
        "tokenizer": tokenizer["key"],
        "dtype": manifest["dtype"],
        "seed": manifest["seed"],
        "tokens": manifest["tokens"],
        "docs": manifest["docs"],
        "files": len(manifest["files"]),
        "reused_files": manifest.get("reused_files", 0),
        "phases": [
            {"name": p["name"], "tokens": p["tokens"], "docs": p["docs"], "files": len(p["files"])}
            for p in manifest["phases"]
        ],
        "groups": [{k: v for k, v in row.items() if k not in ("version", "export")} for row in token_rows(manifest)],
        "card": MixtureLayout(store, manifest["mixture"]).readme(manifest["version"]),
    }
    if seconds is not None:
        summary["seconds"] = round(seconds, 3)
    return summary


def format_summary(summary: Mapping[str, Any]) -> str:
    """What `mixforge export` prints."""
    lines = [
        f"mixture {summary['mixture']} {summary['version']} exported as {summary['format']} "
        f"({summary['tokenizer']}, {summary['dtype']}, seed {summary['seed']}): "
        f"{summary['tokens']:,} tokens, {summary['docs']:,} documents, {summary['files']} files"
        + (f" ({summary['reused_files']} reused from the parent version's export)" if summary["reused_files"] else ""),
        f"  {'phase':<10} {'group':<20} {'docs':>12} {'tokens':>16}",
    ]
    for g in summary["groups"]:
        lines.append(f"  {g['phase']:<10} {g['group']:<20} {g['docs']:>12,} {g['tokens']:>16,}")
    lines += [f"files:     {summary['uri']}", f"manifest:  {summary['manifest']}", f"data card: {summary['card']}"]
    return "\n".join(lines)


def export_markdown(manifest: Mapping[str, Any], store: str) -> str:
    """One export: tokenizer, settings, tokens per phase and group, and its files."""
    t = manifest["tokenizer"]
    config = manifest["config"]
    lines = [
        f"### `{export_key(manifest)}`",
        "",
        f"- format: {manifest['export_format']}, dtype {manifest['dtype']}; tokenizer: {t['kind']} `{t['name']}` "
        f"(sha256 `{t['sha256'][:16]}`, vocabulary {t['vocab_size']:,}, EOS id {t['eos_id']}"
        + (f", BOS id {t['bos_id']}" if config.get("bos") and t.get("bos_id") is not None else "")
        + ")",
        f"- shuffle: global, seed {manifest['seed']} (same version and seed: byte-identical files); "
        f"tokens: {manifest['tokens']:,}, documents: {manifest['docs']:,}, files: {len(manifest['files'])}",
    ]
    metadata = config.get("metadata")
    if metadata:
        where = ", ".join(metadata.get("phases") or []) or "every phase"
        lines.append(f"- metadata conditioning: `{metadata['template']!r}` prepended in {where}")
    if manifest.get("derived_from"):
        lines.append(
            f"- derived from {manifest['derived_from']} ({manifest.get('reused_files', 0)} files reused untouched)"
        )
    lines += ["", "| phase | group | documents | tokens |", "|---|---|---:|---:|"]
    lines += [f"| {r['phase']} | {r['group']} | {r['docs']:,} | {r['tokens']:,} |" for r in token_rows(manifest)]
    lines += ["", "| phase | file | documents | tokens |", "|---|---|---:|---:|"]
    lines += [
        f"| {f['phase']} | `{posixpath.basename(f['uri'])}` | {f['docs']:,} | {f['tokens']:,} |"
        for f in manifest["files"]
    ]
    lines += [
        "",
        "Each file has a lineage sidecar (`part-NNNNN.lineage.parquet`): every document's token span, id, "
        "source, group, pool shard and row, and run. "
        f"`mixforge lineage --store {store} {manifest['mixture']} {manifest['version']} --file F --token N` "
        "names the documents behind a token (or `--step S --global-batch B --seq-len L`, reading the files "
        "of a phase in order).",
    ]
    return "\n".join(lines) + "\n"


def complete_exports(
    store: str, name: str, version: str, storage_options: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """The manifests of the version's complete exports (a manifest is written last)."""
    root = storage.join(MixtureLayout(store, name).version_dir(version), "export")
    fs, path = storage.filesystem(root, storage_options)
    names = sorted(
        posixpath.basename(posixpath.dirname(p)) for p in fs.glob(posixpath.join(path, "*", "manifest.json"))
    )
    return [storage.read_json(storage.join(root, n, "manifest.json"), storage_options) for n in names]


def update_version_card(store: str, name: str, version: str, storage_options: Mapping[str, Any] | None = None) -> str:
    """Rewrite the version's README.md with its "Training-ready exports" section listing every complete
    export (the card is documentation rebuilt from manifests; the version's data and manifest never
    change). Returns the new markdown."""
    from mixforge.mixtures.versions import ensure_card

    card = ensure_card(store, name, version, storage_options)
    body = card.split(f"\n{EXPORTS_HEADING}\n", 1)[0].rstrip("\n") + "\n"
    exports = complete_exports(store, name, version, storage_options)
    if exports:
        body += f"\n{EXPORTS_HEADING}\n\n" + "\n".join(export_markdown(m, store) for m in exports)
    storage.write_bytes(MixtureLayout(store, name).readme(version), body.encode(), storage_options)
    return body
