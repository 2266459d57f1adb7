"""The `mixforge` command. Parses arguments and runs flows (imported lazily: `mixforge --help`
stays fast and the library never depends on the flows layer).

With --json, stdout holds only the JSON summary; logs and progress go to stderr.
"""

from __future__ import annotations

import argparse
import json
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
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2, default=str) + "\n")
        return
    if summary.get("run_id") is None and "incremental" in summary:
        print(f"nothing new to curate: all {summary['incremental'].get('input_shards', 0)} input shard(s) are in the pool already")
        return
    print(f"run {summary['run_id']}{' (resumed)' if summary.get('resumed') else ''}")
    for s in summary["stages"]:
        dropped = ", ".join(f"{k}={v:,}" for k, v in s["docs_dropped"].items()) or "none"
        skipped = ", ".join(f"{k}={v:,}" for k, v in s.get("docs_skipped", {}).items())
        print(f"  {s['name']:<10} {s['docs_in']:>9,} in  {s['docs_kept']:>9,} kept  dropped: {dropped}"
              + (f"  skipped: {skipped}" if skipped else "")
              + f"  quarantined shards: {len(s['quarantined'])}  {s['seconds']:.1f}s")
        for q in s["quarantined"]:
            print(f"    quarantined {q['shard']}: {q['error']}")
        print(f"             output {s['output']}  (stats: {s['output'].rstrip('/')}/_stats.json)")
    print(f"curated shards: {summary['output']}")
    if summary.get("mixture"):
        from mixforge.mixtures.cli_commands import print_mix

        print()
        print_mix(summary["mixture"], as_json=False)


def _load_curate_config(path: str | None):
    from mixforge.config import CurateConfig, load_yaml

    return load_yaml(path, CurateConfig)


def cmd_curate(args: argparse.Namespace) -> dict:
    from flows.curate import curate

    config = _load_curate_config(args.config)
    return curate(input=args.input, output=args.output, config=config, run_id=args.run_id, incremental=args.incremental)


def cmd_stage(args: argparse.Namespace) -> dict:
    """A single curation stage (normalize is put in front automatically when the input is raw)."""
    from flows.curate import curate

    config = _load_curate_config(args.config).model_copy(update={"stages": (args.command,)})
    return curate(input=args.input, output=args.output, config=config, run_id=args.run_id)


def cmd_rephrase(args: argparse.Namespace) -> dict:
    from flows.rephrase import rephrase
    from mixforge.config import ConfigError, load_yaml
    from mixforge.rephrase.config import RephraseRunConfig

    if not args.config:
        raise ConfigError("rephrase needs --config FILE naming at least rephrase.engine.model (see configs/rephrase.example.yaml)")
    return rephrase(input=args.input, output=args.output, config=load_yaml(args.config, RephraseRunConfig), run_id=args.run_id)


DEMO_LICENSES = {"janeaustenr": "public domain", "kjv-bible": "public domain", "jargon-file": "public domain",
                 "gitenberg": "public domain (Project Gutenberg texts)", "messy": "CC0 (hand-made test rows)",
                 "*": "undeclared"}


def cmd_demo(args: argparse.Namespace) -> dict:
    """The whole pipeline on the bundled corpus: curate, then a mixture version with its data card."""
    from flows.pipeline import pipeline
    from mixforge.mixtures.spec import MixSpec

    config = _load_curate_config(args.config)
    output = os.path.abspath(args.output)
    mixture = MixSpec.model_validate({
        "name": "demo", "pool": [output], "store": output, "seed": 0, "budget_fraction": 0.5, "licenses": DEMO_LICENSES,
        "groups": [{"name": "books", "where": {"source": ["janeaustenr", "gitenberg"]}, "weight": 0.5, "max_epochs": 2},
                   {"name": "bible", "where": {"source": ["kjv-bible"]}, "weight": 0.3, "max_epochs": 2},
                   {"name": "other", "where": {}, "weight": 0.2, "max_epochs": 2}],
    })
    return pipeline(input=demo_corpus_path(), output=output, config=config, mixture=mixture, run_id=args.run_id)


def cmd_train_classifier(args: argparse.Namespace) -> dict:
    from flows.train_classifier import train_classifier
    from mixforge.classify.config import TrainClassifierConfig, validate_model_name
    from mixforge.config import ConfigError, load_yaml

    validate_model_name(args.name)  # before any flow run starts
    if bool(args.positive or args.negative) == bool(args.input or args.label_column):
        raise ConfigError("give --positive and --negative, or --input with --label-column")
    config = load_yaml(args.config, TrainClassifierConfig)
    return train_classifier(name=args.name, output=args.output, positive=args.positive, negative=args.negative,
                            input=args.input, label_column=args.label_column, config=config)


def _print_model(summary: dict, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2, default=str) + "\n")
        return
    m = summary["metrics"]
    print(f"model {summary['name']} {summary['version']}: {summary['model']}")
    print("  held-out: " + "  ".join(f"{k}={m[k]:.4f}" for k in ("auc", "precision", "recall", "accuracy") if isinstance(m.get(k), float)))


