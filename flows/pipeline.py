"""pipeline: the whole DAG: curate -> rephrase (when configured) -> mix."""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.curate import curate
from flows.mix import mix
from flows.rephrase import rephrase as rephrase_flow
from mixforge import planning
from mixforge.config import CurateConfig
from mixforge.mixtures.spec import MixSpec
from mixforge.rephrase.config import RephraseConfig, RephraseRunConfig
from tasks.planning import curated_pool, latest_mixture_of_pool, mixture_spec
from tasks.rephrase import finished_rephrase_outputs


@flow(name="pipeline", validate_parameters=True)
def pipeline(
    input: str,
    output: str,
    config: CurateConfig = CurateConfig(),
    mixture: MixSpec | None = None,
    mixture_name: str = "default",
    run_id: str | None = None,
    incremental: bool = False,
    rephrase: RephraseConfig | None = None,
) -> dict:
    """Curate `input` into `<output>/runs/<run_id>/`, then sample the curated pool into a new
    version of a mixture under `<output>/mixtures/`.

    `mixture` is a mixture spec whose pool is replaced by the curated pool; without one, every
    source is a group at its natural share (`mixture_name` names it).

    `incremental` (the nightly): curate only the input shards no completed run of the pool has
    curated, deduplicated against the pool's dedup index (`dedup.index`, default
    `<output>/index/dedup`), and mix over every completed run of the pool. When nothing is new
    and the mixture's latest version was built over that same pool (from the same spec, when
    `mixture` is given), the night is a no-op: no run, no new version; the summary says
    `"noop": true` and gives that latest version.
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
        return noop

    # Mix the pool into a new version.
    mixed = mix(spec=mixture_spec(pool, output, mixture, name, options))
    logger.info(
        "mixture %s %s over %d pool folder(s): data card %s", mixed["name"], mixed["version"], len(pool), mixed["card"]
    )
    return {**curated, "rephrase": rephrased, "noop": False, "pool": pool, "mixture": {**mixed, "built": True}}
