"""Benchmark decontamination: the `decontaminate` curation stage (after dedup when listed in `stages:`,
and `mixforge decontaminate`).

Benchmark items come from the user's files (`extra_stages.decontaminate.benchmarks`: Parquet/JSONL,
local or on a store; nothing is downloaded); their word n-grams (default 13, normalised as
`mixforge.decontam.ngrams` says) form an index built in parallel and stored once per content
(`mixforge.decontam.index`), and every document's n-grams are looked up in it
(`mixforge.decontam.stage`: annotate, drop, or cut with GPT-3's rule). The composite
(`mixforge.decontam.composite`) runs the three and writes the report.

Importing this module registers the stage (light: the settings model only; the rest loads when it runs).
"""

from __future__ import annotations

from mixforge.decontam.config import DecontamConfig
from mixforge.stages.registry import CurationStage, register_stage


def _run(run, inputs, config, executor) -> dict:
    from mixforge.decontam.composite import run_decontaminate

    return run_decontaminate(run, inputs, config, executor)


def _preflight(config, storage_options) -> None:
    """The benchmark files must exist, be readable and have the configured fields."""
    from mixforge.decontam.index import check_benchmarks
    from mixforge.stages.registry import extra_settings

    check_benchmarks(extra_settings(config, "decontaminate"), storage_options)


register_stage(
    CurationStage(
        "decontaminate",
        _run,
        "benchmark decontamination: word n-gram overlap with the configured benchmark sets (annotate, drop or cut)",
        config_model=DecontamConfig,
        preflight=_preflight,
    ),
    before="rephrase",  # after dedup; rephrasings are then made from decontaminated text
)
