"""Prefect tasks of the export flow: the export itself runs its scatter and gather steps on the job's
executor (`tasks.executor.executor_for`); the artifacts and the data card's export section run
in-process."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from mixforge.config import RayConfig
from mixforge.export import report
from mixforge.export.build import ExportConfig, run_export
from mixforge.names import artifact_key
from tasks.executor import executor_for
from tasks.reporting import location


@task(name="export-mixture", cache_policy=NO_CACHE)
def export_version(
    store: str,
    name: str,
    version: str | None,
    config: ExportConfig,
    storage_options: dict[str, Any],
    ray_config: RayConfig,
) -> dict:
    """Tokenise, shuffle and write the version's training-ready files; returns the export manifest."""
    return run_export(store, name, version, config, executor_for(ray_config), storage_options)


@task(name="publish-export-artifacts", cache_policy=NO_CACHE)
def publish_export_artifacts(manifest: dict, store: str, storage_options: dict[str, Any] | None = None) -> dict:
    """Tokens per phase and group, the files and the tokenizer, keyed by the mixture's name (each export
    adds to the same artifact histories in the Prefect UI); the version's data card gets its export
    section. Returns the export summary."""
    name, version = manifest["mixture"], manifest["version"]
    summary = report.export_summary(manifest, store)
    create_table_artifact(
        key=artifact_key("export", name),
        table=report.token_rows(manifest),
        description=f"mixture {name} {version}: export {summary['key']}: tokens per phase and group",
    )
    create_markdown_artifact(
        key=artifact_key("export", name, "files"),
        markdown=report.export_markdown(manifest, store)
        + f"\n\nmanifest: {location(summary['manifest'], storage_options)}\n",
        description=f"mixture {name} {version}: export {summary['key']}: files and tokenizer",
    )
    report.update_version_card(store, name, version, storage_options)
    return summary
