"""Run a deployment with parameters, wait for it, and exit with its outcome: the CI trigger.

    export PREFECT_API_URL=https://prefect.example.org/api     # + PREFECT_API_AUTH_STRING or PREFECT_API_KEY
    python deployments/trigger.py curate/curate \\
        --params '{"input": "s3://crawl/2026-11/", "output": "s3://pool",
                   "config": {"stages": ["normalize", "filter"]}}' \\
        --param run_id='"ci-1234"' --timeout 7200

Needs only `prefect` (no mixforge): `pip install prefect==3.9.1`. Prints one JSON object on stdout
(flow run id, name, state, UI URL, the artifacts the run published, with their data up to 16,000
characters, and the runs of the flows it called with their artifacts: `subflow_runs`); progress
goes to stderr. `pipeline/nightly`'s own artifact `pipeline-{mixture}` sums the night up.
Exit status: 0 completed, 1 failed / crashed / cancelled, 3 still running when --timeout ran out
(the run goes on; see its URL).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

EXIT_COMPLETED, EXIT_FAILED, EXIT_TIMEOUT = 0, 1, 3


def parse_parameters(params: str | None, params_file: str | None, pairs: list[str]) -> dict:
    out: dict = {}
    if params_file:
        with open(params_file, encoding="utf-8") as f:
            out.update(json.load(f))
    if params:
        out.update(json.loads(params))
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--param {pair!r}: expected KEY=JSON_VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value  # a bare string
    return out


# An artifact's data (markdown, table) is reported up to this size: a summary, not an embedded plot.
MAX_REPORTED_DATA = 16_000


def artifacts_of(client, flow_run_id) -> list[dict]:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    found = client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
    )
    out = []
    for a in found:
        data = a.data if isinstance(a.data, str) else json.dumps(a.data)
        small = data is not None and len(data) <= MAX_REPORTED_DATA
        out.append(
            {"key": a.key, "type": a.type, "description": a.description}
            | ({"data": data} if small else {"data_chars": len(data or "")})
        )
    return out


def subflow_runs_of(client, flow_run_id) -> list[dict]:
    """The runs of the flows this run called (the pipeline's curate, rephrase and mix), with their
    artifacts (data left out: the parent's summary is what to read)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
    from prefect.client.schemas.sorting import FlowRunSort

    runs = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])),
        sort=FlowRunSort.START_TIME_ASC,
    )
    flows = {f.id: f.name for f in client.read_flows()} if runs else {}
    return [
        {
            "flow_run_id": str(r.id),
            "flow": flows.get(r.flow_id),
            "flow_run_name": r.name,
            "state": r.state.type.value if r.state else None,
            "artifacts": [
                {k: v for k, v in a.items() if k in ("key", "type", "description")} for a in artifacts_of(client, r.id)
            ],
        }
        for r in runs
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a Prefect deployment and wait for its result.")
    parser.add_argument("deployment", help="FLOW_NAME/DEPLOYMENT_NAME, e.g. curate/curate")
    parser.add_argument("--params", help="parameters as a JSON object")
    parser.add_argument("--params-file", help="parameters from a JSON file")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="one parameter (repeatable; wins over --params)",
    )
    parser.add_argument(
        "--timeout", type=float, default=6 * 3600, help="seconds to wait for a final state (default: 6 h)"
    )
    parser.add_argument("--poll-interval", type=float, default=5.0, help="seconds between state checks (default: 5)")
    parser.add_argument("--tag", action="append", default=[], help="tag for the flow run (repeatable)")
    parser.add_argument("--flow-run-name", help="name of the flow run (default: generated)")
    args = parser.parse_args(argv)
    parameters = parse_parameters(args.params, args.params_file, args.param)

    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_UI_URL

    print(f"running {args.deployment} with {json.dumps(parameters)}", file=sys.stderr)
    flow_run = run_deployment(
        args.deployment,
        parameters=parameters,
        timeout=args.timeout,
        poll_interval=args.poll_interval,
        tags=["ci", *args.tag],
        flow_run_name=args.flow_run_name,
    )
    state = flow_run.state
    ui = PREFECT_UI_URL.value()
    summary = {
        "flow_run_id": str(flow_run.id),
        "flow_run_name": flow_run.name,
        "deployment": args.deployment,
        "state": state.type.value if state else None,
        "state_name": state.name if state else None,
        "message": state.message if state else None,
        "url": f"{ui.rstrip('/')}/runs/flow-run/{flow_run.id}" if ui else None,
    }
    with get_client(sync_client=True) as client:
        summary["artifacts"] = artifacts_of(client, flow_run.id)
        summary["subflow_runs"] = subflow_runs_of(client, flow_run.id)
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    if state is None or not state.is_final():
        print(f"{args.deployment}: still {summary['state_name']} after {args.timeout:.0f}s", file=sys.stderr)
        return EXIT_TIMEOUT
    if state.is_completed():
        return EXIT_COMPLETED
    print(f"{args.deployment}: {state.name}: {state.message}", file=sys.stderr)
    return EXIT_FAILED


if __name__ == "__main__":
    os.environ.setdefault("DO_NOT_TRACK", "1")
    raise SystemExit(main())
