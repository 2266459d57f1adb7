"""Prefect tasks of the optimize flow: the run (its proxies are executor steps: Ray tasks, one GPU each
where the cluster has GPUs), the artifacts, and building the proposal as a mixture version."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from mixforge.names import artifact_key
from mixforge.optimize import report
from mixforge.optimize.results import materialize, optimize_summary
from mixforge.optimize.run import run_optimization
from mixforge.optimize.search import SearchSpec
from tasks.executor import executor_for
from tasks.reporting import embed_images


@task(name="optimize-mixture", cache_policy=NO_CACHE)
def run_search(search: SearchSpec) -> dict:
    """The swarm, the fit and the proposal (resumes a run of the same spec); the run's manifest."""
    mixture = search.mixture_spec()
    return run_optimization(search, executor_for(mixture.ray), mixture.storage_options)


@task(name="publish-optimization-artifacts", cache_policy=NO_CACHE)
def publish_optimization_artifacts(manifest: dict, storage_options: dict[str, Any] | None = None) -> dict:
    """The proxies table and the report with its plots, keyed by the optimisation's name (each run adds to
    the same artifact histories); returns the run's summary."""
    name, run_id = manifest["name"], manifest["run_id"]
    create_table_artifact(
        key=artifact_key("optimize", name),
        table=report.proxy_rows(manifest, storage_options),
        description=f"optimisation {name} {run_id}: every proxy's weights and losses",
    )
    text, uri = report.write_report(manifest, storage_options)
    create_markdown_artifact(
        key=artifact_key("optimize", name, "report"),
        markdown=embed_images(text, uri, storage_options),
        description=f"optimisation {name} {run_id}: proposal, fit and plots",
    )
    return optimize_summary(manifest)


@task(name="materialize-proposal", cache_policy=NO_CACHE)
def materialize_proposal(manifest: dict, search: SearchSpec) -> dict:
    """The proposal as a new version of the mixture (its manifest links the run)."""
    mixture = search.mixture_spec()
    return materialize(manifest, mixture.storage_options, executor_for(mixture.ray))
