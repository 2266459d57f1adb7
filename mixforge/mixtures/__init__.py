"""Versioned mixtures: sample the curated pool into immutable, reproducible versions.

    spec.py        the mixture spec (YAML / pydantic)
    samplers.py    one class per sampling method (uniform, quality, rehydrate), registered by name
    tokens.py      token counts, cached per pool shard
    pool.py        pool shards, fingerprints, output schema, group predicates, what an exclusion matches
    seeds.py       stable seeds for every random choice
    shard_steps.py   per-shard work: group stats, key histograms, rows near thresholds, the draw (scatter)
    plan.py        exact token planning from per-shard aggregates (the driver never holds pool rows)
    write.py       gather of the drawn rows into output shards, bucket by bucket
    versions.py    store layout, the clock, create-only version commits, list / show / diff
    card.py        the README data card and its plots
    exclusions.py  a build's standing exclusions: the spec's own plus every earlier takedown
    takedown.py    derive a version minus ids or URL patterns (a step per data file)
    build.py       the steps put together
Every per-shard (or per-file) step runs on an injected mixforge.executor.Executor.
"""

from mixforge.mixtures.spec import MixSpec, load_spec

__all__ = ["MixSpec", "load_spec"]
