"""The data card of a mixture version: README.md with plots, beside its manifest.

Statistics are read from the version's data files (annotation columns only, at most
`SAMPLE_ROWS` rows per file), so a card always describes exactly what the manifest lists.
They are taken *before* the manifest is committed: the card's figures go into the manifest
(`card.stats`) and its plots under the build's data prefix (`card.plots`), so a committed version
always has its card: README.md beside the manifest is a rendering of the manifest alone, and
`versions.ensure_card` rebuilds it (and copies the plots) when a build stopped between the commit and
writing it.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mixforge import schema as S
from mixforge import storage
from mixforge.schema import MIX_GROUP, N_TOKENS
from mixforge.shards import parquet_file

SAMPLE_ROWS = 200_000
PLOTS = ("weights.png", "lengths.png", "quality.png", "sources.png")


def file_stats(manifest: dict[str, Any], storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Per phase: tokens by source, token lengths and quality scores of (a sample of) its rows."""
    phases: dict[str, dict[str, Any]] = {}
    for entry in manifest["files"]:
        with parquet_file(entry["uri"], storage_options) as pf:
            names = pf.schema_arrow.names
            cols = [c for c in names if c in (N_TOKENS, S.SOURCE, MIX_GROUP) or c.startswith("quality_")]
            table = pf.read(columns=cols, use_threads=False)
        p = phases.setdefault(entry["phase"], {"sources": {}, "lengths": [], "quality": {}})
        if S.SOURCE in table.column_names:
            by_source = (
                pa.table(
                    {
                        "s": pc.fill_null(table.column(S.SOURCE).cast(pa.string()), "(none)"),
                        "t": table.column(N_TOKENS),
                    }
                )
                .group_by("s")
                .aggregate([("t", "sum"), ("t", "count")])
            )
            for s, t, n in zip(*(by_source.column(c).to_pylist() for c in ("s", "t_sum", "t_count"))):
                d = p["sources"].setdefault(str(s), {"tokens": 0, "docs": 0})
                d["tokens"] += int(t or 0)
                d["docs"] += int(n)
        stride = max(1, table.num_rows // SAMPLE_ROWS)
        p["lengths"].append(table.column(N_TOKENS).to_numpy()[::stride])
        for c in table.column_names:
            if c.startswith("quality_"):
                values = table.column(c).to_numpy(zero_copy_only=False).astype(float)[::stride]
                p["quality"].setdefault(c, []).append(values[~np.isnan(values)])
    for p in phases.values():
        p["lengths"] = np.concatenate(p["lengths"]) if p["lengths"] else np.zeros(0)
        p["quality"] = {c: np.concatenate(v) for c, v in p["quality"].items()}
    return phases


def weight_bars(manifest: dict[str, Any]) -> tuple[list[str], dict[str, list[float]]]:
    """weights.png's data: a label per group, and its two bars in % of tokens: requested (the
    spec's weights) beside effective (after empty or short groups' shares went to the others). The
    realised share is within tolerance_pp of the effective one; the card's table has all three."""
    labels, requested, effective = [], [], []
    multi = len(manifest["phases"]) > 1
    for phase in manifest["phases"]:
        for g in phase["groups"]:
            labels.append(f"{phase['name']}/{g['name']}" if multi else g["name"])
            requested.append(100 * g["requested_share"])
            effective.append(100 * g["target_share"])
    return labels, {"requested": requested, "effective": effective}


def render_plots(manifest: dict[str, Any], stats: dict[str, Any]) -> dict[str, bytes]:
    """PNG bytes by file name: group weights, length and quality distributions, source composition."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, bytes] = {}

    def save(fig, name: str) -> None:
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})
        plt.close(fig)
        out[name] = buf.getvalue()

    labels, bars = weight_bars(manifest)
    fig, ax = plt.subplots(figsize=(max(5, 0.8 * len(labels) + 2), 3.5))
    x = np.arange(len(labels))
    for offset, (label, heights) in zip((-0.2, 0.2), bars.items()):
        ax.bar(x + offset, heights, 0.4, label=label)
    ax.set_xticks(x, labels, rotation=30, ha="right")
    ax.set_ylabel("% of tokens")
    ax.set_title("Group weights")
    ax.legend()
    save(fig, "weights.png")

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, p in stats.items():
        if len(p["lengths"]):
            ax.hist(np.log10(np.maximum(p["lengths"], 1)), bins=40, alpha=0.6, label=name)
    ax.set_xlabel("log10(tokens per document)")
    ax.set_ylabel("documents")
    ax.set_title("Document lengths")
    ax.legend()
    save(fig, "lengths.png")

    qcols = sorted({c for p in stats.values() for c in p["quality"]})
    fig, axes = plt.subplots(1, max(1, len(qcols)), figsize=(max(6, 4 * len(qcols)), 3.5), squeeze=False)
    for ax, c in zip(axes[0], qcols):
        for name, p in stats.items():
            if len(p["quality"].get(c, [])):
                ax.hist(p["quality"][c], bins=40, alpha=0.6, label=name)
        ax.set_title(c)
        ax.legend()
    if not qcols:
        axes[0][0].text(0.5, 0.5, "no quality_* columns in the pool", ha="center", va="center")
        axes[0][0].set_axis_off()
    save(fig, "quality.png")

    sources = {}
    for p in stats.values():
        for s, d in p["sources"].items():
            sources[s] = sources.get(s, 0) + d["tokens"]
    items = sorted(sources.items(), key=lambda kv: -kv[1])[:25]
    fig, ax = plt.subplots(figsize=(6, max(2.5, 0.35 * len(items) + 1)))
    ax.barh([s for s, _ in items][::-1], [t for _, t in items][::-1])
    ax.set_xlabel("tokens")
    ax.set_title("Source composition")
    save(fig, "sources.png")
    return out


def licence_of(source: str, licenses: Mapping[str, str] | list[dict[str, str]]) -> str:
    """`licenses` as a spec holds it, or as a manifest stores it (a list of {source, licence} since 0.4)."""
    if isinstance(licenses, list):
        licenses = {entry["source"]: entry["licence"] for entry in licenses}
    return licenses.get(source) or licenses.get("*") or "undeclared"


def summary_stats(stats: dict[str, Any]) -> dict[str, Any]:
    """The figures the card prints (JSON-safe, small): per phase, tokens and docs by source and
    document length percentiles."""
    out = {}
    for name, p in stats.items():
        lengths = (
            [round(float(x), 3) for x in np.percentile(p["lengths"], [10, 50, 90])] if len(p["lengths"]) else None
        )
        out[name] = {"sources": {s: dict(d) for s, d in sorted(p["sources"].items())}, "length_p10_p50_p90": lengths}
    return out


def prepare_card(
    body: dict[str, Any], data_prefix: str, storage_options: Mapping[str, Any] | None = None, plots: bool = True
) -> dict[str, Any]:
    """Before the commit: the card's statistics (for the manifest) and its plots, written under
    the data prefix; returns the manifest's `card` entry. `plots=False`: statistics only (a proxy's
    sample in an optimisation: the plots cost more than the build)."""
    stats = file_stats(body, storage_options)
    rendered = render_plots(body, stats) if plots else {}
    plots = {}
    for name, png in rendered.items():
        uri = storage.join(data_prefix, "_card", name)
        storage.write_bytes(uri, png, storage_options)
        plots[name] = uri
    return {"stats": summary_stats(stats), "plots": plots}


def markdown(
    manifest: dict[str, Any], stats: dict[str, Any] | None = None, plots: bool = True, image_base: str = ""
) -> str:
    """The card's markdown from the manifest (`stats`: summary_stats, default the manifest's own)."""
    if stats is None:
        stats = manifest["card"]["stats"]
    spec = manifest["spec"]
    total_tokens = sum(f["tokens"] for f in manifest["files"])
    total_rows = sum(f["rows"] for f in manifest["files"])
    lines = [
        f"# Mixture `{manifest['name']}` {manifest['version']}",
        "",
        f"- created: {manifest['timestamps']['committed']}",
        f"- tokens: {total_tokens:,} ({spec['tokenizer']['kind']} `{spec['tokenizer']['name']}`), "
        f"documents: {total_rows:,}, files: {len(manifest['files'])}",
        f"- seed: {manifest['seed']}, spec sha256: `{manifest['spec_hash'][:16]}`, "
        f"code: mixforge {manifest['code_version']}",
        f"- pool: {', '.join(f'`{p}`' for p in spec['pool'])} (run ids: "
        f"{', '.join(manifest['pool']['run_ids']) or 'n/a'}; {len(manifest['pool']['shards'])} shards)",
        "- manifest: `manifest.json` (lists every data file; load through it)",
    ]
    if manifest.get("derived_from"):
        d = manifest["derived_from"]
        t = manifest["takedown"]
        lines += [
            f"- derived from {d['version']} minus a takedown: {t['removed_rows']:,} rows "
            f"({t['removed_unique_ids']:,} documents) removed; reason: {t['reason']}"
        ]
    optimization = (manifest.get("provenance") or {}).get("optimization")
    if optimization:
        fits = ", ".join(
            f"{t}: {r}, CV Spearman "
            + ("n/a" if (rho := optimization["cv_spearman"].get(t)) is None else f"{rho:.3f}")
            for t, r in optimization["regressors"].items()
        )
        lines += [
            f"- weights chosen by optimisation run `{optimization['run_id']}` ({optimization['name']}): "
            f"{optimization['swarm']} proxies, regressor per target ({fits}); run manifest: "
            f"`{optimization['manifest']}`"
        ]
        if optimization.get("temperatures"):
            lines.append(
                "- quality-sampling temperatures chosen by the same search (QuaDMix): "
                + ", ".join(f"{g}: T={t:.3g}" for g, t in optimization["temperatures"].items())
            )
    for phase in manifest["phases"]:
        lines += [
            "",
            f"## Phase `{phase['name']}`: {phase['realised_tokens']:,} of {phase['budget_tokens']:,} tokens",
            "",
            "| group | sampling | requested | effective | realised | tokens | docs | unique docs | epochs "
            "| max epochs | short |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for g in phase["groups"]:
            lines.append(
                f"| {g['name']} | {g['sampling']} | {g['requested_share']:.2%} | {g['target_share']:.2%} "
                f"| {g['realised_share']:.2%} | {g['realised_tokens']:,} | "
                f"{g['realised_docs']:,} | {g['unique_docs']:,} | {g['epochs']:.3f} "
                f"| {g['max_epochs']:g} | {'yes' if g['short'] else ''} |"
            )
    lines += [
        "",
        "Requested: the spec's weights, normalised over the phase. Effective: the shares planned after a group "
        "allowed to be empty or short of tokens (max_epochs) gave its share to the others. Realised: the tokens "
        "drawn.",
    ]
    sources = {}
    for p in stats.values():
        for s, d in p["sources"].items():
            acc = sources.setdefault(s, {"tokens": 0, "docs": 0})
            acc["tokens"] += d["tokens"]
            acc["docs"] += d["docs"]
    lines += [
        "",
        "## Sources and licences",
        "",
        "| source | tokens | share | docs | licence |",
        "|---|---:|---:|---:|---|",
    ]
    for s, d in sorted(sources.items(), key=lambda kv: -kv[1]["tokens"]):
        lines.append(
            f"| {s} | {d['tokens']:,} | {d['tokens'] / max(total_tokens, 1):.2%} "
            f"| {d['docs']:,} | {licence_of(s, spec.get('licenses', {}))} |"
        )
    for name, p in stats.items():
        if p["length_p10_p50_p90"]:
            q = p["length_p10_p50_p90"]
            lines += [
                "",
                f"Phase `{name}` document length (tokens): p10 {q[0]:,.0f}, median {q[1]:,.0f}, p90 {q[2]:,.0f}.",
            ]
    if plots and manifest.get("card", {}).get("plots", True):  # a card built without plots links none
        lines += ["", "## Plots", ""] + [f"![{p[:-4]}]({image_base}{p})" for p in PLOTS]
    if manifest.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in manifest["notes"]]
    files = manifest["files"]
    lines += [
        "",
        "## Loading",
        "",
        "```python",
        "import datasets, json, fsspec",
        "manifest = json.load(fsspec.open('<this folder>/manifest.json').open())",
        "ds = datasets.load_dataset('parquet', data_files=[f['uri'] for f in manifest['files']], split='train')",
        "```",
        "",
        f"or `mixforge mixtures show {manifest['name']} {manifest['version']} --files` ({len(files)} files).",
    ]
    return "\n".join(lines) + "\n"


def write_card(manifest: dict[str, Any], version_dir: str, storage_options: Mapping[str, Any] | None = None) -> str:
    """Write README.md and its plots into the version folder; returns the card's markdown."""
    if "card" in manifest:
        text = markdown(manifest)
        plots = {}
        for name, uri in manifest["card"]["plots"].items():
            plots[name] = storage.read_bytes(uri, storage_options)
    else:  # a manifest from before cards were committed with it: read the data files
        stats = file_stats(manifest, storage_options)
        text = markdown(manifest, summary_stats(stats))
        plots = render_plots(manifest, stats)
    for name, png in plots.items():
        storage.write_bytes(storage.join(version_dir, name), png, storage_options)
    storage.write_bytes(storage.join(version_dir, "README.md"), text.encode(), storage_options)
    return text
