"""pipeline: the whole DAG: curate -> rephrase (when configured) -> mix."""

from __future__ import annotations

from typing import Annotated

from prefect import flow, get_run_logger
from pydantic import Field

from flows.curate import CURATE_EXAMPLE, curate
from flows.export import EXPORT_EXAMPLE
from flows.mix import MIX_SPEC_EXAMPLE, mix
from flows.parameters import Incremental, InputUri, RunId, StoreUri
from flows.rephrase import REPHRASE_EXAMPLE
from flows.rephrase import rephrase as rephrase_flow
from mixforge import planning
from mixforge.config import CurateConfig
from mixforge.export.build import ExportConfig
from mixforge.mixtures.spec import MixSpec
from mixforge.rephrase.config import RephraseConfig, RephraseRunConfig
from tasks.pipeline_summary import publish_night_summary
from tasks.planning import curated_pool, latest_mixture_of_pool, mixture_spec
from tasks.rephrase import finished_rephrase_outputs


@flow(name="pipeline", validate_parameters=True)
def pipeline(
    input: InputUri,
    output: StoreUri,
    config: Annotated[CurateConfig, Field(examples=[CURATE_EXAMPLE])] = CurateConfig(),
    mixture: Annotated[MixSpec | None, Field(examples=[MIX_SPEC_EXAMPLE])] = None,
    mixture_name: Annotated[str, Field(examples=["nightly"])] = "default",
    run_id: RunId = None,
    incremental: Incremental = False,
    rephrase: Annotated[RephraseConfig | None, Field(examples=[REPHRASE_EXAMPLE])] = None,
    export: Annotated[ExportConfig | None, Field(examples=[EXPORT_EXAMPLE])] = None,
) -> dict:
    """Curate `input` into `{output}/runs/{run_id}/`, then sample the curated pool into a new
    version of a mixture under `{output}/mixtures/`. The flow run's artifact `pipeline-{mixture name}`
    sums the night up: curate counts, the version built, or the version still current.

    Args:
        input: Raw shards to curate: a glob, a prefix (folder) or one file, local or an fsspec URI.
        output: The store root: runs under `{output}/runs/`, mixtures under `{output}/mixtures/`.
        config: The curate stages and their settings (the curate YAML config).
        mixture: A mixture spec whose pool is replaced by the curated pool; empty: every source is a
            group at its natural share.
        mixture_name: Name of the mixture when `mixture` is empty (lowercase letters, digits, dashes).
        run_id: Name of the curate run; empty: a hash of the inputs, the config and the code version.
        incremental: The nightly: curate only the input shards no completed run of the pool has curated,
            deduplicated against the pool's dedup index (`dedup.index`, default `{output}/index/dedup`),
            and mix over every completed run of the pool. When nothing is new and the mixture's latest
            version was built over that same pool (from the same spec, when `mixture` is given), the
            night is a no-op: no run, no new version; the summary says `"noop": true` and gives that
            latest version.
        rephrase: Rephrase every pool folder not rephrased yet with vLLM before mixing (the `rephrase:`
            section of the rephrase YAML); empty: no rephrasing.
        export: Export each new version as training-ready token files (format, tokenizer, seed,
            metadata conditioning: the `export` flow's settings); empty: no export.
    """
    logger = get_run_logger()
    options = config.storage.options
    name, store = (mixture.name, mixture.store) if mixture else (mixture_name, output)
    mix_options = mixture.storage_options if mixture else options

    # Curate (incremental: only what is new), then rephrase what is still to be rephrased.
    curated = curate(input=input, output=output, config=config, run_id=run_id, incremental=incremental)
    pool = curated_pool(output, curated, options)
    rephrased: list[dict] = []
    if rephrase is not None and pool:
        rephrase_config = RephraseRunConfig(rephrase=rephrase, ray=config.ray, storage=config.storage)
        todo, synthetic = finished_rephrase_outputs(pool, output, rephrase_config)
        rephrased = [rephrase_flow(input=folder, output=output, config=rephrase_config) for folder in todo]
        pool = sorted([*pool, *synthetic, *(r["output"] for r in rephrased)])

    # Nothing new and the mixture already covers the pool: a no-op night.
    current = latest_mixture_of_pool(store, name, pool, mixture, mix_options) if pool else None
    noop = planning.nothing_to_mix(input, name, curated, pool, current, rephrased)
    if noop is not None:
        logger.info("no-op: %s", noop["message"])
        publish_night_summary(noop, name, mix_options)
        return noop

    # Mix the pool into a new version.
    mixed = mix(spec=mixture_spec(pool, output, mixture, name, options), export=export)
    logger.info(
        "mixture %s %s over %d pool folder(s): data card %s", mixed["name"], mixed["version"], len(pool), mixed["card"]
    )
    result = {**curated, "rephrase": rephrased, "noop": False, "pool": pool, "mixture": {**mixed, "built": True}}
    publish_night_summary(result, name, mix_options)
    return result
