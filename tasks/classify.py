"""Prefect task for the classify stage: fastText classifiers and embedding clusters, on Ray.

Steps: (embedding clusters, unless fitted centroids are given) embed a sample of the input shards
on Ray and fit k-means -> a centroids model version, recorded in `<stage dir>/_work/clusters.json`
so a resumed run reuses it; then the stage itself (models loaded once per worker); then the report:
the histograms and distributions the stage counted as it wrote its columns, PNG plots
in `<stage dir>/_plots/`, `_report.md`, and the figures' numbers in `_stats.json` under `classify`.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import ray
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from mixforge import storage
from mixforge.classify import clusters as cl
from mixforge.classify import report as rp
from mixforge.classify.config import ClassifyConfig
from mixforge.config import CurateConfig, RayConfig
from mixforge.names import artifact_key
from mixforge.runs import RunLayout, StageLayout
from mixforge.shards import ReadOptions
from mixforge.stage import add_figures
from mixforge.stages.classify import ClassifyStage, output_columns
from tasks import ray_runtime
from tasks.executor import ray_map
from tasks.stage_runner import StageFailed, completed_outputs, read_options, run_stage

log = logging.getLogger("mixforge")

_remote_embed_sample = ray.remote(cl.embed_sample)
_remote_shard_report = ray.remote(rp.shard_report)


def embedding_gpus(config: ClassifyConfig, ray_config: RayConfig) -> float:
    """GPUs per worker for embedding: on GPUs when asked, or with `auto` when the cluster has any."""
    emb = config.embedding_clusters
    if not emb.enabled or emb.device == "cpu":
        return 0.0
    ray_runtime.connect(ray_config)
    available = ray.cluster_resources().get("GPU", 0)
    if emb.device == "cuda" and not available:
        raise RuntimeError("embedding_clusters.device is 'cuda' but the Ray cluster has no GPU")
    return emb.gpus_per_worker if available else 0.0


def count_documents(inputs: Sequence[tuple[int, str]], storage_options: Mapping[str, Any] | None,
                    threads: int = 16) -> tuple[dict[int, int], dict[int, str]]:
    """Rows per input shard from the Parquet footers (a few KB each, read concurrently):
    ({index: rows}, {index: error} for shards that cannot be read; the stage quarantines those)."""
    rows, unreadable = {}, {}

    def count(item):
        index, uri = item
        try:
            return index, cl.shard_rows(uri, storage_options), None
        except Exception as e:  # noqa: BLE001 - any unreadable shard is left out of the sample, not fatal here
            return index, 0, f"{type(e).__name__}: {e}"

    with cf.ThreadPoolExecutor(max(1, min(threads, len(inputs)))) as pool:
        for index, n, error in pool.map(count, inputs):
            rows[index] = n
            if error is not None:
                unreadable[index] = error
    return rows, unreadable


def fit_clusters(root: str, layout: StageLayout, inputs: Sequence[tuple[int, str]], config: ClassifyConfig,
                 ray_config: RayConfig, storage_options: Mapping[str, Any] | None, gpus: float = 0.0) -> str:
    """Fit k-means on a uniform sample of `inputs` (embedded on Ray) once per run; returns the centroids version URI.

    Sampling (see mixforge.classify.clusters): the corpus size comes from the shards' footers, every
    shard embeds its documents whose seeded id hash falls below the matching threshold, and the
    `sample_size` smallest hashes are kept - the same sample for any number of workers or shards."""
    marker = storage.join(layout.dir, "_work", "clusters.json")
    if storage.exists(marker, storage_options):
        return storage.read_json(marker, storage_options)["centroids"]
    cfg = config.embedding_clusters
    rows, unreadable = count_documents(inputs, storage_options)
    total = sum(rows.values())
    threshold = cl.sample_threshold(total, cfg.sample_size)
    calls = [(i, (uri, threshold, cfg, storage_options, 1)) for i, uri in inputs if rows[i] > 0]
    parts, failures = {}, []
    for index, result, error in ray_map(_remote_embed_sample, calls, ray_config, cpus=1.0, gpus=gpus):
        if error is not None:
            failures.append(f"  shard {index}: {error}")
        else:
            parts[index] = result
    if failures:
        raise StageFailed("classify: embedding the k-means sample failed for:\n" + "\n".join(failures))
    keys, texts, vectors = cl.bottom_k([(k, t, v) for k, t, v, _ in parts.values()], cfg.sample_size)
    info = next(iter(parts.values()))[3] if parts else {}
    sample = {"docs": len(texts), "corpus_docs": total, "shards": len(inputs), "seed": cfg.seed,
              "method": "uniform: the sample_size smallest seeded blake2b-64 hashes of the document ids",
              "rate": round(len(texts) / total, 6) if total else 0.0,
              "unreadable_shards": {str(i): e for i, e in sorted(unreadable.items())[:20]},
              "inputs": [uri for _, uri in inputs][:100]}
    if not texts:
        raise StageFailed(f"classify: no documents to fit clusters on ({len(inputs)} input shards, {len(unreadable)} unreadable)")
    version = cl.fit_and_publish(root, texts, vectors, cfg, info, sample, storage_options)
    log.info("fitted %d clusters on %d of %d documents (uniform sample) -> %s", version.card["k"], len(texts), total, version.uri)
    if not storage.create_only(marker, json.dumps({"centroids": version.uri}).encode(), storage_options):
        return storage.read_json(marker, storage_options)["centroids"]  # a concurrent attempt won: use its centroids
    return version.uri


def run_classify(root: str, layout: StageLayout, inputs: Sequence[tuple[int, str]], config: ClassifyConfig,
                 ray_config: RayConfig, read_opts: ReadOptions = ReadOptions(),
                 storage_options: Mapping[str, Any] | None = None) -> dict:
    """Fit clusters (if needed), run the stage on Ray, write the report; returns the stage summary."""
    if not config.enabled:
        raise ValueError("classify: no classifiers configured and embedding_clusters disabled (set classify.classifiers)")
    gpus = embedding_gpus(config, ray_config)
    centroids = None
    if config.embedding_clusters.enabled and config.embedding_clusters.centroids is None:
        centroids = fit_clusters(root, layout, inputs, config, ray_config, storage_options, gpus)
    stage = ClassifyStage(config, storage_options, centroids=centroids, gpus=gpus)
    summary = run_stage(stage, layout, inputs, ray_config, read_opts, storage_options)
    summary["classify"] = build_report(stage, layout, summary, config, ray_config, storage_options)
    storage.write_json(layout.stats, summary, storage_options)
    return summary


def build_report(stage: ClassifyStage, layout: StageLayout, summary: dict, config: ClassifyConfig, ray_config: RayConfig,
                 storage_options: Mapping[str, Any] | None) -> dict:
    cols = output_columns(config)
    outputs = completed_outputs(layout, summary)
    figures = summary.pop("figures", None)
    missing = set(summary.pop("figures_missing", [])) if figures is not None else {i for i, _ in outputs}
    figures = figures or {}
    if missing:
        # Shards finished by a version that did not count figures: read their outputs back.
        log.info("classify report: reading %d output shard(s) back (finished without figures)", len(missing))
        calls = [(i, (uri, cols["scores"], cols["labels"], config.histogram_bins, storage_options)) for i, uri in outputs if i in missing]
        for index, result, error in ray_map(_remote_shard_report, calls, ray_config):
            if error is not None:
                raise StageFailed(f"classify report: shard {index} could not be read back: {error}")
            figures = add_figures(figures, result)
    report = rp.final_report(figures, cols["scores"], cols["labels"], config.histogram_bins, config.report_max_sources)
    terms = {c["id"]: c["top_terms"] for c in stage.clusters.card["clusters"]} if stage.clusters is not None else None
    plots = []
    if config.plots:
        try:
            plots = rp.write_plots(report, storage.join(layout.dir, "_plots"), storage_options, terms)
        except ImportError:
            log.warning("classify: matplotlib is not installed, no PNG plots written")
    markdown = rp.markdown_report(report, stage.models_used(), plots, terms)
    storage.write_bytes(storage.join(layout.dir, "_report.md"), markdown.encode(), storage_options)
    return {"models": stage.models_used(), "columns": cols, "report": report, "plots": plots,
            "clusters": None if terms is None else {"model": stage.clusters.uri, "top_terms": {str(k): v for k, v in terms.items()}},
            "markdown": storage.join(layout.dir, "_report.md")}


@task(name="classify", cache_policy=NO_CACHE)
def classify_documents(run: RunLayout, inputs: Sequence[tuple[int, str]], config: CurateConfig) -> dict:
    layout = run.stage("classify")
    summary = run_classify(run.root, layout, inputs, config.classify, config.ray, read_options(config), config.storage.options)
    publish_classify_artifacts(run.run_id, summary, storage_options=config.storage.options)
    return summary


def publish_classify_artifacts(run_id: str, summary: dict, storage_options: Mapping[str, Any] | None = None) -> None:
    """The report as a markdown artifact (figures' numbers; plot URIs listed)."""
    info = summary.get("classify") or {}
    if not info:
        return
    fs, path = storage.filesystem(info["markdown"], storage_options)
    with fs.open(path, "rb") as f:
        text = f.read().decode()
    create_markdown_artifact(key=artifact_key("classify", run_id), markdown=text,
                             description=f"classify {run_id}: score histograms per source, domain/cluster distribution")
