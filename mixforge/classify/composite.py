"""The classify composite: fit clusters -> apply -> report, as one DAG over an injected executor.

    [fit]    (embedding clusters without given centroids) count the documents from the Parquet
             footers, embed each shard's part of a uniform sample (one call per shard), k-means on
             the driver -> a centroids model version, recorded in `<stage dir>/_work/clusters.json`
             so a resumed run reuses it
    apply    `ClassifyStage`, an ordinary stage over the shards (resume markers, stats, figures)
    report   the histograms and distributions the stage counted as it wrote its columns (shards
             finished without figures are read back, one call per shard), PNG plots in
             `<stage dir>/_plots/`, `_report.md`, and the numbers in `_stats.json` under `classify`

The same code runs in this process (`SerialExecutor`: tests, benchmarks) and on Ray
(`tasks.executor.RayExecutor`: the Prefect task). Embedding calls take the `Resources` the caller
gives (GPUs where the cluster embeds on them: `embedding_resources`).
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mixforge import storage
from mixforge.classify import clusters as cl
from mixforge.classify import report as rp
from mixforge.classify.config import ClassifyConfig, EmbeddingClustersConfig
from mixforge.config import CurateConfig
from mixforge.executor import ONE_CPU, Call, Executor, Resources
from mixforge.runner import StageFailed, completed_outputs, run_stage
from mixforge.runs import RunLayout, StageLayout
from mixforge.shards import ReadConfig
from mixforge.stage import add_figures
from mixforge.stages.classify import ClassifyStage

log = logging.getLogger("mixforge")


def run_classify(
    run: RunLayout,
    inputs: Sequence[tuple[int, str]],
    config: CurateConfig,
    executor: Executor,
    embedding: Resources | None = None,
) -> dict:
    """Classify (index, input URI) shards into `run`'s classify folder on `executor`; the stage summary
    with its `classify` report, also written as `_stats.json`. `embedding`: what each embedding call
    (and classify worker) takes; default `embedding_resources(config.classify)`."""
    return classify(
        run.root,
        run.stage("classify"),
        inputs,
        config.classify,
        executor,
        config.read,
        config.storage.options,
        embedding,
    )


def embedding_resources(config: ClassifyConfig, cluster_gpus: Callable[[], float] | None = None) -> Resources:
    """What an embedding call asks for: `embedding_clusters.gpus_per_worker` GPUs when it embeds on
    GPUs (`device: cuda`, or `auto` and the cluster has some), else one CPU.

    `cluster_gpus`: the GPUs of the cluster the executor runs on (called only when the device
    leaves it open); None: unknown (in this process: nothing to reserve, the embedder's device
    alone decides)."""
    emb = config.embedding_clusters
    if not emb.enabled or emb.device == "cpu" or cluster_gpus is None:
        return ONE_CPU
    available = cluster_gpus()
    if emb.device == "cuda" and not available:
        raise RuntimeError("embedding_clusters.device is 'cuda' but the Ray cluster has no GPU")
    return Resources(cpus=1.0, gpus=emb.gpus_per_worker if available else 0.0)


def classify(
    root: str,
    layout: StageLayout,
    inputs: Sequence[tuple[int, str]],
    config: ClassifyConfig,
    executor: Executor,
    read_options: ReadConfig = ReadConfig(),
    storage_options: Mapping[str, Any] | None = None,
    embedding: Resources | None = None,
) -> dict:
    """`run_classify` with its parts spelled out: the store `root` (fitted centroids go to its
    `models/`), the stage's `layout`, the classify config."""
    if not config.enabled:
        raise ValueError(
            "classify: no classifiers configured and embedding_clusters disabled (set classify.classifiers)"
        )
    embedding = embedding or embedding_resources(config)
    emb = config.embedding_clusters
    centroids = None
    if emb.enabled and emb.centroids is None:
        centroids = fit_clusters(root, layout, inputs, emb, executor, embedding, storage_options)
    stage = ClassifyStage(config, storage_options, centroids=centroids, resources=embedding)
    summary = run_stage(stage, layout, inputs, executor, read_options, storage_options, write_stats=False)
    summary["classify"] = build_report(stage, layout, summary, executor, storage_options)
    storage.write_json(layout.stats, summary, storage_options)
    return summary


# ----------------------------------------------------------------------------- fit


