"""Versioned mixtures: sample the curated pool into immutable, reproducible versions.

    spec.py      the mixture spec (YAML / pydantic)
    tokens.py    token counts, cached per pool shard
    pool.py      pool shards, fingerprints, annotation columns, group predicates
    plan.py      exact token planning and the seeded draw
    write.py     scatter / gather of the drawn rows into output shards
    versions.py  store layout, create-only version commits, list / show / diff
    card.py      the README data card and its plots
    takedown.py  derive a version minus ids or URL patterns
    build.py     the steps put together
"""

from mixforge.mixtures.spec import MixSpec, load_spec

__all__ = ["MixSpec", "load_spec"]
