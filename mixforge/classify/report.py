"""The classify stage's report: score histograms per source, label / cluster distributions.

The figures are counted as the stage writes its columns (`table_figures`, summed by the runner
over batches and shards: `ShardContext.figures`), so the report needs no second pass over the
output; `shard_report` reads a finished shard's columns back, for shards whose stats predate
that. `final_report` caps the sources shown, the PNGs go beside the stage's `_stats.json`
(`<stage dir>/_plots/*.png`) and `markdown_report` renders every figure's numbers. Prefect
artifacts are made from it in tasks/reporting.py.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mixforge import schema as S
from mixforge import storage
from mixforge.shards import read_documents
from mixforge.stage import add_figures

OTHER = "(other)"


def table_figures(table: pa.Table, scores: Sequence[str], labels: Sequence[str], bins: int) -> dict:
    """One table's figures: documents per source, histogram counts (`bins` over [0, 1]) per source
    for every score column, value counts for every label column. Additive (`add_figures`)."""
    if table.num_rows == 0:
        return {}
    sources = table.column(S.SOURCE)
    if not pa.types.is_string(sources.type):  # e.g. dictionary-encoded, as Parquet may return it
        sources = sources.cast(pa.string())
    sources = pc.fill_null(sources, "")
    names = pc.unique(sources)
    codes = pc.index_in(sources, value_set=names).to_numpy(zero_copy_only=False).astype(np.int64)
    names = names.to_pylist()
    edges = np.linspace(0.0, 1.0, bins + 1)
    histograms = {}
    for col in scores:
        vals = pc.fill_null(table.column(col), float("nan")).to_numpy(zero_copy_only=False).astype(np.float64)
        valid = ~np.isnan(vals)
        # the bin np.histogram(edges) would use: edges[i] <= v < edges[i + 1], 1.0 in the last bin
        which = np.clip(np.searchsorted(edges, np.clip(vals[valid], 0.0, 1.0), side="right") - 1, 0, bins - 1)
        counts = np.bincount(codes[valid] * bins + which, minlength=len(names) * bins).reshape(len(names), bins)
        histograms[col] = {name: counts[i].tolist() for i, name in enumerate(names)}
    distributions = {}
    for col in labels:
        values = table.column(col)
        if not pa.types.is_string(values.type):
            values = values.cast(pa.string())
        counted = pc.value_counts(pc.fill_null(values, "None"))
        distributions[col] = dict(zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist()))
    return {
        "docs_by_source": dict(zip(names, np.bincount(codes, minlength=len(names)).tolist())),
        "histograms": histograms,
        "distributions": distributions,
    }


def shard_report(
    uri: str, scores: Sequence[str], labels: Sequence[str], bins: int, storage_options: Mapping[str, Any] | None = None
) -> dict:
    """The figures of a finished shard, from its `source`, score and label columns (read back)."""
    figures: dict = {}
    for table in read_documents(uri, columns=[S.SOURCE, *scores, *labels], storage_options=storage_options):
        figures = add_figures(figures, table_figures(table, scores, labels, bins))
    return figures


def final_report(figures: dict, scores: Sequence[str], labels: Sequence[str], bins: int, max_sources: int) -> dict:
    """The report from the stage's summed figures; sources beyond the `max_sources` largest are
    grouped as `(other)`."""
    docs = figures.get("docs_by_source", {})
    top = [s for s, _ in sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))[:max_sources]]
    shown = set(top)
    histograms = {}
    for c in scores:
        hist = {s: np.asarray(h, dtype=np.int64) for s, h in figures.get("histograms", {}).get(c, {}).items()}
        per = {s: hist[s].tolist() for s in top if s in hist}
        rest = [h for s, h in hist.items() if s not in shown]
        if rest:
            per[OTHER] = np.sum(rest, axis=0).tolist()
        total = np.sum(list(hist.values()), axis=0) if hist else np.zeros(bins, dtype=np.int64)
        histograms[c] = {"all": total.tolist(), "by_source": per, "mean": _hist_mean(total, bins)}
    docs_by_source = {s: docs[s] for s in top}
    if len(docs) > len(top):
        docs_by_source[OTHER] = sum(n for s, n in docs.items() if s not in shown)
    distributions = {c: figures.get("distributions", {}).get(c, {}) for c in labels}
    return {
        "bins": bins,
        "bin_edges": np.round(np.linspace(0, 1, bins + 1), 6).tolist(),
        "docs": sum(docs.values()),
        "docs_by_source": docs_by_source,
        "histograms": histograms,
        "distributions": {
            c: dict(sorted(v.items(), key=lambda kv: (-kv[1], kv[0]))) for c, v in distributions.items()
        },
    }


def _hist_mean(counts: np.ndarray, bins: int) -> float | None:
    total = counts.sum()
    if not total:
        return None
    centres = (np.arange(bins) + 0.5) / bins
    return round(float((counts * centres).sum() / total), 4)


def write_plots(
    report: dict,
    plots_dir: str,
    storage_options: Mapping[str, Any] | None = None,
    cluster_terms: Mapping[int, Sequence[str]] | None = None,
) -> list[str]:
    """PNG per score column (histograms per source) and per label column (distribution); returns their URIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    edges = np.asarray(report["bin_edges"])
    centres = (edges[:-1] + edges[1:]) / 2
    width = edges[1] - edges[0]
    for col, h in report["histograms"].items():
        per = h["by_source"]
        fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
        for src, counts in per.items():
            counts = np.asarray(counts, dtype=float)
            share = counts / counts.sum() if counts.sum() else counts
            ax.step(centres, share, where="mid", label=f"{src} ({int(counts.sum()):,})")
        ax.set_xlim(0, 1)
        ax.set_xlabel(col)
        ax.set_ylabel("share of the source's documents")
        ax.set_title(f"{col}: distribution per source (bin width {width:.2f})")
        if per:
            ax.legend(fontsize=7, loc="best")
        written.append(_save(fig, storage.join(plots_dir, f"hist_{_safe(col)}.png"), storage_options))
        plt.close(fig)
    for col, dist in report["distributions"].items():
        items = list(dist.items())[:50]
        fig, ax = plt.subplots(figsize=(8, max(3.0, 0.3 * len(items) + 1)), dpi=100)
        names = [_label_name(col, k, cluster_terms) for k, _ in items]
        ax.barh(range(len(items)), [v for _, v in items])
        ax.set_yticks(range(len(items)), names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("documents")
        ax.set_title(f"{col}: distribution")
        fig.tight_layout()
        written.append(_save(fig, storage.join(plots_dir, f"dist_{_safe(col)}.png"), storage_options))
        plt.close(fig)
    return written


def _label_name(col: str, key: str, cluster_terms) -> str:
    if col == "cluster_id" and cluster_terms is not None:
        terms = cluster_terms.get(int(key)) or []
        return f"{key}: {', '.join(terms[:4])}"
    return str(key)


def _save(fig, uri: str, storage_options) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    storage.write_bytes(uri, buf.getvalue(), storage_options)
    return uri


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def markdown_report(
    report: dict,
    models: Mapping[str, dict],
    plots: Sequence[str] = (),
    cluster_terms: Mapping[int, Sequence[str]] | None = None,
    title: str = "classify",
) -> str:
    lines = [
        f"# {title}",
        "",
        f"{report['docs']:,} documents scored.",
        "",
        "## Models",
        "",
        "| name | kind | version | uri |",
        "|---|---|---|---|",
    ]
    for name, m in models.items():
        lines.append(f"| {name} | {m['kind']} | {m['version']} | `{m['uri']}` |")
    edges = report["bin_edges"]
    for col, h in report["histograms"].items():
        lines += ["", f"## `{col}`: histogram per source (mean of all: {h['mean']})", ""]
        header = ["source", "docs"] + [f"{edges[i]:.2f}-{edges[i + 1]:.2f}" for i in range(len(edges) - 1)]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        rows = {"(all)": h["all"], **h["by_source"]}
        for src, counts in rows.items():
            lines.append(f"| {src} | {sum(counts):,} | " + " | ".join(str(c) for c in counts) + " |")
    for col, dist in report["distributions"].items():
        total = sum(dist.values()) or 1
        lines += ["", f"## `{col}`: distribution", ""]
        if col == "cluster_id" and cluster_terms is not None:
            lines += ["| cluster | docs | share | top terms |", "|---:|---:|---:|---|"]
            for key, n in dist.items():
                lines.append(f"| {key} | {n:,} | {n / total:.1%} | {', '.join(cluster_terms.get(int(key), []))} |")
        else:
            lines += ["| value | docs | share |", "|---|---:|---:|"]
            lines += [f"| {key} | {n:,} | {n / total:.1%} |" for key, n in dist.items()]
    if plots:
        lines += ["", "## Plots", ""] + [f"- `{p}`" for p in plots]
    return "\n".join(lines) + "\n"
