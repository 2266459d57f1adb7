"""optimize: choose a mixture's weights on evidence (RegMix / CLIMB / olmix): a swarm of proxy models,
a regression from weights to target loss, a constrained proposal, optionally built as a new version."""

from __future__ import annotations

from typing import Annotated

from prefect import flow, get_run_logger
from pydantic import Field

from mixforge.mixtures.versions import read_manifest
from mixforge.optimize.search import SearchSpec, resolve_mapping
from tasks.mix import publish_mixture_artifacts
from tasks.optimize import materialize_proposal, publish_optimization_artifacts, run_search

__all__ = ["optimize", "SEARCH_EXAMPLE"]

SEARCH_EXAMPLE = {
    "name": "web-books-search",
    "mixture": "s3://mixforge/specs/web-books.yaml",
    "budget_tokens": 1_000_000_000,
    "epoch_cap": 4,
    "swarm": {"size": 16},
    "targets": [{"name": "held-out-books", "uri": "s3://mixforge/eval/books/", "weight": 1.0}],
    "verify": True,
}


@flow(name="optimize", validate_parameters=True)
def optimize(
    search: Annotated[SearchSpec, Field(examples=[SEARCH_EXAMPLE])],
    materialize: Annotated[bool, Field(examples=[True])] = False,
) -> dict:
    """Train a swarm of small proxy models on mixtures sampled around the prior, fit a regressor from
    weights to target loss and propose the best weights within the bounds and epoch caps, under
    `{store}/optimize/{name}/{run}/`; returns the run's summary.

    Args:
        search: The search spec (`mixforge optimize --spec SEARCH.yaml`): the mixture spec whose group
            weights are searched, bounds, budget and epoch cap, targets, swarm, proxy, fit and proposal.
            Paths are absolute paths or URIs.
        materialize: Also build the proposal as a new version of the mixture; its manifest and data
            card link this run.
    """
    search = resolve_mapping(search)  # from the UI: absolute paths or URIs only
    manifest = run_search(search)
    summary = publish_optimization_artifacts(manifest, search.mixture_spec().storage_options)
    logger = get_run_logger()
    logger.info(
        "optimisation %s %s: proposal %s (%s)", search.name, manifest["run_id"], summary["proposal"], summary["spec"]
    )
    if materialize:
        mixture = search.mixture_spec()
        mixed = materialize_proposal(manifest, search)
        version = read_manifest(mixture.store, mixed["name"], mixed["version"], mixture.storage_options)
        summary["materialized"] = publish_mixture_artifacts(version, mixture.store, mixture.storage_options)
        logger.info("proposal built as mixture %s %s", mixed["name"], mixed["version"])
    return summary
