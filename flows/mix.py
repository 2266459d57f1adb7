"""mix: curated pool -> a new immutable mixture version (and its Prefect artifacts)."""

from __future__ import annotations

from typing import Annotated

from prefect import flow, get_run_logger
from pydantic import Field

from flows.export import EXPORT_EXAMPLE
from flows.export import export as export_flow
from flows.parameters import StoreUri
from mixforge.config import RayConfig
from mixforge.export.build import ExportConfig, check_export_settings
from mixforge.mixtures.spec import MixSpec
from mixforge.mixtures.takedown import takedown_figures
from mixforge.mixtures.versions import now
from mixforge.storage import StorageOptions  # credentials refused: flow parameters are stored in plain text
from tasks.mix import (
    check_spec,
    commit_mixture,
    count_tokens,
    derive_mixture,
    plan_mixture,
    publish_mixture_artifacts,
    resolve_pool,
    standing_takedowns,
    write_mixture,
)

__all__ = ["mix", "mix_takedown", "MIX_SPEC_EXAMPLE"]

MIX_SPEC_EXAMPLE = {
    "name": "web-books",
    "pool": ["s3://mixforge/runs/crawl-2026-11/dedup/"],
    "store": "s3://mixforge",
    "budget_tokens": 1_000_000_000,
    "groups": [
        {"name": "web", "where": {"source": "web"}, "weight": 0.7},
        {"name": "books", "where": {"source": "books"}, "weight": 0.3, "max_epochs": 2},
    ],
}


@flow(name="mix", validate_parameters=True)
def mix(
    spec: Annotated[MixSpec, Field(examples=[MIX_SPEC_EXAMPLE])],
    export: Annotated[ExportConfig | None, Field(examples=[EXPORT_EXAMPLE])] = None,
) -> dict:
    """Sample the pool named by `spec` into `{store}/mixtures/{name}/vNNNN/`; returns the mix summary.

    Args:
        spec: The mixture spec (the mixture YAML: `mixforge mix SPEC`): its pool, store, groups and
            their weights. Paths are absolute paths or URIs.
        export: Also export the new version as training-ready token files (the `export` flow's
            settings: format, tokenizer, seed, metadata conditioning); empty: no export.
    """
    logger = get_run_logger()
    started = now()
    for warning in check_spec(spec):  # unknown columns, impossible values, empty groups: before any work
        logger.warning(warning)
    if export is not None:
        check_export_settings(export, spec)  # format, tokenizer, phases, template: no version built for a bad one
    spec = standing_takedowns(spec)
    shards = resolve_pool(spec)
    sidecars = count_tokens(spec, shards)
    plan = plan_mixture(spec, shards, sidecars)
    for note in plan.notes:
        logger.warning(note)
    files = write_mixture(plan)
    manifest = commit_mixture(plan, files, started)
    summary = publish_mixture_artifacts(manifest, spec.store, spec.storage_options)
    logger.info(
        "mixture %s %s: %s tokens in %d files; data card %s",
        summary["name"],
        summary["version"],
        f"{summary['tokens']:,}",
        summary["files"],
        summary["card"],
    )
    if export is not None:
        summary["export"] = export_flow(
            store=spec.store,
            name=summary["name"],
            version=summary["version"],
            config=export,
            storage_options=spec.storage_options or None,
            ray=spec.ray,
        )
    return summary


@flow(name="mix-takedown", validate_parameters=True)
def mix_takedown(
    store: StoreUri,
    name: Annotated[str, Field(examples=["web-books"])],
    reason: Annotated[str, Field(examples=["takedown request 2026-118"])],
    ids: Annotated[list[str] | None, Field(examples=[["c4-0001234", "web-88f2"]])] = None,
    url_patterns: Annotated[list[str] | None, Field(examples=[["https://example.com/private/*"]])] = None,
    from_version: Annotated[str | None, Field(examples=["v0003"])] = None,
    storage_options: Annotated[StorageOptions | None, Field(examples=[{"endpoint_url": "http://minio:9000"}])] = None,
    ray: Annotated[RayConfig | None, Field(examples=[{"num_cpus": 4}])] = None,
) -> dict:
    """A new version of mixture `name` without some documents, the rest not resampled; each data file
    holding such a document is rewritten as a Ray task.

    Args:
        store: The store root holding `{store}/mixtures/{name}/`.
        name: The mixture.
        reason: Why, recorded in the new version's manifest and card.
        ids: Document ids to remove.
        url_patterns: URL globs: documents whose `url` matches one are removed.
        from_version: The version to derive from; empty: the latest.
        storage_options: fsspec options of the store, without credentials (as `config.storage.options`).
        ray: The Ray cluster to run on; empty: a local Ray, or `$RAY_ADDRESS`.
    """
    manifest = derive_mixture(
        store,
        name,
        from_version,
        list(ids or []),
        list(url_patterns or []),
        reason,
        dict(storage_options or {}),
        ray or RayConfig(),
    )
    summary = publish_mixture_artifacts(manifest, store, storage_options)
    return summary | {"takedown": takedown_figures(manifest)}
