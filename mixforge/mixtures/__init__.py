"""Versioned mixtures: sample the curated pool into immutable, reproducible versions.

    spec.py      the mixture spec (YAML / pydantic)
    tokens.py    token counts, cached per pool shard
    pool.py      pool shards, fingerprints, output schema, group predicates
    seeds.py     stable seeds for every random choice
    shardwork.py per-shard work: group stats, key histograms, rows near thresholds, the draw (scatter)
    plan.py      exact token planning from per-shard aggregates (the driver never holds pool rows)
    write.py     gather of the drawn rows into output shards, bucket by bucket
    versions.py  store layout, create-only version commits, list / show / diff
    card.py      the README data card and its plots
    takedown.py  derive a version minus ids or URL patterns
    build.py     the steps put together
"""

from mixforge.mixtures.spec import MixSpec, load_spec

__all__ = ["MixSpec", "load_spec"]
