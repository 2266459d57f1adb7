"""Prefect tasks for classify: the library's classify composite (mixforge.classify.composite) on
Ray, and the report as a markdown artifact."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import ray
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from mixforge import storage
from mixforge.classify.composite import embedding_resources, run_classify
from mixforge.config import CurateConfig, RayConfig
from mixforge.names import artifact_key
from mixforge.runs import RunLayout
from tasks import ray_runtime
from tasks.executor import RayExecutor


def ray_cluster_gpus(ray_config: RayConfig) -> float:
    ray_runtime.connect(ray_config)
    return ray.cluster_resources().get("GPU", 0)


@task(name="classify", cache_policy=NO_CACHE)
def classify_documents(run: RunLayout, inputs: Sequence[tuple[int, str]], config: CurateConfig) -> dict:
    embedding = embedding_resources(config.classify, lambda: ray_cluster_gpus(config.ray))
    summary = run_classify(run, inputs, config, RayExecutor(config.ray), embedding)
    publish_classify_report(run.run_id, summary, config.storage.options)
    return summary


@task(name="publish-classify-report", cache_policy=NO_CACHE)
def publish_classify_report(run_id: str, summary: dict, storage_options: Mapping[str, Any] | None = None) -> None:
    """The report (`_report.md`: figures' numbers, plot URIs listed) as a markdown artifact."""
    info = summary.get("classify") or {}
    if not info:
        return
    fs, path = storage.filesystem(info["markdown"], storage_options)
    with fs.open(path, "rb") as f:
        text = f.read().decode()
    create_markdown_artifact(key=artifact_key("classify", run_id), markdown=text,
                             description=f"classify {run_id}: score histograms per source, domain/cluster distribution")
