"""pipeline: the whole DAG: curate -> (rephrase, once it lands) -> mix."""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.curate import curate
from flows.mix import mix, spec_for_pool
from mixforge.config import CurateConfig
from mixforge.mixtures.spec import MixSpec


@flow(name="pipeline", validate_parameters=True)
def pipeline(input: str, output: str, config: CurateConfig = CurateConfig(), mixture: MixSpec | None = None,
             mixture_name: str = "default", run_id: str | None = None) -> dict:
    """Curate `input` into `<output>/runs/<run_id>/`, then sample the curated pool into a new
    version of a mixture under `<output>/mixtures/`.

    `mixture` is a mixture spec whose pool is replaced by this run's curated output; without
    one, every source is a group at its natural share (`mixture_name` names it).
    """
    curated = curate(input=input, output=output, config=config, run_id=run_id)
    if mixture is None:
        spec = spec_for_pool(curated["output"], output, name=mixture_name, storage_options=config.storage.options)
    else:
        spec = mixture.model_copy(update={"pool": [curated["output"]]})
    mixed = mix(spec=spec)
    get_run_logger().info("mixture %s %s: data card %s", mixed["name"], mixed["version"], mixed["card"])
    return {**curated, "mixture": mixed}
