"""mix: curated pool -> a new immutable mixture version (and its Prefect artifacts)."""

from __future__ import annotations

from prefect import flow, get_run_logger

from mixforge.config import RayConfig
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

__all__ = ["mix", "mix_takedown"]


@flow(name="mix", validate_parameters=True)
def mix(spec: MixSpec) -> dict:
    """Sample the pool named by `spec` into `<store>/mixtures/<name>/vNNNN/`; returns the mix summary.

    `spec` may be a MixSpec or a dict of the same fields (validated into one)."""
    logger = get_run_logger()
    started = now()
    for warning in check_spec(spec):  # unknown columns, impossible values, empty groups: before any work
        logger.warning(warning)
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
    return summary


@flow(name="mix-takedown", validate_parameters=True)
def mix_takedown(
    store: str,
    name: str,
    reason: str,
    ids: list[str] | None = None,
    url_patterns: list[str] | None = None,
    from_version: str | None = None,
    storage_options: StorageOptions | None = None,
    ray: RayConfig | None = None,
) -> dict:
    """A new version of mixture `name`: `from_version` (default: latest) minus `ids` and URLs
    matching `url_patterns` (globs), without resampling the rest; each data file holding such a
    document is rewritten as a Ray task on the cluster `ray` names (default: a local Ray, or $RAY_ADDRESS)."""
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
