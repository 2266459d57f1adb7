"""The pipeline's night as one artifact on the parent flow run: what was curated (documents in,
kept, dropped by reason, quarantined), what was rephrased, and the mixture version built, or,
on a no-op night, which version is still current. Its key, `pipeline-{mixture}`, is the same
every night, so the Prefect UI shows the nights as one artifact's history."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from mixforge.names import artifact_key
from tasks.reporting import location


def curate_counts(curated: Mapping[str, Any]) -> dict[str, Any]:
    """Documents through the night's curate run: read by its first stage, kept by its last, dropped
    and quarantined by any (all 0 when nothing new was curated)."""
    stages = curated.get("stages") or []
    dropped: Counter[str] = Counter()
    for stage in stages:
        dropped.update(stage["docs_dropped"])
    return {
        "docs_in": stages[0]["docs_in"] if stages else 0,
        "docs_kept": stages[-1]["docs_kept"] if stages else 0,
        "docs_dropped": sum(dropped.values()),
        "dropped_by_reason": dict(dropped.most_common()),
        "docs_quarantined": sum(stage.get("docs_quarantined") or 0 for stage in stages),
    }


def night_headline(result: Mapping[str, Any], name: str) -> str:
    mixture = result.get("mixture")
    if not result.get("noop"):
        return f"mixture {name} {mixture['version']} built"
    if mixture:
        return f"nothing new, {name} {mixture['version']} still current"
    return "nothing new, nothing curated yet"


def night_markdown(result: Mapping[str, Any], name: str, storage_options: Mapping[str, Any] | None = None) -> str:
    counts = curate_counts(result)
    lines = [f"# {night_headline(result, name)}", ""]
    if result.get("noop"):
        lines += [result["message"], ""]
    incremental = result.get("incremental")
    if incremental:
        lines += [
            f"Input shards: {incremental['input_shards']:,}, new: {incremental['new_shards']:,}, "
            f"already curated: {incremental['already_curated']:,}.",
            "",
        ]
    lines += [
        "## Curated" + (f" (run `{result['run_id']}`)" if result.get("run_id") else ""),
        "",
        "| docs in | kept | dropped | quarantined |",
        "|---:|---:|---:|---:|",
        f"| {counts['docs_in']:,} | {counts['docs_kept']:,} | {counts['docs_dropped']:,} "
        f"| {counts['docs_quarantined']:,} |",
        "",
    ]
    if counts["dropped_by_reason"]:
        lines += ["| dropped because | docs |", "|---|---:|"]
        lines += [f"| `{reason}` | {n:,} |" for reason, n in counts["dropped_by_reason"].items()]
        lines.append("")
    rephrased = result.get("rephrase") or []
    if rephrased:
        kept = sum(r["stages"][-1]["docs_kept"] for r in rephrased if r.get("stages"))
        lines += [f"Rephrased: {len(rephrased)} run(s), {kept:,} synthetic documents.", ""]
    mixture = result.get("mixture")
    if mixture:
        lines += [
            "## Mixture",
            "",
            "| mixture | version | built tonight | tokens | docs | files | pool runs |",
            "|---|---|---|---:|---:|---:|---:|",
            f"| {name} | {mixture['version']} | {'yes' if mixture.get('built') else 'no'} "
            f"| {mixture.get('tokens', 0):,} | {mixture.get('docs', 0):,} | {mixture.get('files', 0):,} "
            f"| {len(result.get('pool') or []):,} |",
            "",
        ]
        if mixture.get("card"):
            lines += [f"Data card: {location(mixture['card'], storage_options)}", ""]
    return "\n".join(lines)


@task(name="publish-night-summary", cache_policy=NO_CACHE)
def publish_night_summary(
    result: Mapping[str, Any], name: str, storage_options: Mapping[str, Any] | None = None
) -> str:
    """The night's summary artifact (on the flow run that calls this); returns its key."""
    key = artifact_key("pipeline", name)
    create_markdown_artifact(
        key=key,
        markdown=night_markdown(result, name, storage_options),
        description=f"pipeline: {night_headline(result, name)}",
    )
    return key
