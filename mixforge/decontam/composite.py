"""The decontaminate composite: plan the index -> build it (or reuse it) -> the stage over the shards -> report.

index    `index.plan_index` (the benchmark files found and hashed: the index's key) and `build_index`
         (one step per benchmark file, one per hash partition, on the executor), skipped when the
         store already holds an index with that key
apply    `DecontamStage`, an ordinary stage over the shards (resume markers, stats, figures)
report   contaminated documents and tokens per benchmark and per source, with examples (each shard's
         batches leave theirs in `<stage dir>/_work/examples/`), in `_stats.json` under
         `decontaminate` and as `_report.md` (the Prefect artifact's text)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mixforge import storage
from mixforge.decontam.config import DecontamConfig
from mixforge.decontam.index import build_index, plan_index
from mixforge.decontam.stage import DecontamStage
from mixforge.executor import Executor
from mixforge.runner import run_stage
from mixforge.runs import RunLayout, StageLayout
from mixforge.shards import ReadConfig


def run_decontaminate(run: RunLayout, inputs: Sequence[tuple[int, str]], config: Any, executor: Executor) -> dict:
    """The registered stage's run: `config.extra_stages.decontaminate` over `inputs` into the run's folder."""
    from mixforge.stages.registry import extra_settings

    return decontaminate(
        run.root,
        run.stage("decontaminate"),
        inputs,
        extra_settings(config, "decontaminate"),
        executor,
        config.read,
        config.storage.options,
    )


def decontaminate(
    store: str,
    layout: StageLayout,
    inputs: Sequence[tuple[int, str]],
    config: DecontamConfig,
    executor: Executor,
    read_options: ReadConfig = ReadConfig(),
    storage_options: Mapping[str, Any] | None = None,
) -> dict:
    """`run_decontaminate` with its parts spelled out: the `store` root (the index goes to its
    `index/decontam/` unless `config.index` names another folder), the stage's `layout`."""
    plan = plan_index(config, store, storage_options)
    manifest = build_index(plan, executor, storage_options)
    examples = storage.join(layout.dir, "_work", "examples")
    stage = DecontamStage(config, plan.uri, examples, storage_options)
    summary = run_stage(stage, layout, inputs, executor, read_options, storage_options, write_stats=False)
    summary["decontaminate"] = build_report(config, manifest, summary, layout, storage_options)
    storage.write_json(layout.stats, summary, storage_options)
    return summary


def build_report(
    config: DecontamConfig,
    manifest: Mapping[str, Any],
    summary: dict,
    layout: StageLayout,
    storage_options: Mapping[str, Any] | None = None,
) -> dict:
    """The stage's report from the figures in `summary` (consumed: they leave the summary) and the
    examples the shards left; writes `_report.md`; returns what goes into the summary."""
    figures = summary.pop("figures", None) or {}
    missing = summary.pop("figures_missing", [])
    examples: dict[str, list] = {}
    for part in storage.list_json(storage.join(layout.dir, "_work", "examples"), storage_options):
        for bench, found in part.items():
            examples.setdefault(bench, []).extend(found)
    by_bench = {
        b.name: {
            **figures.get("by_benchmark", {}).get(b.name, {"docs": 0, "tokens": 0}),
            "examples": examples.get(b.name, [])[: config.examples],
        }
        for b in config.benchmarks
    }
    report = {
        "mode": config.mode,
        "ngram": config.ngram,
        "tokens": "normalised words (the n-gram tokenisation), not model tokens",
        "index": {
            k: manifest.get(k)
            for k in (
                "uri",
                "key",
                "reused",
                "items",
                "items_without_ngrams",
                "ngrams",
                "frequent_dropped",
                "stop_dropped",
                "build_seconds",
            )
        },
        "frequent_rule": f"n-grams in more than {config.max_benchmark_items} benchmark items, and the "
        f"{len(config.stop_ngrams)} stop n-gram(s), are left out of the index",
        "docs_scanned": figures.get("docs_scanned", 0),
        "tokens_scanned": figures.get("tokens_scanned", 0),
        "docs_contaminated": figures.get("docs_contaminated", 0),
        "tokens_contaminated": figures.get("tokens_contaminated", 0),
        "matched_ngrams": figures.get("matched_ngrams", 0),
        "by_benchmark": by_bench,
        "by_source": dict(sorted(figures.get("by_source", {}).items())),
        "shards_without_figures": missing,
    }
    if config.mode == "cut":
        report["cut"] = {
            "pieces": summary.get("counters", {}).get("cut_pieces", 0),
            "parents": summary.get("counters", {}).get("cut_spans_docs", 0),
            **config.cut.model_dump(),
        }
    markdown = storage.join(layout.dir, "_report.md")
    storage.write_bytes(markdown, markdown_report(report, summary["name"]).encode(), storage_options)
    report["markdown"] = markdown
    return report


def markdown_report(report: Mapping[str, Any], stage: str = "decontaminate") -> str:
    """The report as markdown (the stage's `_report.md` and its Prefect artifact)."""
    idx = report["index"]
    share = report["docs_contaminated"] / report["docs_scanned"] if report["docs_scanned"] else 0.0
    lines = [
        f"# {stage}: benchmark contamination ({report['mode']}, {report['ngram']}-grams)",
        "",
        f"{report['docs_contaminated']:,} of {report['docs_scanned']:,} documents contaminated ({share:.3%}), "
        f"{report['tokens_contaminated']:,} of {report['tokens_scanned']:,} tokens ({report['tokens']}).",
        "",
        f"Index `{idx['uri']}` ({'reused' if idx['reused'] else 'built'}): {idx['ngrams']:,} n-grams of "
        f"{idx['items']:,} benchmark items ({idx['items_without_ngrams']:,} items too short for one); "
        f"{idx['frequent_dropped']:,} frequent and {idx['stop_dropped']:,} stop-listed n-grams left out "
        f"({report['frequent_rule']}).",
        "",
        "## Per benchmark",
        "",
        "| benchmark | docs | tokens |",
        "|---|---:|---:|",
    ]
    lines += [f"| {b} | {v['docs']:,} | {v['tokens']:,} |" for b, v in report["by_benchmark"].items()]
    lines += [
        "",
        "## Per source",
        "",
        "| source | docs | contaminated | tokens | contaminated tokens |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {s} | {v['docs']:,} | {v['docs_contaminated']:,} | {v['tokens']:,} | {v['tokens_contaminated']:,} |"
        for s, v in report["by_source"].items()
    ]
    if "cut" in report:
        c = report["cut"]
        lines += [
            "",
            f"Cut: {c['parents']:,} documents cut, {c['pieces']:,} pieces kept (margin {c['margin_chars']} "
            f"chars, pieces under {c['min_piece_chars']} chars dropped, over {c['max_splits']} splits dropped).",
        ]
    lines += ["", "## Examples", ""]
    for b, v in report["by_benchmark"].items():
        for ex in v["examples"]:
            lines.append(f'- {b}: `{ex["id"]}` ({ex["source"]}, {ex["matches"]} n-grams): "{ex["ngram"]}"')
    return "\n".join(lines) + "\n"
