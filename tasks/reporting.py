"""Run summaries as Prefect artifacts: a table of per-stage counts and a markdown summary."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from mixforge import storage
from mixforge.names import artifact_key
from mixforge.runner import quarantine_rows


def stage_rows(summary: dict) -> list[dict]:
    rows = []
    for s in summary["stages"]:
        rows.append(
            {
                "stage": s["name"],
                "docs_in": s["docs_in"],
                "docs_kept": s["docs_kept"],
                "docs_dropped": sum(s["docs_dropped"].values()),
                "dropped_by_reason": ", ".join(f"{k}={v}" for k, v in s["docs_dropped"].items()) or "-",
                # a generating stage (rephrase) passes some inputs over without dropping them
                "skipped_by_reason": ", ".join(f"{k}={v}" for k, v in s.get("docs_skipped", {}).items()) or "-",
                "shards_quarantined": len(s["quarantined"]),
                "seconds": s["seconds"],
                # the workers that ran shards this time and how busy they were (low: stragglers, uneven shards)
                "workers": s.get("workers"),
                "worker_busy_share": s.get("worker_busy_share"),
                "worker_peak_rss_mb": s.get("worker_peak_rss_mb"),
            }
        )
    return rows


def markdown_summary(summary: dict) -> str:
    lines = [f"# Run `{summary['run_id']}`", "", f"Final output: `{summary['output']}`", ""]
    lines += [
        "| stage | docs in | kept | dropped | quarantined shards | seconds | workers busy |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in stage_rows(summary):
        busy = "-" if r["worker_busy_share"] is None else f"{r['worker_busy_share']:.0%} of {r['workers']}"
        lines.append(
            f"| {r['stage']} | {r['docs_in']:,} | {r['docs_kept']:,} | {r['docs_dropped']:,} "
            f"| {r['shards_quarantined']} | {r['seconds']:.1f} | {busy} |"
        )
    for s in summary["stages"]:
        if s["docs_dropped"] or s.get("docs_skipped"):
            lines += [
                "",
                f"## {s['name']}: dropped (or skipped) by reason, in check order (the funnel)",
                "",
                "| reason | docs | chars | docs remaining |",
                "|---|---:|---:|---:|",
            ]
            for step in s.get("funnel", []):
                reason = f"`{step['reason']}`" + (" (skipped)" if step.get("skipped") else "")
                lines.append(f"| {reason} | {step['docs']:,} | {step['chars']:,} | {step['docs_remaining']:,} |")
        if s["quarantined"]:
            lines += ["", f"## {s['name']}: quarantined shards", ""]
            lines += [f"- `{q['shard']}`: {q['error']} ({quarantine_rows(q)})" for q in s["quarantined"]]
    inputs = summary.get("inputs") or {}
    if inputs.get("skipped"):
        # what input discovery left out (storage.discover_inputs), so nothing is missing without a word
        lines += ["", f"## Inputs skipped ({len(inputs['skipped'])})", "", "| input | reason |", "|---|---|"]
        lines += [f"| `{s['uri']}` | {s['reason']} |" for s in inputs["skipped"][:200]]
        if len(inputs["skipped"]) > 200:
            lines.append(f"| ... | {len(inputs['skipped']) - 200} more |")
    return "\n".join(lines) + "\n"


@task(name="publish-run-artifacts", cache_policy=NO_CACHE)
def publish_run_artifacts(flow_name: str, summary: dict) -> None:
    key = artifact_key(flow_name, summary["run_id"])
    create_table_artifact(
        key=key, table=stage_rows(summary), description=f"{flow_name} {summary['run_id']}: per-stage counts"
    )
    create_markdown_artifact(
        key=artifact_key(key, "summary"), markdown=markdown_summary(summary), description=f"{flow_name} run summary"
    )


def publish_stage_report(run_id: str, summary: dict, storage_options: Mapping[str, Any] | None = None) -> None:
    """A stage's own report as a markdown artifact, for stages that write one (classify's
    `_report.md`: score histograms per source, domain/cluster distribution, plot URIs)."""
    info = summary.get("classify") or {}
    if info.get("markdown"):
        publish_classify_report(run_id, info["markdown"], storage_options)


@task(name="publish-classify-report", cache_policy=NO_CACHE)
def publish_classify_report(run_id: str, markdown_uri: str, storage_options: Mapping[str, Any] | None = None) -> None:
    fs, path = storage.filesystem(markdown_uri, storage_options)
    with fs.open(path, "rb") as f:
        text = f.read().decode()
    create_markdown_artifact(
        key=artifact_key("classify", run_id),
        markdown=text,
        description=f"classify {run_id}: score histograms per source, domain/cluster distribution",
    )
