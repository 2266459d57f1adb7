"""The `export` and `lineage` commands, registered into `mixforge.cli` (`register`). `export` runs a flow,
and only mixforge/cli.py imports flows, so it passes in the function that runs it; `lineage` reads the
store in this process (no Prefect flow, no Ray). Each parser sets `printer`, which prints the result
(JSON with --json)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

TIKTOKEN_PREFIX = "tiktoken:"


def parse_tokenizer(text: str):
    """`tiktoken:cl100k_base` -> a tiktoken encoding; anything else is the path or URI of a Hugging Face
    tokenizer.json (or a folder holding one)."""
    from mixforge.mixtures.spec import TokenizerSpec

    if text.startswith(TIKTOKEN_PREFIX):
        return TokenizerSpec(kind="tiktoken", name=text[len(TIKTOKEN_PREFIX) :])
    return TokenizerSpec(kind="huggingface", name=text)


def export_config(args: argparse.Namespace):
    """The ExportConfig of the command line: `--config` YAML first, the flags given on top of it."""
    from mixforge.config import load_model, load_yaml
    from mixforge.export.build import ExportConfig

    base = load_yaml(args.config, ExportConfig).model_dump(exclude_unset=True) if args.config else {}
    flags = {
        "format": args.format,
        "tokenizer": parse_tokenizer(args.tokenizer).model_dump() if args.tokenizer else None,
        "eos_token": args.eos_token,
        "bos_token": args.bos_token,
        "bos": True if args.bos_token else None,
        "seed": args.seed,
        "file_tokens": args.file_tokens,
        "phases": args.phase,
        "tag": args.tag,
    }
    merged = {**base, **{k: v for k, v in flags.items() if v is not None}}
    if args.metadata_template is not None:
        merged["metadata"] = {
            "template": args.metadata_template.encode().decode("unicode_escape"),  # "\n" typed on a shell
            "phases": [p for p in (args.metadata_phases or "").split(",") if p] or None,
        }
    return load_model(ExportConfig, merged, args.config or "export settings")


def export_option(value: str | None):
    """`mix --export`: a format name (the mixture's tokenizer, defaults otherwise) or a YAML file of export
    settings; None: no export."""
    from mixforge.config import load_yaml
    from mixforge.config_errors import ConfigError
    from mixforge.export.build import ExportConfig
    from mixforge.export.formats import FORMATS

    if value is None:
        return None
    if value.endswith((".yaml", ".yml")):
        return load_yaml(value, ExportConfig)
    if value not in FORMATS:
        raise ConfigError(f"--export {value!r}: not a format ({', '.join(sorted(FORMATS))}) nor a .yaml file")
    return ExportConfig(format=value)


def print_export(summary: dict, as_json: bool) -> None:
    from mixforge.export import report

    if as_json:
        from mixforge.contracts import ExportSummary, print_json

        return print_json(summary, ExportSummary)
    print(report.format_summary(summary))


def _register_export(
    sub: argparse._SubParsersAction,
    cmd_export: Callable[[argparse.Namespace], dict],
    preflight_export: Callable[[argparse.Namespace], Any],
) -> None:
    from mixforge.cli import documented

    p = sub.add_parser(
        "export",
        **documented(
            "turn a mixture version into training-ready token files (Megatron .bin/.idx, npy) with lineage",
            "Tokenises every document of a mixture version (as often as the version repeats it), shuffles "
            "them globally and deterministically (same version and seed: byte-identical files), and writes "
            "Megatron-LM indexed datasets or flat npy token memmaps under "
            "STORE/mixtures/<name>/<version>/export/<format>-<tokenizer>/, one folder per phase, with a lineage "
            "sidecar per file (`mixforge lineage` reads it) and a manifest. A rerun resumes (finished files are "
            "kept); an export of a version derived by a takedown reuses its parent's untouched files.",
            "mixforge export --store ./data demo",
            "mixforge export --store s3://mixforge web-books v0003 --format npy --tokenizer ./tokenizer.json",
            "mixforge export --store ./data demo --metadata-template '{domain}\\n\\n' --metadata-phases main",
        ),
    )
    p.add_argument("--store", required=True, metavar="ROOT_URI", help="store root (local path, s3://, gs://...)")
    p.add_argument("name", metavar="MIXTURE", help="the mixture's name")
    p.add_argument("version", metavar="VERSION", nargs="?", default=None, help="v0003 or 3 (default: the latest)")
    p.add_argument("--config", metavar="FILE", help="YAML export settings (configs/export.example.yaml); flags win")
    p.add_argument("--format", help="megatron (default) or npy")
    p.add_argument(
        "--tokenizer",
        metavar="SPEC",
        help="tiktoken:<encoding> or the path/URI of a Hugging Face tokenizer.json "
        "(default: the tokenizer the mixture counted tokens with)",
    )
    p.add_argument("--eos-token", metavar="TOKEN", help="the end-of-document token (default: the tokenizer's own)")
    p.add_argument("--bos-token", metavar="TOKEN", help="prepend this token to every document")
    p.add_argument("--seed", type=int, help="shuffle seed (default 0)")
    p.add_argument("--file-tokens", type=int, metavar="N", help="target tokens per output file")
    p.add_argument(
        "--metadata-template",
        metavar="TEMPLATE",
        help="metadata conditioning: a prefix made of row fields, e.g. '{domain}\\n\\n' (domain: the URL's host)",
    )
    p.add_argument(
        "--metadata-phases",
        metavar="A,B",
        help="the phases that get the metadata prefix (default: all; leave the cooldown phase out)",
    )
    p.add_argument("--phase", action="append", metavar="PHASE", help="export only this phase (repeatable)")
    p.add_argument("--tag", help="appended to the export's folder: a second export with other settings")
    p.add_argument("--storage-options", metavar="JSON", help="fsspec storage options without credentials")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_export, printer=print_export, preflight=preflight_export)


def cmd_lineage(args: argparse.Namespace) -> dict:
    """`mixforge lineage`: the documents behind a token of an export part, or behind a training step."""
    from mixforge.export import lineage
    from mixforge.mixtures.cli_commands import _storage_options

    args.printer = lineage.print_lineage
    common = {"export": args.export, "explain": args.explain, "storage_options": _storage_options(args)}
    if args.file is not None:
        if args.token is None:
            raise lineage.LineageError("--file needs --token N (an offset in that part)")
        if args.step is not None or args.phase is not None:
            raise lineage.LineageError("--file/--token and --step/--phase are two questions: ask one")
        return lineage.at_token(args.store, args.name, args.version, args.file, args.token, **common)
    if args.token is not None:
        raise lineage.LineageError("--token needs --file F (the part it is an offset in)")
    if args.step is None:
        raise lineage.LineageError("ask for --file F --token N, or --step S --global-batch B --seq-len L")
    missing = [
        flag for flag, value in (("--global-batch", args.global_batch), ("--seq-len", args.seq_len)) if not value
    ]
    if missing:
        raise lineage.LineageError(f"--step needs {' and '.join(missing)}")
    return lineage.at_step(
        args.store, args.name, args.version, args.step, args.global_batch, args.seq_len, phase=args.phase, **common
    )


def register(
    sub: argparse._SubParsersAction,
    cmd_export: Callable[[argparse.Namespace], dict],
    preflight_export: Callable[[argparse.Namespace], Any],
) -> None:
    """Add `export` and `lineage` to the `mixforge` parser."""
    from mixforge.cli import documented  # the one way a command gets its help, description and examples

    _register_export(sub, cmd_export, preflight_export)

    p = sub.add_parser(
        "lineage",
        **documented(
            "the documents behind a token of an export, or behind a training step",
            "Reads a mixture version's export (the only one under STORE/mixtures/NAME/VERSION/export/, or "
            "--export FOLDER) and prints the documents behind the tokens asked about: each one's id, source, "
            "group, pool shard and row, copy number, run and token span; with --explain, also its path through "
            "its curation run (kept by which stages, scores, duplicate cluster).\n\n"
            "--file F --token N: the document holding token N of part F (its index, file name or URI), and "
            "whether the token is its BOS/metadata prefix, text or EOS.\n\n"
            "--step S --global-batch B --seq-len L: the documents in stream tokens [S*B*L, (S+1)*B*L) of the "
            "phase, assuming sequential concatenate-and-chunk reading of its parts in manifest order. Trainers "
            "that reshuffle samples with their own seed (Megatron-LM's GPTDataset, OLMo-core) read another "
            "order: map their step to a part and offset with their own sample index, then use --file/--token.",
            "mixforge lineage --store ./store web-books-code v0001 --file 0 --token 123456",
            "mixforge lineage --store ./store web-books-code v0001 --step 1200 --global-batch 512 --seq-len 2048 "
            "--phase main --explain",
        ),
    )
    p.add_argument("name", metavar="MIXTURE", help="mixture name")
    p.add_argument("version", metavar="VERSION", help="e.g. v0001 (or latest)")
    p.add_argument("--store", required=True, metavar="ROOT_URI", help="store root (local path, s3://, gs://...)")
    p.add_argument("--export", metavar="FOLDER", help="the export's folder name (needed when the version has several)")
    p.add_argument("--file", metavar="F", help="an export part: its index in the export manifest, file name or URI")
    p.add_argument("--token", type=int, metavar="N", help="with --file: a token offset in that part (from 0)")
    p.add_argument("--step", type=int, metavar="S", help="a training step (from 0)")
    p.add_argument("--global-batch", type=int, metavar="B", help="with --step: sequences per step")
    p.add_argument("--seq-len", type=int, metavar="L", help="with --step: tokens per sequence")
    p.add_argument("--phase", metavar="P", help="with --step: the phase (needed when the export has several)")
    p.add_argument("--explain", action="store_true", help="add each document's path through its curation run")
    p.add_argument("--storage-options", metavar="JSON", help="fsspec storage options without credentials")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("-v", "--verbose", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_lineage)
