"""The classify stage's report: score histograms per source, label / cluster distributions.

Computed shard by shard from the stage's output, reading only the `source`, score and label
columns (`shard_report`), merged on the driver (`merge_reports`), drawn as PNGs beside the
stage's `_stats.json` (`<stage dir>/_plots/*.png`) and rendered as markdown with every figure's
numbers (`markdown_report`). Prefect artifacts are made from it in tasks/classify.py.
"""

from __future__ import annotations

import io
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow.compute as pc

from mixforge import schema as S
from mixforge import storage
from mixforge.shards import read_documents

OTHER = "(other)"


def shard_report(uri: str, scores: Sequence[str], labels: Sequence[str], bins: int,
                 storage_options: Mapping[str, Any] | None = None) -> dict:
    """Histogram counts (bins over [0, 1]) per source for every score column; value counts per label column."""
    docs: Counter = Counter()
    hist: dict[str, dict[str, np.ndarray]] = {c: {} for c in scores}
    values: dict[str, Counter] = {c: Counter() for c in labels}
    edges = np.linspace(0.0, 1.0, bins + 1)
    for table in read_documents(uri, columns=[S.SOURCE, *scores, *labels], storage_options=storage_options):
        if table.num_rows == 0:
            continue
        sources = pc.fill_null(table.column(S.SOURCE), "").to_numpy(zero_copy_only=False).astype(object)
        unique = set(sources)
        docs.update(Counter(sources.tolist()))
        for col in scores:
            vals = pc.fill_null(table.column(col), float("nan")).to_numpy(zero_copy_only=False).astype(np.float64)
            for src in unique:
                v = vals[sources == src]
                counts, _ = np.histogram(np.clip(v[~np.isnan(v)], 0.0, 1.0), bins=edges)
                hist[col][src] = hist[col].get(src, 0) + counts
        for col in labels:
            values[col].update(str(v) for v in table.column(col).to_pylist())
    return {"bins": bins, "docs_by_source": dict(docs),
            "histograms": {c: {s: h.tolist() for s, h in per.items()} for c, per in hist.items()},
            "distributions": {c: dict(v) for c, v in values.items()}}


def merge_reports(parts: Sequence[dict], scores: Sequence[str], labels: Sequence[str], bins: int, max_sources: int) -> dict:
    """One report from per-shard ones; sources beyond the `max_sources` largest are grouped as `(other)`."""
    docs: Counter = Counter()
    hist = {c: {} for c in scores}
    values = {c: Counter() for c in labels}
    for part in parts:
        docs.update(part["docs_by_source"])
        for c in scores:
            for src, counts in part["histograms"].get(c, {}).items():
                hist[c][src] = hist[c].get(src, np.zeros(bins, dtype=np.int64)) + np.asarray(counts, dtype=np.int64)
        for c in labels:
            values[c].update(part["distributions"].get(c, {}))
    top = [s for s, _ in sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))[:max_sources]]
    shown = set(top)
    histograms = {}
    for c in scores:
        per = {s: hist[c][s].tolist() for s in top if s in hist[c]}
        rest = [h for s, h in hist[c].items() if s not in shown]
        if rest:
            per[OTHER] = np.sum(rest, axis=0).tolist()
        total = np.sum(list(hist[c].values()), axis=0) if hist[c] else np.zeros(bins, dtype=np.int64)
        histograms[c] = {"all": total.tolist(), "by_source": per, "mean": _hist_mean(total, bins)}
    docs_by_source = {s: docs[s] for s in top}
    if len(docs) > len(top):
        docs_by_source[OTHER] = sum(n for s, n in docs.items() if s not in shown)
    return {"bins": bins, "bin_edges": np.round(np.linspace(0, 1, bins + 1), 6).tolist(), "docs": sum(docs.values()),
            "docs_by_source": docs_by_source, "histograms": histograms,
            "distributions": {c: dict(sorted(values[c].items(), key=lambda kv: (-kv[1], kv[0]))) for c in labels}}


def _hist_mean(counts: np.ndarray, bins: int) -> float | None:
    total = counts.sum()
    if not total:
        return None
    centres = (np.arange(bins) + 0.5) / bins
    return round(float((counts * centres).sum() / total), 4)


def write_plots(report: dict, plots_dir: str, storage_options: Mapping[str, Any] | None = None,
                cluster_terms: Mapping[int, Sequence[str]] | None = None) -> list[str]:
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


def markdown_report(report: dict, models: Mapping[str, dict], plots: Sequence[str] = (),
                    cluster_terms: Mapping[int, Sequence[str]] | None = None, title: str = "classify") -> str:
    lines = [f"# {title}", "", f"{report['docs']:,} documents scored.", "", "## Models", "", "| name | kind | version | uri |", "|---|---|---|---|"]
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