def count_documents(
    inputs: Sequence[tuple[int, str]], storage_options: Mapping[str, Any] | None, threads: int = 16
) -> tuple[dict[int, int], dict[int, str]]:
    """Rows per input shard from the Parquet footers (a few KB each, read concurrently by the driver):
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


def fit_clusters(
    root: str,
    layout: StageLayout,
    inputs: Sequence[tuple[int, str]],
    cfg: EmbeddingClustersConfig,
    executor: Executor,
    resources: Resources = ONE_CPU,
    storage_options: Mapping[str, Any] | None = None,
) -> str:
    """Fit k-means on a uniform sample of `inputs` once per run; returns the centroids version URI.

    Sampling (see mixforge.classify.clusters): the corpus size comes from the shards' footers, every
    shard embeds its documents whose seeded id hash falls below the matching threshold (one call
    per shard on `executor`), and the `sample_size` smallest hashes are kept - the same sample for
    any number of workers or shards."""
    marker = storage.join(layout.dir, "_work", "clusters.json")
    if storage.exists(marker, storage_options):
        return storage.read_json(marker, storage_options)["centroids"]
    rows, unreadable = count_documents(inputs, storage_options)
    total = sum(rows.values())
    threshold = cl.sample_threshold(total, cfg.sample_size)
    calls = [Call(f"shard {i} ({uri})", (uri, threshold, cfg, storage_options, 1)) for i, uri in inputs if rows[i] > 0]
    parts = executor.map(
        cl.embed_sample,
        calls,
        step="classify:embed-sample",
        resources=resources,
        storage_options=storage_options,
        progress_name="classify (k-means sample)",
    )
    keys, texts, vectors = cl.bottom_k([(k, t, v) for k, t, v, _ in parts], cfg.sample_size)
    info = parts[0][3] if parts else {}
    sample = {
        "docs": len(texts),
        "corpus_docs": total,
        "shards": len(inputs),
        "seed": cfg.seed,
        "method": "uniform: the sample_size smallest seeded blake2b-64 hashes of the document ids",
        "rate": round(len(texts) / total, 6) if total else 0.0,
        "unreadable_shards": {str(i): e for i, e in sorted(unreadable.items())[:20]},
        "inputs": [uri for _, uri in inputs][:100],
    }
    if not texts:
        raise StageFailed(
            f"classify: no documents to fit clusters on ({len(inputs)} input shards, {len(unreadable)} unreadable)"
        )
    version = cl.fit_and_publish(root, texts, vectors, cfg, info, sample, storage_options)
    log.info(
        "fitted %d clusters on %d of %d documents (uniform sample) -> %s",
        version.card["k"],
        len(texts),
        total,
        version.uri,
    )
    if not storage.create_only(marker, json.dumps({"centroids": version.uri}).encode(), storage_options):
        return storage.read_json(marker, storage_options)["centroids"]  # a concurrent attempt won: use its centroids
    return version.uri


# ----------------------------------------------------------------------------- report


def _sum_figures(total: dict | None, figures: dict) -> dict:
    return add_figures(total or {}, figures)


def build_report(
    stage: ClassifyStage,
    layout: StageLayout,
    summary: dict,
    executor: Executor,
    storage_options: Mapping[str, Any] | None = None,
) -> dict:
    """The stage's report from the figures in `summary` (consumed: they leave the summary): the
    numbers, PNG plots and `_report.md`; returns what goes into the summary under `classify`."""
    config = stage.config
    cols = stage.columns
    outputs = completed_outputs(layout, summary)
    figures = summary.pop("figures", None)
    missing = set(summary.pop("figures_missing", [])) if figures is not None else {i for i, _ in outputs}
    figures = figures or {}
    if missing:
        # Shards finished by a version that did not count figures: read their outputs back.
        log.info("classify report: reading %d output shard(s) back (finished without figures)", len(missing))
        calls = [
            Call(f"shard {i} ({uri})", (uri, cols["scores"], cols["labels"], config.histogram_bins, storage_options))
            for i, uri in outputs
            if i in missing
        ]
        read_back = executor.map(
            rp.shard_report,
            calls,
            step="classify:report-read-back",
            fold=_sum_figures,
            storage_options=storage_options,
            progress_name="classify (report)",
        )
        figures = add_figures(figures, read_back or {})
    report = rp.final_report(figures, cols["scores"], cols["labels"], config.histogram_bins, config.report_max_sources)
    terms = stage.clusters.top_terms() if stage.clusters is not None else None
    plots = []
    if config.plots:
        try:
            plots = rp.write_plots(report, storage.join(layout.dir, "_plots"), storage_options, terms)
        except ImportError:
            log.warning("classify: matplotlib is not installed, no PNG plots written")
    models = stage.models_used()
    markdown = storage.join(layout.dir, "_report.md")
    storage.write_bytes(markdown, rp.markdown_report(report, models, plots, terms).encode(), storage_options)
    return {
        "models": models,
        "columns": cols,
        "report": report,
        "plots": plots,
        "clusters": None
        if terms is None
        else {"model": stage.clusters.version.uri, "top_terms": {str(k): v for k, v in terms.items()}},
        "markdown": markdown,
    }
