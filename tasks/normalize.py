"""Prefect task for the normalize stage (raw shards -> contract documents)."""

from __future__ import annotations

from collections.abc import Sequence

from prefect import task
from prefect.cache_policies import NO_CACHE

from mixforge.config import CurateConfig
from mixforge.runs import RunLayout
from mixforge.shards import ReadOptions
from mixforge.stages.normalize import Normalize

from tasks.stage_runner import run_stage


def read_options(config: CurateConfig) -> ReadOptions:
    r = config.read
    return ReadOptions(text_field=r.text_field, id_field=r.id_field, batch_rows=r.batch_rows,
                       batch_bytes=r.batch_bytes, max_doc_bytes=r.max_doc_bytes, default_source=r.source)


# NO_CACHE: resumption is by per-shard markers in the store, never by a cached task result.
@task(name="normalize", cache_policy=NO_CACHE)
def normalize(run: RunLayout, inputs: Sequence[tuple[int, str]], config: CurateConfig) -> dict:
    return run_stage(Normalize(config.normalize), run.stage("normalize"), inputs, config.ray,
                     read_options(config), config.storage.options)
