"""Stage implementations, each a `mixforge.stage.Stage` over Arrow tables, and the registry
that builds them from a curate config. Adding a stage: a module here, an entry below, a
task module in tasks/, and its name in `mixforge.config.STAGE_ORDER`.
"""

from __future__ import annotations

from collections.abc import Callable

from mixforge.config import CurateConfig
from mixforge.stage import Stage
from mixforge.stages.classify import ClassifyStage
from mixforge.stages.filter import Filter
from mixforge.stages.normalize import Normalize

BUILDERS: dict[str, Callable[[CurateConfig], Stage]] = {
    "normalize": lambda config: Normalize(config.normalize),
    "filter": lambda config: Filter(config.filter),
    "classify": lambda config: ClassifyStage(config.classify, config.storage.options),
}


def build(name: str, config: CurateConfig) -> Stage:
    return BUILDERS[name](config)
