"""Create the work pools and deploy mixforge's deployments (deployments/prefect.yaml) to a Prefect server.

    export PREFECT_API_URL=http://127.0.0.1:4200/api
    python deployments/deploy.py                 # every deployment whose flow is in this checkout
    python deployments/deploy.py curate mix      # only these (deployment names)

Work pools named in prefect.yaml that do not exist yet are created as `process` pools
(`--pool-type` picks another type, e.g. `kubernetes` with the prefect-kubernetes worker installed).
A deployment whose parameters use a `{{ $VAR }}` placeholder needs VAR set: the nightly pipeline
needs MIXFORGE_NIGHTLY_INPUT and MIXFORGE_STORE. Runs from the repository root; it calls
`prefect deploy`, so `prefect deploy --all --prefect-file deployments/prefect.yaml` does the same
once every flow exists and the pools are there.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PREFECT_FILE = Path(__file__).resolve().with_name("prefect.yaml")
PLACEHOLDER = re.compile(r"{{\s*\$(\w+)\s*}}")


def load_deployments(path: Path = PREFECT_FILE) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)["deployments"]


def entrypoint_exists(deployment: dict, root: Path = ROOT) -> bool:
    return (root / deployment["entrypoint"].split(":", 1)[0]).is_file()


def missing_env(deployment: dict) -> list[str]:
    """Environment variables that `{{ $VAR }}` placeholders in this deployment need but are unset."""
    names = PLACEHOLDER.findall(yaml.safe_dump(deployment))
    return sorted({n for n in names if not os.environ.get(n)})


def ensure_work_pools(names: set[str], pool_type: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        for name in sorted(names):
            try:
                pool = client.read_work_pool(name)
                print(f"work pool {name!r} exists ({pool.type})", file=sys.stderr)
            except ObjectNotFound:
                client.create_work_pool(WorkPoolCreate(name=name, type=pool_type))
                print(f"created work pool {name!r} ({pool_type})", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="deployment names (default: every deployment whose flow exists)")
    parser.add_argument(
        "--pool-type", default="process", help="type of work pools created when missing (default: process)"
    )
    args = parser.parse_args(argv)

    deployments = load_deployments()
    known = {d["name"] for d in deployments}
    if unknown := sorted(set(args.names) - known):
        parser.error(
            f"no such deployment(s) in {PREFECT_FILE.name}: {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )
    chosen = [d for d in deployments if not args.names or d["name"] in args.names]
    absent = [d for d in chosen if not entrypoint_exists(d)]
    if absent and args.names:
        parser.error("flow not in this checkout: " + ", ".join(d["entrypoint"] for d in absent))
    for d in absent:
        print(f"skipping {d['name']!r}: {d['entrypoint']} is not in this checkout", file=sys.stderr)
    chosen = [d for d in chosen if d not in absent]
    for d in chosen:
        if need := missing_env(d):
            parser.error(f"deployment {d['name']!r} needs environment variable(s) {', '.join(need)}")
    if not chosen:
        parser.error("nothing to deploy")
    if not os.environ.get("PREFECT_API_URL"):
        print("warning: PREFECT_API_URL is not set: deploying to the active Prefect profile's API", file=sys.stderr)

    ensure_work_pools({d["work_pool"]["name"] for d in chosen}, args.pool_type)
    cmd = [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--prefect-file", str(PREFECT_FILE)]
    for d in chosen:
        cmd += ["--name", d["name"]]
    return subprocess.call(cmd, cwd=ROOT)


if __name__ == "__main__":
    raise SystemExit(main())
