"""PII detection and redaction: the `pii` curation stage (issue #19).

Registered here, directly after dedup: before decontaminate and rephrase (rephrasing then never sees the
redacted entities), whichever of these modules is imported first. Its settings are `extra_stages.pii`
(`mixforge.pii.config.PIIConfig`). This module stays light: the config and
the CLI list the stages by importing it, and the stage's code is imported when it runs.
"""

from __future__ import annotations

from mixforge.pii.config import PIIConfig
from mixforge.stages.registry import CurationStage, register_stage, stage_names


def _after_dedup() -> str | None:
    """The stage that follows dedup now (None: dedup is last): pii goes there, whatever was imported first."""
    order = [s for s in stage_names() if s != "pii"]
    return order[order.index("dedup") + 1] if order[-1] != "dedup" else None


def _run(run, inputs, config, executor) -> dict:
    from mixforge.pii.stage import run_pii

    return run_pii(run, inputs, config, executor)


register_stage(
    CurationStage(
        "pii",
        _run,
        "find e-mails, public IPs, phone numbers, payment cards and IBANs: annotate, redact or drop, per entity",
        config_model=PIIConfig,
    ),
    before=_after_dedup(),
)
