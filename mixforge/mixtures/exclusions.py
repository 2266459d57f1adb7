"""The exclusions a new build applies: the spec's own `exclude` plus every earlier takedown of its mixture.

A takedown (takedown.py) derives a version without some documents; every later build of the same
mixture (a resample, e.g. the nightly) must leave them out too, so the build adds them to its spec
before anything else. Which rows an exclusion matches is decided in one place, pool.excluded_expr.
"""

from __future__ import annotations

from mixforge import storage
from mixforge.mixtures.spec import Exclusions, MixSpec
from mixforge.mixtures.versions import MixtureLayout, list_versions


def with_standing_takedowns(spec: MixSpec) -> MixSpec:
    """`spec` with every earlier takedown of its mixture added to `exclude`, so that a new build
    never brings a taken-down document back."""
    layout = MixtureLayout(spec.store, spec.name)
    ids, patterns = set(spec.exclude.ids), list(spec.exclude.url_patterns)
    for version in list_versions(layout, spec.storage_options):
        takedown = storage.read_json(layout.manifest(version), spec.storage_options).get("takedown")
        if takedown:
            ids.update(takedown["ids"])
            patterns += [p for p in takedown["url_patterns"] if p not in patterns]
    if ids == set(spec.exclude.ids) and patterns == list(spec.exclude.url_patterns):
        return spec
    return spec.model_copy(update={"exclude": Exclusions(ids=sorted(ids), url_patterns=patterns)})
