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
    print(f"run {summary['run_id']}{' (resumed)' if summary.get('resumed') else ''}")
    for s in summary["stages"]:
        dropped = ", ".join(f"{k}={v:,}" for k, v in s["docs_dropped"].items()) or "none"
        print(f"  {s['name']:<10} {s['docs_in']:>9,} in  {s['docs_kept']:>9,} kept  dropped: {dropped}"
              f"  quarantined shards: {len(s['quarantined'])}  {s['seconds']:.1f}s")
        for q in s["quarantined"]:
            print(f"    quarantined {q['shard']}: {q['error']}")
        print(f"             output {s['output']}  (stats: {s['output'].rstrip('/')}/_stats.json)")
    print(f"curated shards: {summary['output']}")


def _load_curate_config(path: str | None):
    from mixforge.config import CurateConfig, load_yaml

    return load_yaml(path, CurateConfig)


def cmd_curate(args: argparse.Namespace) -> dict:
    from flows.curate import curate

    config = _load_curate_config(args.config)
    return curate(input=args.input, output=args.output, config=config, run_id=args.run_id)


def cmd_stage(args: argparse.Namespace) -> dict:
    """A single curation stage (normalize is put in front automatically when the input is raw)."""
    from flows.curate import curate

    config = _load_curate_config(args.config).model_copy(update={"stages": (args.command,)})
    return curate(input=args.input, output=args.output, config=config, run_id=args.run_id)


def cmd_demo(args: argparse.Namespace) -> dict:
    from flows.curate import curate

    config = _load_curate_config(args.config)
    output = os.path.abspath(args.output)
    summary = curate(input=demo_corpus_path(), output=output, config=config, run_id=args.run_id)
    return summary


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
    p.set_defaults(func=cmd_curate)

    for name, help_text in [("filter", "language ID and heuristic quality filters (Gopher, C4, FineWeb, URL)"),
                            ("dedup", "exact and MinHash-LSH fuzzy deduplication, keeping dup_cluster/dup_count")]:
        p = sub.add_parser(name, help=help_text)
        stage_io(p)
        common(p)
        p.set_defaults(func=cmd_stage)

    p = sub.add_parser("demo", help="curate the bundled sample corpus into ./data")
    p.add_argument("--output", default="data", metavar="ROOT_URI", help="store root (default: ./data)")
    common(p)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_environment()
    _setup_logging(args.verbose)
    from mixforge.config import ConfigError
    from mixforge.runs import RunConfigMismatch

    bar = _install_progress(args)
    try:
        with local_prefect_settings():
            summary = args.func(args)
    except (ConfigError, RunConfigMismatch, FileNotFoundError) as e:
        _close(bar)
        print(f"mixforge: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:
        _close(bar)
        print(f"mixforge: {args.command} failed: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_FAILED
    _close(bar)
    _print_summary(summary, args.json)
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