def cmd_mix(args: argparse.Namespace) -> dict:
    from flows.mix import mix
    from mixforge.mixtures.spec import load_spec

    return mix(spec=load_spec(args.spec))


def cmd_mixtures_takedown(args: argparse.Namespace) -> dict:
    from flows.mix import mix_takedown
    from mixforge.mixtures.cli_commands import takedown_arguments

    return mix_takedown(**takedown_arguments(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mixforge", description="Raw text shards -> versioned pretraining-data mixtures.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout (logs go to stderr)")
        p.add_argument("--config", metavar="FILE", help="YAML config (see configs/)")
        p.add_argument("--run-id", metavar="ID", help="resume or name a run (default: hash of inputs, config and code version)")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
        p.add_argument("-v", "--verbose", action="store_true")

    def stage_io(p: argparse.ArgumentParser) -> None:
        p.add_argument("--input", required=True, metavar="GLOB_OR_URI", help="input shards: a glob, a prefix/directory or a file (local, s3://, gs://...)")
        p.add_argument("--output", required=True, metavar="ROOT_URI", help="store root; outputs go to ROOT/runs/<run_id>/<stage>/")

    p = sub.add_parser("curate", help="raw shards -> curated pool (normalize, then the configured stages)")
    stage_io(p)
    common(p)
    p.add_argument("--incremental", action="store_true",
                   help="curate only input shards no completed run of the pool has curated, deduplicated against the "
                        "pool's dedup index (default ROOT/index/dedup)")
    p.set_defaults(func=cmd_curate)

    for name, help_text in [("filter", "language ID and heuristic quality filters (Gopher, C4, FineWeb, URL)"),
                            ("classify", "apply the configured fastText classifiers and embedding clusters (scores only: quality_*, domain, cluster_id)"),
                            ("dedup", "exact and MinHash-LSH fuzzy deduplication, keeping dup_cluster/dup_count")]:
        p = sub.add_parser(name, help=help_text)
        stage_io(p)
        common(p)
        p.set_defaults(func=cmd_stage)

    p = sub.add_parser("rephrase", help="synthetic rephrasings of selected documents with an LLM (vLLM), with provenance")
    stage_io(p)
    common(p)
    p.set_defaults(func=cmd_rephrase)

    p = sub.add_parser("train-classifier", help="train a fastText quality/domain classifier into ROOT/models/<name>/vNNNN/")
    p.add_argument("--positive", action="append", metavar="URI", help="positive (e.g. high-quality) documents: a glob, prefix or file; repeatable")
    p.add_argument("--negative", action="append", metavar="URI", help="negative (e.g. random web) documents; repeatable")
    p.add_argument("--input", action="append", metavar="URI", help="labelled documents (with --label-column); repeatable")
    p.add_argument("--label-column", metavar="COL", help="input field holding each document's label")
    p.add_argument("--name", required=True, help="model name: lowercase letters, digits, dashes")
    p.add_argument("--output", required=True, metavar="ROOT_URI", help="store root; the model goes to ROOT/models/<name>/vNNNN/")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout (logs go to stderr)")
    p.add_argument("--config", metavar="FILE", help="YAML TrainClassifierConfig (fasttext params, preprocess, split, storage_options)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_train_classifier, printer=_print_model)

    p = sub.add_parser("demo", help="curate the bundled sample corpus into ./data and build a mixture from it")
    p.add_argument("--output", default="data", metavar="ROOT_URI", help="store root (default: ./data)")
    common(p)
    p.set_defaults(func=cmd_demo)

    from mixforge.mixtures import cli_commands

    cli_commands.register(sub, cmd_mix=cmd_mix, cmd_takedown=cmd_mixtures_takedown)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_environment()
    _setup_logging(args.verbose)
    from mixforge.classify.config import InvalidModelName
    from mixforge.classify.train import TrainingDataError
    from mixforge.config import ConfigError
    from mixforge.runs import RunConfigMismatch

    bar = _install_progress(args)
    try:
        with local_prefect_settings():
            summary = args.func(args)
    except (ConfigError, RunConfigMismatch, FileNotFoundError, InvalidModelName, TrainingDataError) as e:
        _close(bar)
        print(f"mixforge: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:
        _close(bar)
        print(f"mixforge: {args.command} failed: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_FAILED
    _close(bar)
    getattr(args, "printer", _print_summary)(summary, args.json)
    return 0


def local_prefect_settings():
    """Without a Prefect server (ephemeral API) nothing watches for crashed runs, so flow-run
    heartbeats only cost time: a sync flow run waits up to a second for its heartbeat thread."""
    import contextlib

    if os.environ.get("PREFECT_API_URL"):
        return contextlib.nullcontext()
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    return temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})


def _close(bar: Any) -> None:
    if bar is not None:
        bar.close()


if __name__ == "__main__":
    raise SystemExit(main())
