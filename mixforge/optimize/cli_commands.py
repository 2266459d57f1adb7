"""The `optimize` command, registered into `mixforge.cli` (which passes in the function that runs the flow:
only mixforge/cli.py imports flows). The parser sets `printer`, which prints the summary (JSON with --json)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def print_optimize(summary: dict, as_json: bool) -> None:
    if as_json:
        from mixforge.contracts import OptimizeSummary, print_json

        return print_json(summary, OptimizeSummary)
    print(f"optimisation {summary['name']} run {summary['run_id']}: {summary['proxies']} proxies")
    print(f"  {'group':<20} {'proposed':>9}")
    for group, share in summary["proposal"].items():
        print(f"  {group:<20} {share:>9.2%}")
    for group, temperature in (summary.get("temperatures") or {}).items():
        print(f"  {group:<20} temperature {temperature:.3g} (searched)")
    print(f"  predicted objective: {summary['predicted']:.4f}")
    for fit in summary["fit"]:
        rho = "n/a" if fit["spearman"] is None else f"{fit['spearman']:.3f}"
        print(f"  target {fit['target']}: {fit['chosen']}, CV Spearman {rho}, MAE {fit['mae']:.4f}")
    for role, objective in (summary.get("verify") or {}).items():
        print(f"  verified {role}: {objective:.4f}")
    print(f"proposal:  {summary['spec']}  (mixforge mix --spec it, or --materialize)")
    print(f"run:       {summary['uri']}")
    if summary.get("materialized"):
        from mixforge.mixtures.cli_commands import print_mix

        print_mix(summary["materialized"], as_json=False)


def register(
    sub: argparse._SubParsersAction,
    cmd_optimize: Callable[[argparse.Namespace], dict],
    preflight_optimize: Callable[[argparse.Namespace], Any],
) -> None:
    from mixforge.cli import documented

    p = sub.add_parser(
        "optimize",
        **documented(
            "choose a mixture's weights on evidence: proxy-model swarm, regression, constrained proposal",
            "Samples a swarm of mixtures around the prior (the groups' natural token shares unless the search "
            "spec gives one), within each group's bounds and the epoch cap at the token budget; materialises "
            "each as a token sample through a mixture build and an export, trains a small proxy language model "
            "on it and scores it on the targets; fits regressors from weights to target loss (LightGBM as "
            "RegMix, a log-linear law as olmix; chosen by cross-validation) and proposes the weights with the "
            "best predicted loss (RegMix's sample-and-average, or a constrained optimisation), with optional "
            "CLIMB rounds around the proposal and a verification proxy; with `quality_temperature:` the "
            "quality-sampled groups' sampling temperatures are searched too (QuaDMix). Everything lands under "
            "STORE/optimize/<name>/<run>/ (proxies table, regressors, proposal.yaml, report); a rerun resumes "
            "with its finished proxies kept. --materialize builds the proposal as a new mixture version whose "
            "manifest and data card link the run.",
            "mixforge optimize --spec configs/optimize.example.yaml",
            "mixforge optimize --spec search.yaml --materialize --json",
        ),
    )
    p.add_argument(
        "--spec",
        required=True,
        metavar="FILE",
        help="search spec YAML (configs/optimize.example.yaml; relative paths are relative to its folder)",
    )
    p.add_argument("--materialize", action="store_true", help="build the proposal as a new mixture version")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_optimize, printer=print_optimize, preflight=preflight_optimize)
