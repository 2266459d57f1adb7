"""What an optimisation run shows people: the proxies table, two plots (each target's loss against
each group's weight; predicted against actual loss, out of fold, when the table has the predictions)
and the markdown that holds them. Read from the run's files, so it can be rebuilt at any time."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from mixforge import storage
from mixforge.shards import read_parquet

PLOTS = ("loss_vs_weight.png", "predicted_vs_actual.png")


def proxy_rows(manifest: Mapping[str, Any], storage_options: Mapping[str, Any] | None = None) -> list[dict]:
    """One row per proxy: id, round, role, each group's weight, each target's loss, objective."""
    table = read_parquet(manifest["proxies"]["table"], storage_options)
    rows = table.to_pylist()
    return [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()} for row in rows]


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return buf.getvalue()


def render_plots(manifest: Mapping[str, Any], storage_options: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Write the run's plots beside its manifest (`plots/`); returns name -> URI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = proxy_rows(manifest, storage_options)
    swarm = [r for r in rows if r["role"] == "swarm"]
    groups, targets = manifest["groups"], [t["name"] for t in manifest["targets"]]
    # one panel per group's weight, then (QuaDMix) one per searched temperature, on a log axis
    columns = [f"weight_{g}" for g in groups]
    columns += [f"temperature_{g}" for g in (manifest.get("quality_temperature") or {}).get("groups", [])]
    written = {}

    fig, axes = plt.subplots(len(targets), len(columns), figsize=(3 * len(columns), 2.6 * len(targets)), squeeze=False)
    for i, t in enumerate(targets):
        for j, c in enumerate(columns):
            ax = axes[i][j]
            ax.scatter([r[c] for r in swarm], [r[f"loss_{t}"] for r in swarm], s=12, label="swarm")
            for r in rows:
                if r["role"] != "swarm":
                    ax.scatter([r[c]], [r[f"loss_{t}"]], marker="*", s=60, label=r["role"])
            if c.startswith("temperature_"):
                ax.set_xscale("log")
            ax.set_xlabel(c.replace("_", " of ", 1))
            ax.set_ylabel(f"loss on {t}" if j == 0 else "")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(f"{manifest['name']} {manifest['run_id']}: proxy loss against each searched parameter")
    written["loss_vs_weight.png"] = _png(fig)
    plt.close(fig)

    if swarm and all(f"predicted_{t}" in swarm[0] for t in targets):
        fig, axes = plt.subplots(1, len(targets), figsize=(3.6 * len(targets), 3.4), squeeze=False)
        for i, t in enumerate(targets):
            ax = axes[0][i]
            actual, predicted = [r[f"loss_{t}"] for r in swarm], [r[f"predicted_{t}"] for r in swarm]
            ax.scatter(actual, predicted, s=12)
            lo, hi = min(actual + predicted), max(actual + predicted)
            ax.plot([lo, hi], [lo, hi], linewidth=0.8, color="grey")
            ax.set_xlabel(f"actual loss on {t}")
            ax.set_ylabel("predicted (out of fold)" if i == 0 else "")
        fig.suptitle("regressor: predicted against actual loss, each proxy held out of its fit")
        written["predicted_vs_actual.png"] = _png(fig)
        plt.close(fig)

    uris = {}
    for name, png in written.items():
        uris[name] = storage.join(manifest["uri"], "plots", name)
        storage.write_bytes(uris[name], png, storage_options)
    return uris


def markdown(manifest: Mapping[str, Any], plots: Mapping[str, str]) -> str:
    """The run's report: the proposal beside the prior, the fit's quality, verification and plots."""
    space, proposal = manifest["space"], manifest["proposal"]
    lines = [
        f"# Optimisation `{manifest['name']}` run `{manifest['run_id']}`",
        "",
        f"- mixture `{manifest['mixture']['name']}`, budget {manifest['budget_tokens']:,} tokens, epoch cap "
        f"{manifest['epoch_cap']}; {manifest['proxies']['swarm']} proxies fitted "
        f"({manifest['proxy']['params']:,} parameters, {manifest['proxy']['tokens']:,} tokens each, "
        f"{manifest['proxy']['device']})",
        f"- proposal ({proposal['method']}): predicted objective {proposal['predicted']:.4f}; "
        f"spec `{proposal['spec']}`",
        "",
        "| group | prior | min | max | proposed |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {g} | {space[g]['prior']:.3f} | {space[g]['min']:.3f} | {space[g]['max']:.3f} | "
        f"{proposal['weights'][g]:.3f} |"
        for g in manifest["groups"]
    ]
    qt = manifest.get("quality_temperature")
    if qt:
        lines += [
            "",
            f"Quality-sampling temperatures searched (QuaDMix), within [{qt['min']:g}, {qt['max']:g}]:",
            "",
            "| group | spec's own | proposed |",
            "|---|---:|---:|",
        ]
        lines += [f"| {g} | {qt['own'][g]:.3g} | {proposal['temperatures'][g]:.3g} |" for g in qt["groups"]]
    lines += ["", "| target | regressor | CV Spearman | CV MAE |", "|---|---|---:|---:|"]
    for t in manifest["fit"]["targets"]:
        rho = "n/a" if t["spearman"] is None else f"{t['spearman']:.3f}"
        lines.append(f"| {t['target']} | {t['chosen']} | {rho} | {t['mae']:.4f} |")
    if manifest.get("verify"):
        lines += ["", "| verified proxy | objective (actual) | predicted |", "|---|---:|---:|"]
        for role, v in manifest["verify"].items():
            lines.append(f"| {role} | {v['objective']:.4f} | {v['predicted']:.4f} |")
    lines.append("")
    lines += [f"![{name}](plots/{name})" for name in plots]
    return "\n".join(lines) + "\n"


def write_report(manifest: Mapping[str, Any], storage_options: Mapping[str, Any] | None = None) -> tuple[str, str]:
    """Render the plots and write `report.md` into the run's folder; (its markdown, its URI)."""
    text = markdown(manifest, render_plots(manifest, storage_options))
    uri = storage.join(manifest["uri"], "report.md")
    storage.write_bytes(uri, text.encode(), storage_options)
    return text, uri
