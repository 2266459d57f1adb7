"""The `mixforge` command. Parses arguments and runs flows (imported lazily: `mixforge --help`
stays fast and the library never depends on the flows layer).

With --json, stdout holds only the JSON summary; logs and progress go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from importlib import resources
from typing import Any

EXIT_USAGE, EXIT_FAILED = 2, 1


def _setup_environment() -> None:
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The temporary (ephemeral) API server can take a while to start on a loaded machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "240")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    # Library progress and stage logs also reach the flow run's log in the Prefect UI.
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "mixforge")


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    logger = logging.getLogger("mixforge")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


def _install_progress(args: argparse.Namespace) -> Any:
    from mixforge import progress

    if sys.stderr.isatty() and not args.quiet:
        bar = progress.RichProgress()
        progress.install(bar)
        return bar
    return None


def demo_corpus_path() -> str:
    return str(resources.files("mixforge") / "demo_corpus")


def _print_summary(summary: dict, as_json: bool) -> None:
    from mixforge.runner import quarantine_rows

    if as_json:
        from mixforge import contracts

        # the pipeline's summary (demo) is the curate summary plus the mixture built from it
        contracts.print_json(summary, contracts.DemoSummary if "mixture" in summary else contracts.CurateSummary)
        return
    if summary.get("run_id") is None and "incremental" in summary:
        print(
            f"nothing new to curate: all {summary['incremental'].get('input_shards', 0)} "
            "input shard(s) are in the pool already"
        )
        return
    print(f"run {summary['run_id']}{' (resumed)' if summary.get('resumed') else ''}")
    for s in summary["stages"]:
        dropped = ", ".join(f"{k}={v:,}" for k, v in s["docs_dropped"].items()) or "none"
        skipped = ", ".join(f"{k}={v:,}" for k, v in s.get("docs_skipped", {}).items())
        print(
            f"  {s['name']:<10} {s['docs_in']:>9,} in  {s['docs_kept']:>9,} kept  dropped: {dropped}"
            + (f"  skipped: {skipped}" if skipped else "")
            + f"  quarantined shards: {len(s['quarantined'])}  {s['seconds']:.1f}s"
        )
        for q in s["quarantined"]:
            print(f"    quarantined {q['shard']}: {q['error']} ({quarantine_rows(q)})")
        print(f"             output {s['output']}  (stats: {s['output'].rstrip('/')}/_stats.json)")
    print(f"curated shards: {summary['output']}")
    if summary.get("mixture"):
        from mixforge.mixtures.cli_commands import print_mix

        print()
        print_mix(summary["mixture"], as_json=False)


def _load_curate_config(path: str | None):
    from mixforge.config import CurateConfig, load_yaml

    return load_yaml(path, CurateConfig)


def _curate_config(args: argparse.Namespace):
    """The curate config of `curate` (the file's) or of a one-stage command (its stage only)."""
    config = _load_curate_config(args.config)
    return config if args.command == "curate" else config.model_copy(update={"stages": (args.command,)})


# Pre-flight checks: everything that can be known before Prefect or Ray start (read-only; a
# ConfigError is one line, exit 2). Each returns the run plan where there is one, so an
# interrupted run can say what it finished and how to resume.


def preflight_curate(args: argparse.Namespace):
    from mixforge import planning

    return planning.plan_curate(
        args.input, args.output, _curate_config(args), args.run_id, getattr(args, "incremental", False)
    )


def cmd_curate(args: argparse.Namespace) -> dict:
    """`curate`, or a single curation stage (normalize is put in front when the input is raw)."""
    from flows.curate import curate

    return curate(
        input=args.input,
        output=args.output,
        config=_curate_config(args),
        run_id=args.run_id,
        incremental=getattr(args, "incremental", False),
    )


def _rephrase_config(args: argparse.Namespace):
    from mixforge.config import ConfigError, load_yaml
    from mixforge.rephrase.config import RephraseRunConfig

    if not args.config:
        raise ConfigError(
            "rephrase needs --config FILE naming at least rephrase.engine.model (see configs/rephrase.example.yaml)"
        )
    return load_yaml(args.config, RephraseRunConfig)


def preflight_rephrase(args: argparse.Namespace):
    from mixforge import planning

    return planning.plan_generating("rephrase", args.input, args.output, _rephrase_config(args), args.run_id)


def cmd_rephrase(args: argparse.Namespace) -> dict:
    from flows.rephrase import rephrase

    return rephrase(input=args.input, output=args.output, config=_rephrase_config(args), run_id=args.run_id)


DEMO_LICENSES = {
    "janeaustenr": "public domain",
    "kjv-bible": "public domain",
    "jargon-file": "public domain",
    "gitenberg": "public domain (Project Gutenberg texts)",
    "messy": "CC0 (hand-made test rows)",
    "*": "undeclared",
}


def preflight_demo(args: argparse.Namespace):
    from mixforge import planning

    planning.check_run_id(args.run_id)
    planning.check_output(os.path.abspath(args.output))
    return _load_curate_config(args.config)


def cmd_demo(args: argparse.Namespace) -> dict:
    """The whole pipeline on the bundled corpus: curate, then a mixture version with its data card."""
    from flows.pipeline import pipeline
    from mixforge.mixtures.spec import MixSpec

    config = _load_curate_config(args.config)
    output = os.path.abspath(args.output)
    mixture = MixSpec.model_validate(
        {
            "name": "demo",
            "pool": [output],
            "store": output,
            "seed": 0,
            "budget_fraction": 0.5,
            "licenses": DEMO_LICENSES,
            "groups": [
                {"name": "books", "where": {"source": ["janeaustenr", "gitenberg"]}, "weight": 0.5, "max_epochs": 2},
                {"name": "bible", "where": {"source": ["kjv-bible"]}, "weight": 0.3, "max_epochs": 2},
                {"name": "other", "where": {}, "weight": 0.2, "max_epochs": 2},
            ],
        }
    )
    return pipeline(input=demo_corpus_path(), output=output, config=config, mixture=mixture, run_id=args.run_id)


def preflight_train_classifier(args: argparse.Namespace):
    from mixforge import planning
    from mixforge.classify.config import TrainClassifierConfig
    from mixforge.config import ConfigError, load_yaml
    from mixforge.names import validate_name

    validate_name(args.name, "model name")
    if bool(args.positive or args.negative) == bool(args.input or args.label_column):
        raise ConfigError("give --positive and --negative, or --input with --label-column")
    config = load_yaml(args.config, TrainClassifierConfig)
    planning.check_output(args.output, config.storage_options)
    for flag, uris in (("--positive", args.positive), ("--negative", args.negative), ("--input", args.input)):
        for uri in uris or []:
            try:
                planning.discover(uri, config.storage_options)
            except ConfigError as e:
                raise ConfigError(str(e).replace("--input", flag, 1)) from None


def cmd_train_classifier(args: argparse.Namespace) -> dict:
    from flows.train_classifier import train_classifier
    from mixforge.classify.config import TrainClassifierConfig
    from mixforge.config import load_yaml

    config = load_yaml(args.config, TrainClassifierConfig)
    return train_classifier(
        name=args.name,
        output=args.output,
        positive=args.positive,
        negative=args.negative,
        input=args.input,
        label_column=args.label_column,
        config=config,
    )


def _print_model(summary: dict, as_json: bool) -> None:
    if as_json:
        from mixforge import contracts

        contracts.print_json(summary, contracts.TrainClassifierSummary)
        return
    m = summary["metrics"]
    print(f"model {summary['name']} {summary['version']}: {summary['model']}")
    print(
        "  held-out: "
        + "  ".join(
            f"{k}={m[k]:.4f}" for k in ("auc", "precision", "recall", "accuracy") if isinstance(m.get(k), float)
        )
    )


def preflight_mix(args: argparse.Namespace):
    from mixforge.export.cli_commands import export_option
    from mixforge.mixtures.preflight import check_spec
    from mixforge.mixtures.spec import load_spec

    spec = load_spec(args.spec)
    for warning in check_spec(spec, origin=args.spec):
        print(f"mixforge: warning: {warning}", file=sys.stderr)
    export = export_option(getattr(args, "export", None))  # a bad --export fails here, before the mixture is built
    if export is not None:
        from mixforge.export.build import check_export_settings

        check_export_settings(export, spec)  # its tokenizer loads, its phases are the spec's
    return spec


def cmd_mix(args: argparse.Namespace) -> dict:
    from flows.mix import mix
    from mixforge.export.cli_commands import export_option
    from mixforge.mixtures.spec import load_spec

    return mix(spec=load_spec(args.spec), export=export_option(args.export))


def cmd_mixtures_takedown(args: argparse.Namespace) -> dict:
    from flows.mix import mix_takedown
    from mixforge.mixtures.cli_commands import takedown_arguments

    return mix_takedown(**takedown_arguments(args))


def preflight_export(args: argparse.Namespace):
    """The export's plan: the version, format, tokenizer, template and any earlier export, checked before
    Prefect or Ray start (exit 2 naming what is wrong)."""
    from mixforge.export.build import check_export
    from mixforge.export.cli_commands import export_config

    return check_export(args.store, args.name, args.version, export_config(args), _storage_options_arg(args))


def cmd_export(args: argparse.Namespace) -> dict:
    from flows.export import export as export_flow
    from mixforge.export.cli_commands import export_config

    return export_flow(
        store=args.store,
        name=args.name,
        version=args.version,
        config=export_config(args),
        storage_options=_storage_options_arg(args) or None,
    )


def preflight_optimize(args: argparse.Namespace):
    """The search spec, its mixture spec and its targets, checked before Prefect or Ray start."""
    from mixforge.mixtures.preflight import check_spec
    from mixforge.optimize.search import check_targets, load_search_spec

    search = load_search_spec(args.spec)
    for warning in check_spec(search.mixture_spec(), origin=args.spec):
        print(f"mixforge: warning: {warning}", file=sys.stderr)
    check_targets(search, origin=args.spec)
    return search


def cmd_optimize(args: argparse.Namespace) -> dict:
    from flows.optimize import optimize
    from mixforge.optimize.search import load_search_spec

    return optimize(search=load_search_spec(args.spec), materialize=args.materialize)


def cmd_runs_unlock(args: argparse.Namespace) -> dict:
    """Release a run's lease by hand (its holder is gone but its heartbeat has not yet expired)."""
    from mixforge import lease
    from mixforge.config import ConfigError
    from mixforge.names import validate_name
    from mixforge.runs import RunLayout

    run = RunLayout(args.store, validate_name(args.run_id, "run id"))
    options = _storage_options_arg(args)
    if not storage_exists(run.manifest, options):
        raise ConfigError(f"no run {args.run_id!r} under {args.store}")
    released = lease.unlock(run.dir, options)
    if released is None:
        print(f"run {args.run_id} holds no lease", file=sys.stderr)
    else:
        print(f"released the lease of run {args.run_id} held by {lease.describe(released)}", file=sys.stderr)
    return {"run_id": args.run_id, "released": released is not None, "holder": released}


def cmd_runs_list(args: argparse.Namespace) -> dict:
    from mixforge import run_admin

    return run_admin.runs_list(args.store, _storage_options_arg(args))


def cmd_runs_show(args: argparse.Namespace) -> dict:
    from mixforge import run_admin

    return run_admin.runs_show(args.store, args.run_id, _storage_options_arg(args))


def cmd_runs_clean(args: argparse.Namespace) -> dict:
    from mixforge import run_admin

    return run_admin.runs_clean(args.store, args.dry_run, _storage_options_arg(args))


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _count(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def _print_runs_list(summary: dict, as_json: bool) -> None:
    if as_json:
        from mixforge import contracts

        contracts.print_json(summary, contracts.RunsList)
        return
    if not summary["runs"]:
        print(f"no runs under {summary['store']}")
        return
    header = ("run id", "created", "status", "stages done", "docs in", "kept", "size")
    print("{:<24} {:<20} {:<10} {:<28} {:>9} {:>9} {:>10}  in use by".format(*header))
    for r in summary["runs"]:
        done = f"{len(r['stages_done'])}/{len(r['stages'])} " + ",".join(r["stages_done"])
        print(
            f"{r['run_id']:<24} {r['created'] or '-':<20} {r['status']:<10} {done:<28} {_count(r['docs_in']):>9} "
            f"{_count(r['docs_kept']):>9} {_size(r['bytes']):>10}  {'; '.join(r['used_by']) or '-'}"
        )


def _print_runs_show(summary: dict, as_json: bool) -> None:
    if as_json:
        from mixforge import contracts

        contracts.print_json(summary, contracts.RunsShow)
        return
    s, manifest = summary, summary["manifest"] or {}
    print(f"run {s['run_id']}: {s['status']}  ({s['dir']})")
    print(f"  created      {s['created'] or '-'}   code {manifest.get('code_version', '-')}")
    print(f"  config hash  {manifest.get('config_hash', '-')}")
    inputs = manifest.get("inputs") or []
    print(f"  inputs       {len(inputs)} shard(s)" + (f", first {inputs[0]['uri']}" if inputs else ""))
    print(f"  lease        {s['lease_state']}" + (f": {s['held_by']}" if s["held_by"] else ""))
    print(f"  size         {_size(s['bytes'])}, scratch {_size(s['scratch_bytes'])}")
    for f in s["scratch"]:
        print(f"    scratch {f['uri']} ({_size(f['bytes'])})")
    print(f"  in use by    {'; '.join(s['used_by']) or '-'}")
    for st in s["stage_stats"]:
        if not st["done"]:
            print(f"  {st['name']:<12} not finished")
            continue
        x = st["stats"]
        dropped = ", ".join(f"{k}={v:,}" for k, v in x["docs_dropped"].items()) or "none"
        print(
            f"  {st['name']:<12} {x['docs_in']:>9,} in {x['docs_kept']:>9,} kept  dropped: {dropped}  "
            f"quarantined shards: {len(x['quarantined'])}  {x['seconds']:.1f}s"
        )


def _print_runs_clean(summary: dict, as_json: bool) -> None:
    if as_json:
        from mixforge import contracts

        contracts.print_json(summary, contracts.RunsClean)
        return
    verb = "would remove" if summary["dry_run"] else "removed"
    for r in summary["removed"]:
        what = "run" if r["what"] == "run" else "scratch"
        print(f"{verb} {what} {r['uri']} ({r['status']}, {_size(r['bytes'])})")
    for k in summary["kept"]:
        print(f"kept {k['run_id']} ({k['status']}): {k['reason']}")
    print(f"{verb} {len(summary['removed'])} item(s), {_size(summary['bytes_removed'])}")


def cmd_explain(args: argparse.Namespace) -> dict:
    from mixforge import explain

    args.printer = explain.print_explain
    return explain.explain(args.store, args.run_id, args.doc_id, _storage_options_arg(args))


def storage_exists(uri: str, options: dict) -> bool:
    from mixforge import storage

    return storage.exists(uri, options)


def _storage_options_arg(args: argparse.Namespace) -> dict:
    from mixforge.mixtures.cli_commands import _storage_options

    return _storage_options(args)


def _print_plain(summary: dict, as_json: bool) -> None:
    """The failure object of any command, or the summary of `runs unlock`."""
    if as_json:
        from mixforge import contracts

        contracts.print_json(
            summary, contracts.FailureSummary if "error_kind" in summary else contracts.RunsUnlockSummary
        )


class _Parser(argparse.ArgumentParser):
    """Usage errors raise instead of exiting, so `--json` still gets its one JSON object."""

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message}\n{self.format_usage().strip()}")


class UsageError(Exception):
    pass


def documented(help: str, description: str, *examples: str) -> dict[str, Any]:
    """`add_parser` keywords of a command: its one-line help, a description (paragraphs separated by
    blank lines) and its examples in the epilog. The raw formatter keeps the examples' layout, so the
    description is wrapped here."""
    import textwrap

    return {
        "help": help,
        "description": "\n\n".join(textwrap.fill(part, 100) for part in description.split("\n\n")),
        "epilog": ("example:\n" if len(examples) == 1 else "examples:\n") + "\n".join(f"  {e}" for e in examples),
        "formatter_class": argparse.RawDescriptionHelpFormatter,
    }


# Descriptions and examples of the built-in stage commands (a stage registered elsewhere gets a
# description from its help; see build_parser).
_STAGE_DOCS: dict[str, tuple[str, tuple[str, ...]]] = {
    "filter": (
        "Runs the filter stage over the input shards: fastText language ID, then the configured rule sets "
        "(Gopher repetition and quality, C4, FineWeb quality, URL block-lists) in order, each dropping or "
        "only annotating. Every drop goes to _removed/ with its rule, measured value and threshold. Settings: "
        "the config's filter: section (configs/curate.yaml lists every key).",
        (
            "mixforge filter --input ./raw/ --output ./store --json",
            "mixforge filter --input 'raw/*.jsonl.zst' --output ./store --config configs/curate.yaml",
        ),
    ),
    "classify": (
        "Runs the classify stage over the input shards: the fastText classifiers trained with train-classifier "
        "(quality_<name>, or domain and domain_score) and optional k-means clusters of sentence embeddings "
        "(cluster_id), with score histograms per source. It scores only; a mixture spec selects. Settings: the "
        "config's classify: section (configs/classify.example.yaml).",
        (
            "mixforge classify --input ./store/runs/run-0123456789abcdef/filter --output ./store "
            "--config configs/classify.example.yaml",
        ),
    ),
    "dedup": (
        "Runs the dedup stage over the input shards: exact duplicates (a hash of the normalised text), then "
        "near duplicates (MinHash LSH, verified), one document kept per cluster by the keep rule, with "
        "dup_cluster and dup_count; the removed ones go to _removed/ naming the document kept. With "
        "dedup.index, new documents are deduplicated against a pool's persistent index. Settings: the "
        "config's dedup: section (configs/curate.yaml).",
        ("mixforge dedup --input ./store/runs/run-0123456789abcdef/filter --output ./store",),
    ),
}

_STAGE_IO = (
    "\n\nOutputs go to ROOT/runs/<run_id>/<stage>/ (kept shards, _removed/, _stats.json); raw input "
    "(not contract Parquet) gets normalize put in front. Rerunning a run id resumes it."
)


def build_parser() -> argparse.ArgumentParser:
    from mixforge import __version__

    parser = _Parser(
        prog="mixforge",
        description="Raw text shards -> versioned pretraining-data mixtures.",
        epilog="Each command's description and examples: mixforge COMMAND --help\n"
        "examples:\n"
        "  mixforge demo\n"
        "  mixforge curate --input 'raw/*.jsonl.zst' --output ./store --config configs/curate.yaml\n"
        "  mixforge mix --spec configs/mixture.example.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mixforge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--json", action="store_true", help="print a machine-readable summary on stdout (logs go to stderr)"
        )
        p.add_argument("--config", metavar="FILE", help="YAML config (see configs/)")
        p.add_argument(
            "--run-id", metavar="ID", help="resume or name a run (default: hash of inputs, config and code version)"
        )
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
        p.add_argument("-v", "--verbose", action="store_true")

    def stage_io(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--input",
            required=True,
            metavar="GLOB_OR_URI",
            help="input shards: a glob, a prefix/directory or a file (local, s3://, gs://...)",
        )
        p.add_argument(
            "--output", required=True, metavar="ROOT_URI", help="store root; outputs go to ROOT/runs/<run_id>/<stage>/"
        )

    p = sub.add_parser(
        "curate",
        **documented(
            "raw shards -> curated pool (normalize, then the configured stages)",
            "Runs the configured stages over the input shards (default: normalize, filter, classify when "
            "classifiers are configured, dedup), each writing its kept shards, _removed/ (every dropped "
            "document with its reason) and _stats.json under ROOT/runs/<run_id>/<stage>/. The config "
            "(configs/curate.yaml lists every key) is checked before anything starts. Rerunning a run id "
            "resumes it; --incremental curates only the shards the store's pool has not seen.",
            "mixforge curate --input 'raw/*.jsonl.zst' --output ./store --config configs/curate.yaml",
            "mixforge curate --input 's3://crawl/2026-11/' --output s3://pool --incremental --json",
        ),
    )
    stage_io(p)
    common(p)
    p.add_argument(
        "--incremental",
        action="store_true",
        help="curate only input shards no completed run of the pool has curated, deduplicated against the "
        "pool's dedup index (default ROOT/index/dedup)",
    )
    p.set_defaults(func=cmd_curate, preflight=preflight_curate)

    from mixforge.stages.registry import get_stage, stage_names

    for name in stage_names():  # one command per registered stage (normalize runs as part of `curate`)
        if name == "normalize" or get_stage(name).generates:
            continue
        stage = get_stage(name)
        description, examples = _STAGE_DOCS.get(name) or (
            f"Runs the {name} stage over the input shards: {stage.help}. Settings: extra_stages.{name} in the config.",
            (f"mixforge {name} --input ./store/runs/run-0123456789abcdef/filter --output ./store",),
        )
        p = sub.add_parser(name, **documented(stage.help, description + _STAGE_IO, *examples))
        stage_io(p)
        common(p)
        p.set_defaults(func=cmd_curate, preflight=preflight_curate)

    p = sub.add_parser(
        "rephrase",
        **documented(
            "synthetic rephrasings of selected documents with an LLM (vLLM), with provenance",
            "Rewrites the documents of curated shards that the config's rephrase.select picks (up to its cap) "
            "in the configured styles with a vLLM engine, and writes the synthetic rows, each with its parent_id, "
            "style, model and prompt hash, under ROOT/runs/<run_id>/rephrase/. Long documents are split into "
            "chunks; empty, truncated and echoed outputs are dropped. Needs --config naming at least "
            "rephrase.engine.model (configs/rephrase.example.yaml). Rerunning a run id resumes it, batch by batch.",
            "mixforge rephrase --input ./store/runs/run-0123456789abcdef/dedup --output ./store "
            "--config configs/rephrase.example.yaml",
        ),
    )
    stage_io(p)
    common(p)
    p.set_defaults(func=cmd_rephrase, preflight=preflight_rephrase)

    p = sub.add_parser(
        "train-classifier",
        **documented(
            "train a fastText quality/domain classifier into ROOT/models/<name>/vNNNN/",
            "Trains a fastText classifier on positive and negative documents (a binary quality score), or on "
            "documents labelled by a field (--input with --label-column: binary or multiclass), reports its "
            "held-out metrics, and stores a new version ROOT/models/<name>/vNNNN/ with model.bin and its model "
            "card (card.json, card.md). The classify stage applies it when the config names it "
            "(configs/classify.example.yaml).",
            "mixforge train-classifier --positive 'refs/*.jsonl' --negative 'web/*.jsonl' --name edu --output ./store",
            "mixforge train-classifier --input labelled.parquet --label-column topic --name topic --output ./store",
        ),
    )
    p.add_argument(
        "--positive",
        action="append",
        metavar="URI",
        help="positive (e.g. high-quality) documents: a glob, prefix or file; repeatable",
    )
    p.add_argument(
        "--negative", action="append", metavar="URI", help="negative (e.g. random web) documents; repeatable"
    )
    p.add_argument(
        "--input", action="append", metavar="URI", help="labelled documents (with --label-column); repeatable"
    )
    p.add_argument("--label-column", metavar="COL", help="input field holding each document's label")
    p.add_argument("--name", required=True, help="model name: lowercase letters, digits, dashes")
    p.add_argument(
        "--output", required=True, metavar="ROOT_URI", help="store root; the model goes to ROOT/models/<name>/vNNNN/"
    )
    p.add_argument(
        "--json", action="store_true", help="print a machine-readable summary on stdout (logs go to stderr)"
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="YAML TrainClassifierConfig (fasttext params, preprocess, split, storage_options)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_train_classifier, printer=_print_model, preflight=preflight_train_classifier)

    p = sub.add_parser(
        "demo",
        **documented(
            "curate the bundled sample corpus into ./data and build a mixture from it",
            "Runs the whole pipeline on the bundled sample corpus (public-domain books and one shard of broken "
            "rows, in every input format): curates it under ROOT/runs/<run_id>/ and builds a version of the "
            "mixture `demo` from it, with its manifest and data card under ROOT/mixtures/demo/. `make demo` "
            "runs this.",
            "mixforge demo",
            "mixforge demo --output /tmp/mixforge-demo --json",
        ),
    )
    p.add_argument("--output", default="data", metavar="ROOT_URI", help="store root (default: ./data)")
    common(p)
    p.set_defaults(func=cmd_demo, preflight=preflight_demo)

    r = sub.add_parser(
        "runs",
        **documented(
            "runs in a store: list, show, clean, unlock",
            "The runs under ROOT/runs/: list them, inspect one, remove unfinished ones and scratch, release a "
            "lease. mixforge runs ACTION --help describes each.",
            "mixforge runs list --store data",
            "mixforge runs clean --store data --dry-run",
        ),
    )
    rsub = r.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=_Parser)

    def runs_parser(name: str, help: str, description: str, example: str) -> argparse.ArgumentParser:
        p = rsub.add_parser(name, **documented(help, description, example))
        p.add_argument("--store", required=True, metavar="ROOT_URI", help="store root (local path, s3://, gs://...)")
        p.add_argument(
            "--storage-options",
            metavar="JSON",
            help="fsspec storage options without credentials, e.g. '{\"endpoint_url\": ...}'",
        )
        p.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
        p.add_argument("-q", "--quiet", action="store_true", help=argparse.SUPPRESS)
        p.add_argument("-v", "--verbose", action="store_true", help=argparse.SUPPRESS)
        return p

    p = runs_parser(
        "list",
        "every run of the store, newest first: status, stages done, documents, size, what uses it",
        "One row per run under ROOT/runs/: its id, when it started, its status (running: a live process holds "
        "its lease; complete; failed: its process ended without finishing; incomplete: killed, or never "
        "leased), the stages it finished, documents read and kept, bytes on disk, and the mixture versions, "
        "dedup indexes or runs that use it.",
        "mixforge runs list --store data",
    )
    p.set_defaults(func=cmd_runs_list, printer=_print_runs_list)
    p = runs_parser(
        "show",
        "one run: its manifest, each stage's stats, its lease, scratch and size",
        "The run's manifest (_run.json: inputs, config hash, code version), each stage's summary "
        "(_stats.json), who holds its lease, its scratch folders and its size.",
        "mixforge runs show run-0123456789abcdef --store data --json",
    )
    p.add_argument("run_id", metavar="RUN_ID")
    p.set_defaults(func=cmd_runs_show, printer=_print_runs_show)
    p = runs_parser(
        "clean",
        "remove failed and unfinished runs nothing uses, and the scratch of complete runs",
        "Removes runs that are failed or incomplete, held by no live process and used by no mixture version, "
        "dedup index or other run, and the scratch of complete runs (dedup _work/, _pieces/). A complete run "
        "is never removed. --dry-run lists what would go, with sizes, and removes nothing.",
        "mixforge runs clean --store data --dry-run",
    )
    p.add_argument("--dry-run", action="store_true", help="list what would be removed; remove nothing")
    p.set_defaults(func=cmd_runs_clean, printer=_print_runs_clean)
    p = runs_parser(
        "unlock",
        "release a run's lease when the process holding it is gone",
        "Releases the lease of RUN_ID by hand, so the next run of it starts at once (a lease whose "
        "heartbeats stop is taken over by itself after its TTL).",
        "mixforge runs unlock run-0123456789abcdef --store data",
    )
    p.add_argument("run_id", metavar="RUN_ID")
    p.set_defaults(func=cmd_runs_unlock, printer=_print_plain)

    p = sub.add_parser(
        "explain",
        help="one document's path through a run: kept or dropped at each stage, and why",
        description="Prints what each stage of RUN_ID did with DOC_ID: kept (with the scores and labels it "
        "added) or dropped (stage, rule, measured value, threshold, shard and row), its duplicate cluster and "
        "the document dedup kept for it, rows generated from it, and the mixture versions containing it.",
        epilog="example:\n  mixforge explain --store data --run run-0123456789abcdef 'emma:ch001'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("doc_id", metavar="DOC_ID")
    p.add_argument("--store", required=True, metavar="ROOT_URI", help="store root (local path, s3://, gs://...)")
    p.add_argument("--run", required=True, metavar="RUN_ID", dest="run_id", help="the run to look in")
    p.add_argument("--storage-options", metavar="JSON", help="fsspec storage options without credentials")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("-v", "--verbose", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser(
        "server",
        help="the local Prefect server that commands share: status, stop",
        description="Commands that run a flow share one local Prefect server (started in the background by the "
        "first of them, stopped after MIXFORGE_PREFECT_SERVER_IDLE_S idle seconds, default 900); its UI shows "
        "every local run. `status` prints its address; `stop` stops it now. Not used when PREFECT_API_URL names "
        "a server, or with MIXFORGE_PREFECT_SERVER=temporary.",
        epilog="example:\n  mixforge server status",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", choices=("status", "stop"))
    p.add_argument("-q", "--quiet", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("-v", "--verbose", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_server, printer=_print_server)

    from mixforge.mixtures import cli_commands

    cli_commands.register(sub, cmd_mix=cmd_mix, cmd_takedown=cmd_mixtures_takedown, preflight_mix=preflight_mix)

    from mixforge.export import cli_commands as export_commands

    export_commands.register(sub, cmd_export=cmd_export, preflight_export=preflight_export)

    from mixforge.optimize import cli_commands as optimize_commands

    optimize_commands.register(sub, cmd_optimize=cmd_optimize, preflight_optimize=preflight_optimize)
    return parser


def cmd_server(args: argparse.Namespace) -> dict:
    from mixforge import prefect_server

    mode = prefect_server.mode()
    server = prefect_server.stop() if args.action == "stop" else prefect_server.running()
    return {
        "action": args.action,
        "mode": mode,
        "url": server.url if server else None,
        "external": os.environ.get("PREFECT_API_URL") if mode == "external" else None,
    }


def _print_server(summary: dict, as_json: bool) -> None:
    if summary["action"] == "stop":
        print(f"stopped the shared Prefect server at {summary['url']}" if summary["url"] else "no shared server ran")
    elif summary["mode"] == "external":
        print(f"commands use the Prefect server at {summary['external']} (PREFECT_API_URL)")
    elif summary["url"]:
        print(f"shared Prefect server running: {summary['url']} (UI and API; mode {summary['mode']})")
    else:
        print(
            f"no shared Prefect server running (mode {summary['mode']}: the next command starts one)"
            if summary["mode"] == "shared"
            else "commands use Prefect's temporary server (MIXFORGE_PREFECT_SERVER)"
        )


class _Stdout:
    """With --json, stdout carries exactly one JSON object whatever happens: for the whole run, file
    descriptor 1 points at stderr (so Ray's and Prefect's subprocesses, which inherit it, and any
    stray print land there) and the JSON is written to the real stdout, saved aside, at the end.
    When sys.stdout is not file descriptor 1 (the CLI called in-process, e.g. under a test's
    capture), the JSON goes to that stream and the descriptors are left alone."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self._stream = sys.stdout
        self._fd: int | None = None
        if as_json and _is_fd1(sys.stdout):
            sys.stdout.flush()
            self._fd = os.dup(1)
            os.dup2(2, 1)

    def emit(self, printer, summary: Any) -> None:
        if self._fd is None:
            saved, sys.stdout = sys.stdout, self._stream
            try:
                printer(summary, self.as_json)
                sys.stdout.flush()
            finally:
                sys.stdout = saved
            return
        sys.stdout.flush()
        real = os.fdopen(os.dup(self._fd), "w", encoding="utf-8")
        saved, sys.stdout = sys.stdout, real
        try:
            printer(summary, True)
        finally:
            sys.stdout = saved
            real.close()

    def close(self) -> None:
        if self._fd is not None:
            sys.stdout.flush()
            os.dup2(self._fd, 1)
            os.close(self._fd)
            self._fd = None


def _is_fd1(stream: Any) -> bool:
    try:
        return stream.fileno() == 1
    except (AttributeError, OSError, ValueError):
        return False


def _failure(command: str | None, kind: str, message: str, exit_code: int, plan: Any = None, **extra: Any) -> dict:
    run = getattr(plan, "run", None)
    return {
        "command": command,
        "error": message,
        "error_kind": kind,
        "exit_code": exit_code,
        **({"run_id": run.run_id, "run_dir": run.dir} if run is not None else {}),
        **extra,
    }


def _resume_hint(argv: list[str], plan: Any) -> str:
    run = getattr(plan, "run", None)
    if run is None:
        return "rerun the same command to resume"
    args = list(argv)
    if "--run-id" not in args:
        args += ["--run-id", run.run_id]
    return "resume with: mixforge " + " ".join(args)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    out = _Stdout("--json" in argv)
    try:
        return _main(argv, out)
    finally:
        out.close()


def _main(argv: list[str], out: _Stdout) -> int:
    from mixforge import interrupts
    from mixforge.classify.train import TrainingDataError
    from mixforge.config_errors import ConfigError

    usage_errors = (ConfigError, TrainingDataError, FileNotFoundError)  # exit 2: fix the command, not the data

    try:
        args = build_parser().parse_args(argv)
    except UsageError as e:
        print(str(e), file=sys.stderr)
        out.emit(_print_plain, _failure(None, "usage", str(e).splitlines()[0], EXIT_USAGE)) if out.as_json else None
        return EXIT_USAGE
    _setup_environment()
    _setup_logging(args.verbose)
    interrupts.install()
    plan, bar, services = None, None, None
    try:
        if getattr(args, "preflight", None) is not None:
            plan = args.preflight(args)  # before Prefect or Ray start; writes nothing
            if not getattr(args, "dry_run", False):
                services = _LocalServices.start(args, plan)
        bar = _install_progress(args)
        with local_prefect_settings():
            if services is not None:
                services.ready()
            summary = args.func(args)
    except interrupts.Interrupted as e:
        interrupts.ignore_further()
        _close(bar)
        note = _interrupted_note(plan)
        print(
            f"mixforge: {args.command} interrupted by {e.args[0]}: {note}; {_resume_hint(argv, plan)}", file=sys.stderr
        )
        _shutdown_local_services()
        if out.as_json:
            out.emit(
                _print_plain,
                _failure(args.command, "interrupted", f"interrupted by {e.args[0]}", e.exit_code, plan, progress=note),
            )
        return e.exit_code
    except usage_errors as e:
        _close(bar)
        for line in str(e).splitlines() or [type(e).__name__]:
            print(f"mixforge: error: {line}", file=sys.stderr)
        if out.as_json:  # a config with several bad fields: one line each in `errors`, joined in `error`
            lines = [line for line in str(e).splitlines() if line.strip()]
            out.emit(_print_plain, _failure(args.command, "usage", "; ".join(lines), EXIT_USAGE, plan, errors=lines))
        return EXIT_USAGE
    except Exception as e:
        _close(bar)
        print(f"mixforge: {args.command} failed: {type(e).__name__}: {e}", file=sys.stderr)
        if out.as_json:
            out.emit(_print_plain, _failure(args.command, "failed", f"{type(e).__name__}: {e}", EXIT_FAILED, plan))
        return EXIT_FAILED
    finally:
        if services is not None:
            services.close()
    _close(bar)
    out.emit(getattr(args, "printer", _print_summary), summary)
    return 0


def _interrupted_note(plan: Any) -> str:
    """What the interrupted run finished (from the store), or that nothing had started."""
    from mixforge import planning

    planning.release_all_leases()
    run = getattr(plan, "run", None)
    if run is None:
        return "no run had started"
    try:
        return planning.progress_note(run, plan.config.storage.options)
    except Exception as e:  # noqa: BLE001 - the note is a courtesy; the exit code says what happened
        return f"(could not read the run's progress: {e})"


class _LocalServices:
    """What a command that runs a flow needs started, chosen to cost seconds, not tens of seconds:

    * the executor: a local process pool when no Ray cluster is named and the inputs are small
      (`tasks.executor.choose_executor`), else Ray;
    * the Prefect API: the shared local server (`mixforge.prefect_server`), started in the background
      by the first command and reused by the next ones, unless PREFECT_API_URL names one or
      MIXFORGE_PREFECT_SERVER=temporary asks for Prefect's own temporary server.

    Both start while the command imports Prefect and its flow; `ready()` waits for them."""

    # What `start` sets in the environment (the flows read it there); `close` puts it back, so a
    # command run in-process (tests, notebooks) leaves its caller's environment as it found it.
    ENVIRONMENT = ("PREFECT_API_URL", "MIXFORGE_SHARED_PREFECT_SERVER", "MIXFORGE_EXECUTOR")

    def __init__(self, starting: Any, executor: str, saved: dict[str, str | None]) -> None:
        self.starting, self.executor, self.keepalive, self.saved = starting, executor, None, saved

    @classmethod
    def start(cls, args: argparse.Namespace, plan: Any) -> _LocalServices:
        from mixforge import prefect_server

        saved = {name: os.environ.get(name) for name in cls.ENVIRONMENT}
        starting = None
        if prefect_server.mode() == "shared":
            starting = prefect_server.start_or_reuse()
            prefect_server.use(starting.server)  # before Prefect is imported: it reads the URL then
        from tasks.executor import choose_executor

        ray_config = _ray_config(plan)
        executor = choose_executor(ray_config, _input_bytes(args, plan))
        logging.getLogger("mixforge").debug("executor: %s", executor)
        if executor == "local":
            from mixforge.executor import warm_local_pool

            warm_local_pool(ray_config.num_cpus)
        return cls(starting, executor, saved)

    def ready(self) -> None:
        import prefect.flows  # noqa: F401 - the import overlaps the server's start; the wait comes after

        if self.starting is not None:
            from mixforge import prefect_server

            server = self.starting.wait()
            self.keepalive = prefect_server.KeepAlive(server)

    def close(self) -> None:
        if self.keepalive is not None:
            self.keepalive.stop()
        for name, value in self.saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _ray_config(plan: Any):
    """The Ray settings of what the pre-flight planned: a run plan's config, a curate config (demo) or
    a mixture spec; the defaults for a command with none (train-classifier)."""
    from mixforge.config import RayConfig

    if hasattr(plan, "mixture_spec"):  # a search spec: its mixture's
        plan = plan.mixture_spec()
    ray = getattr(getattr(plan, "config", plan), "ray", None)
    return ray if isinstance(ray, RayConfig) else RayConfig()


def _input_bytes(args: argparse.Namespace, plan: Any) -> int | None:
    """The size of the job's inputs where the pre-flight knows it (None: unknown, Ray decides)."""
    shards = getattr(plan, "input_shards", None)
    if shards:
        sizes = [s.size for s in shards]
        return None if any(size is None for size in sizes) else sum(sizes)
    if args.command == "demo":
        from pathlib import Path

        return sum(f.stat().st_size for f in Path(demo_corpus_path()).iterdir())
    if args.command == "mix":
        return _pool_bytes(plan)
    if args.command == "optimize":
        return _pool_bytes(plan.mixture_spec())
    if args.command == "export":  # an ExportPlan: the version's data files
        return sum(f.get("bytes") or 0 for ph in plan.phases for f in ph.files)
    return None


def _pool_bytes(spec: Any) -> int | None:
    """The size of a mixture's pool (one listing per pool pattern; None where a size is unknown)."""
    from mixforge import storage

    try:
        sizes = [s.size for p in spec.pool for s in storage.discover_inputs(p, spec.storage_options).shards]
    except Exception:  # noqa: BLE001 - the pre-flight has judged the spec; this only picks the executor
        return None
    return None if any(size is None for size in sizes) else sum(sizes)


def _shutdown_local_services() -> None:
    """Stop the local pool or the local Ray this process started (a cluster the user runs is only
    disconnected from), without waiting for calls in flight: the run resumes from its markers."""
    from mixforge.executor import shutdown_local_pool

    shutdown_local_pool(kill=True)
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()


def local_prefect_settings():
    """On a temporary or the shared local server nothing watches for crashed runs, so flow-run
    heartbeats only cost time: a sync flow run waits up to a second for its heartbeat thread."""
    import contextlib

    from mixforge import prefect_server

    if prefect_server.mode() == "external":
        return contextlib.nullcontext()
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    return temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})


def _close(bar: Any) -> None:
    if bar is not None:
        bar.close()


if __name__ == "__main__":
    raise SystemExit(main())
