"""The `mix` and `mixtures list|show|diff|takedown` commands, registered into `mixforge.cli`.

Only mixforge/cli.py imports flows, so the two commands that run flows (`mix`, `mixtures takedown`)
are passed in by it; `mix --dry-run` plans in this process and list/show/diff read the store
directly. Each parser sets `printer`, the function that prints its summary (JSON with --json).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any


def _storage_options(args: argparse.Namespace) -> dict[str, Any]:
    """--storage-options JSON; credentials are refused (they would travel as flow parameters)."""
    from mixforge.config_errors import ConfigError
    from mixforge.storage import refuse_secret_options

    if not getattr(args, "storage_options", None):
        return {}
    try:
        value = json.loads(args.storage_options)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--storage-options: not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise ConfigError("--storage-options: expected a JSON object")
    return refuse_secret_options(value, "--storage-options")


def _json(obj: Any, contract: Any) -> None:
    """Print `obj` as JSON, validated first against its contract (mixforge.contracts)."""
    from mixforge.contracts import print_json

    print_json(obj, contract)


# ----------------------------------------------------------------------------- printers


def print_mix(summary: dict, as_json: bool) -> None:
    if as_json:
        from mixforge.contracts import MixSummary

        return _json(summary, MixSummary)
    print(
        f"mixture {summary['name']} {summary['version']}: "
        f"{summary['tokens']:,} tokens, {summary['docs']:,} documents, "
        f"{summary['files']} files"
    )
    print(
        f"  {'phase':<8} {'group':<20} {'requested':>9} {'effective':>9} {'realised':>9} {'tokens':>14} "
        f"{'docs':>10} {'epochs':>7}"
    )
    for g in summary["groups"]:
        print(
            f"  {g['phase']:<8} {g['name']:<20} {_share(g.get('requested_share'))} {g['target_share']:>9.2%} "
            f"{g['realised_share']:>9.2%} {g['tokens']:>14,} "
            f"{g['docs']:>10,} {g['epochs']:>7.3f}{'  short' if g.get('short') else ''}"
        )
    for note in summary.get("notes", []):
        print(f"  note: {note}")
    if summary.get("takedown"):
        t = summary["takedown"]
        print(f"  takedown: {t['removed_rows']:,} rows ({t['removed_unique_ids']:,} documents) removed: {t['reason']}")
    print(f"manifest:  {summary['manifest']}")
    print(f"data card: {summary['card']}")
    if summary.get("export"):
        from mixforge.export.report import format_summary

        print(format_summary(summary["export"]))


def _share(value: float | None) -> str:
    return f"{'-':>9}" if value is None else f"{value:>9.2%}"


def print_plan(plan: dict, as_json: bool) -> None:
    """The plan of `mix --dry-run`: what a build would draw, group by group."""
    if as_json:
        from mixforge.contracts import MixPlan

        return _json(plan, MixPlan)
    pool = plan["pool"]
    print(
        f"mixture {plan['name']} (dry run; would be {plan['next_version']}): {plan['tokens']:,} tokens, "
        f"{plan['docs']:,} documents, {plan['files']} files, from a pool of {pool['tokens']:,} tokens in "
        f"{pool['docs']:,} documents ({pool['shards']} shards)"
    )
    print(
        f"  {'phase':<8} {'group':<20} {'requested':>9} {'effective':>9} {'available docs':>14} "
        f"{'available tok':>14} {'to draw':>14} {'epochs':>7}"
    )
    for g in plan["groups"]:
        print(
            f"  {g['phase']:<8} {g['name']:<20} {_share(g['requested_share'])} {g['target_share']:>9.2%} "
            f"{g['available_docs']:>14,} {g['available_tokens']:>14,} {g['tokens']:>14,} "
            f"{g['epochs']:>7.3f}{'  short' if g['short'] else ''}"
        )
    for note in plan["notes"]:
        print(f"  note: {note}")
    print(f"nothing written (store: {plan['store']}); run without --dry-run to build it")


def print_mix_or_plan(result: dict, as_json: bool) -> None:
    (print_plan if result.get("dry_run") else print_mix)(result, as_json)


def print_list(rows: list[dict], as_json: bool) -> None:
    if as_json:
        from mixforge.contracts import MixturesList

        return _json({"versions": rows}, MixturesList)
    if not rows:
        print("no mixtures")
        return
    print(f"{'name':<24} {'version':<8} {'created':<26} {'tokens':>14} {'docs':>10} {'files':>5}  derived from")
    for r in rows:
        print(
            f"{r['name']:<24} {r['version']:<8} {r['created_at']:<26} {r['tokens']:>14,} "
            f"{r['docs']:>10,} {r['files']:>5}  {r['derived_from'] or ''}"
        )


def print_show(result: dict, as_json: bool) -> None:
    if "files_only" in result:
        if as_json:
            from mixforge.contracts import MixturesShow

            return _json(
                {"name": result["name"], "version": result["version"], "files": result["files_only"]}, MixturesShow
            )
        print("\n".join(result["files_only"]))
        return
    print_mix(result, as_json)


def print_diff(d: dict, as_json: bool) -> None:
    if as_json:
        from mixforge.contracts import MixtureDiff

        return _json(d, MixtureDiff)
    print(f"mixture {d['name']}: {d['a']} -> {d['b']}{'  (spec changed)' if d['spec_changed'] else ''}")
    changes = d.get("spec_changes", [])
    if changes:
        print(f"  spec: {len(changes)} field{'s' * (len(changes) != 1)} changed")
    for c in changes:
        print(f"    {c['path'] or '(spec)'}: {_value(c['a'], c['change'])} -> {_value(c['b'], c['change'])}")
    print(
        f"  tokens {d['tokens_a']:,} -> {d['tokens_b']:,} "
        f"({d['tokens_change']:+,}); rows {d['docs_a']:,} -> {d['docs_b']:,}; "
        f"documents added {d['docs_added']:,}, removed {d['docs_removed']:,}"
    )
    print(
        f"  {'phase':<8} {'group':<20} {'share a':>8} {'share b':>8} {'change':>9} {'tokens a':>12} {'tokens b':>12}"
    )
    for g in d["groups"]:
        print(
            f"  {g['phase']:<8} {g['name']:<20} {g['share_a']:>8.2%} "
            f"{g['share_b']:>8.2%} {g['share_change_pp']:>+8.2f}pp "
            f"{g['tokens_a']:>12,} {g['tokens_b']:>12,}"
        )
    if d["removed_sample"]:
        print(f"  removed (first {len(d['removed_sample'])}): {', '.join(d['removed_sample'])}")
    if d["added_sample"]:
        print(f"  added (first {len(d['added_sample'])}): {', '.join(d['added_sample'])}")


def _value(value: Any, change: str, limit: int = 100) -> str:
    """A spec value as the spec would write it (JSON), shortened; `(absent)` for an added or removed field."""
    if value is None and change in ("added", "removed"):
        return "(absent)"
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------- commands over the store


def cmd_dry_run(args: argparse.Namespace) -> dict:
    """`mix --dry-run`: the plan, in this process (no Prefect flow, no Ray), nothing written."""
    from mixforge.mixtures.build import dry_run
    from mixforge.mixtures.spec import load_spec

    return dry_run(load_spec(args.spec))


def cmd_list(args: argparse.Namespace) -> list[dict]:
    from mixforge.mixtures.versions import version_rows

    return version_rows(args.store, args.name, _storage_options(args))


def cmd_show(args: argparse.Namespace) -> dict:
    from mixforge.mixtures.versions import data_files, ensure_card, read_manifest, summary

    manifest = read_manifest(args.store, args.name, args.version, _storage_options(args))
    if args.files:
        return {"name": manifest["name"], "version": manifest["version"], "files_only": data_files(manifest)}
    ensure_card(
        args.store, args.name, manifest["version"], _storage_options(args)
    )  # a build stopped before writing it
    return summary(manifest, args.store)


def cmd_diff(args: argparse.Namespace) -> dict:
    from mixforge.mixtures.versions import diff

    return diff(args.store, args.name, args.a, args.b, _storage_options(args))


def takedown_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of flows.mix.mix_takedown from the parsed command line (the name is
    checked here, before the flow starts)."""
    from mixforge.names import validate_name

    validate_name(args.name, "mixture name")
    ids = list(args.id or [])
    if args.ids_file:
        with open(args.ids_file, encoding="utf-8") as f:
            ids += [line.strip() for line in f if line.strip() and not line.startswith("#")]
    return {
        "store": args.store,
        "name": args.name,
        "from_version": args.from_version,
        "ids": ids,
        "url_patterns": list(args.url_pattern or []),
        "reason": args.reason,
        "storage_options": _storage_options(args),
    }


