"""Stage implementations, each a `mixforge.stage.Stage` over Arrow tables (or a composite of
steps). The curation stages, their order and how each runs are registered in
`mixforge.stages.registry`: the config's `stages:` values, the curate flow's tasks and the CLI's
stage commands all come from there.
"""

from __future__ import annotations

import mixforge.decontam  # noqa: F401 - registers the decontaminate stage
import mixforge.pii  # noqa: F401 - registers the pii stage (directly after dedup)
from mixforge.stages.registry import CurationStage, get_stage, plain_stage, register_stage, stage_names

__all__ = ["CurationStage", "get_stage", "plain_stage", "register_stage", "stage_names"]
