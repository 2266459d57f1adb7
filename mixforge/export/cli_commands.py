"""The `lineage` command, registered into `mixforge.cli` (`register(sub)`): it reads the store in this
process (no Prefect flow, no Ray). The parser sets `printer`, which prints the result (JSON with --json)."""

from __future__ import annotations

import argparse


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


def register(sub: argparse._SubParsersAction) -> None:
    """Add `lineage` to the `mixforge` parser."""
    from mixforge.cli import documented  # the one way a command gets its help, description and examples

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