def register(
    sub: argparse._SubParsersAction,
    cmd_mix: Callable[[argparse.Namespace], dict],
    cmd_takedown: Callable[[argparse.Namespace], dict],
    preflight_mix: Callable[[argparse.Namespace], Any] | None = None,
) -> None:
    """Add `mix` and `mixtures ...` to the `mixforge` parser (`preflight_mix`: the check `mix` runs
    before Prefect or Ray start)."""
    from mixforge.cli import documented  # the one way a command gets its help, description and examples

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--json", action="store_true", help="print a machine-readable summary on stdout (logs go to stderr)"
        )
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
        p.add_argument("-v", "--verbose", action="store_true")

    def store(p: argparse.ArgumentParser) -> None:
        p.add_argument("--store", required=True, metavar="ROOT_URI", help="store root (local path, s3://, gs://...)")
        p.add_argument(
            "--storage-options",
            metavar="JSON",
            help='fsspec storage options, e.g. \'{"endpoint_url": "http://minio:9000"}\' (default: environment)',
        )

    p = sub.add_parser(
        "mix",
        **documented(
            "sample the curated pool into a new mixture version (spec: YAML, see configs/mixture.example.yaml)",
            "Builds a new immutable version of the mixture a spec describes: groups of the curated pool chosen "
            "by predicates over columns, their target token shares, a token budget, epoch caps, sampling within "
            "and across groups, phases and licences. It counts tokens, plans every group's share, draws "
            "deterministically and writes shuffled shards, a manifest and a data card under "
            "STORE/mixtures/<name>/vNNNN/. The spec is checked against the pool before anything starts; "
            "--dry-run prints the plan and writes nothing.",
            "mixforge mix --spec configs/mixture.example.yaml --dry-run",
            "mixforge mix --spec configs/mixture.example.yaml --json",
        ),
    )
    p.add_argument(
        "--spec",
        required=True,
        metavar="FILE",
        help="mixture spec YAML (names its pool and store; relative paths are relative to this file's folder)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (per group: requested and effective share, documents and tokens available, tokens "
        "to draw, epochs) and write nothing; runs in this process, without Prefect or Ray",
    )
    p.add_argument(
        "--export",
        metavar="FORMAT|FILE",
        help="also export the new version as training-ready token files: a format (megatron, npy; the "
        "mixture's tokenizer) or a YAML file of export settings (configs/export.example.yaml)",
    )
    common(p)

    def mix(args: argparse.Namespace) -> dict:
        return cmd_dry_run(args) if args.dry_run else cmd_mix(args)

    p.set_defaults(func=mix, printer=print_mix_or_plan, preflight=preflight_mix)

    m = sub.add_parser(
        "mixtures",
        **documented(
            "list, show, diff and take down mixture versions",
            "The mixture versions under STORE/mixtures/: list them, show one (or the data files to train on), "
            "compare two, derive one without taken-down documents. mixforge mixtures ACTION --help describes each.",
            "mixforge mixtures list --store ./store",
            "mixforge mixtures show web-books-code --files --store ./store",
        ),
    )
    msub = m.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = msub.add_parser(
        "list",
        **documented(
            "every version of every mixture (or of NAME)",
            "One row per mixture version in the store: name, version, when it was built, tokens, documents, "
            "data files, and the version a takedown derived it from.",
            "mixforge mixtures list --store ./store",
            "mixforge mixtures list web-books-code --store s3://pool --json",
        ),
    )
    p.add_argument("name", nargs="?", help="only this mixture")
    store(p)
    common(p)
    p.set_defaults(func=cmd_list, printer=print_list)

    p = msub.add_parser(
        "show",
        **documented(
            "a version's groups and weights, or with --files the data files to train on",
            "Prints a version's groups with their requested, effective and realised shares, tokens, documents "
            "and epochs, with the paths of its manifest and data card (rebuilt if a build stopped before writing "
            "it). With --files, only the data files its manifest lists, one per line, e.g. for "
            'datasets.load_dataset("parquet", data_files=...).',
            "mixforge mixtures show web-books-code v0002 --store ./store",
            "mixforge mixtures show web-books-code --files --store ./store",
        ),
    )
    p.add_argument("name", help="mixture name")
    p.add_argument("version", nargs="?", default=None, help="e.g. v0002 (default: latest)")
    p.add_argument("--files", action="store_true", help="print only the data files the manifest lists, one per line")
    store(p)
    common(p)
    p.set_defaults(func=cmd_show, printer=print_show)

    p = msub.add_parser(
        "diff",
        **documented(
            "weights, tokens and documents added/removed between two versions",
            "Compares two versions of a mixture: the spec fields that changed (old -> new value), tokens and "
            "rows, documents added and removed (with a sample of their ids), and each group's share.",
            "mixforge mixtures diff web-books-code v0001 v0002 --store ./store",
        ),
    )
    p.add_argument("name", help="mixture name")
    p.add_argument("a", help="older version, e.g. v0001")
    p.add_argument("b", help="newer version, e.g. v0002")
    store(p)
    common(p)
    p.set_defaults(func=cmd_diff, printer=print_diff)

    p = msub.add_parser(
        "takedown",
        **documented(
            "derive a new version minus ids or URL patterns (no resampling)",
            "Derives a new version of a mixture from an existing one (default: the latest) without the "
            "documents given by id or URL pattern, leaving every other row where it was. The reason is recorded "
            "in the manifest, and every later build of the mixture excludes these documents too.",
            "mixforge mixtures takedown web-books-code --id doc-123 --reason 'DMCA request 42' --store ./store",
            "mixforge mixtures takedown nightly --url-pattern 'https://example.com/*' --reason 'opt-out' "
            "--store s3://pool",
        ),
    )
    p.add_argument("name", help="mixture name")
    p.add_argument("--from", dest="from_version", metavar="VERSION", help="version to derive from (default: latest)")
    p.add_argument("--id", action="append", metavar="ID", help="a document id to remove (repeatable)")
    p.add_argument("--ids-file", metavar="FILE", help="file with one id per line")
    p.add_argument(
        "--url-pattern",
        action="append",
        metavar="GLOB",
        help="remove documents whose URL matches (repeatable; * and ?)",
    )
    p.add_argument("--reason", required=True, help="why (recorded in the manifest)")
    store(p)
    common(p)
    p.set_defaults(func=cmd_takedown, printer=print_mix)
