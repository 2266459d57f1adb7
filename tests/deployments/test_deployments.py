"""Deployments with real parts: a `prefect server start` subprocess (SQLite), the deployments of
deployments/prefect.yaml deployed with `prefect deploy` into a process work pool, a `prefect worker`
subprocess, and a run triggered the way CI does (deployments/trigger.py, parameters as JSON)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from prefect.flows import load_flow_from_entrypoint

from tests.conftest import free_port
from tests.helpers import REPO, docs, prose_docs, write_shard

PREFECT_FILE = REPO / "deployments" / "prefect.yaml"
# Flows being written elsewhere: their deployments are checked once their files land.
PENDING_FLOWS = {"flows/pipeline.py", "flows/rephrase.py"}


def prefect_deployments() -> list[dict]:
    return yaml.safe_load(PREFECT_FILE.read_text())["deployments"]


def base_env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "RAY_ADDRESS"}
    env.update(
        DO_NOT_TRACK="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        RAY_AUTH_MODE="disabled",
        PREFECT_HOME=str(home),
        PREFECT_CLI_PROMPT="false",
        PYTHONPATH=str(REPO),
    )
    return env


# --------------------------------------------------------------------------- static checks


def test_every_deployment_names_a_flow_and_its_parameters_fit_it():
    from prefect.utilities.callables import parameter_schema

    deployments = prefect_deployments()
    assert {d["name"] for d in deployments} == {
        "nightly",
        "curate",
        "mix",
        "export",
        "optimize",
        "train-classifier",
        "gpu",
    }
    missing = set()
    for d in deployments:
        path, func = d["entrypoint"].split(":")
        assert path == f"flows/{func}.py", d["entrypoint"]
        assert d["work_pool"]["name"] in {"mixforge", "mixforge-gpu"}
        if not (REPO / path).is_file():
            missing.add(path)
            continue
        flow = load_flow_from_entrypoint(f"{REPO / path}:{func}")
        params = parameter_schema(flow.fn).model_dump()["properties"]
        assert set(d.get("parameters") or {}) <= set(params), f"{d['name']}: parameters not in {func}'s signature"
    assert missing <= PENDING_FLOWS, f"deployments point at flows that do not exist: {missing - PENDING_FLOWS}"

    by_name = {d["name"]: d for d in deployments}
    nightly = by_name["nightly"]
    assert nightly["schedules"] == [{"cron": "0 2 * * *", "timezone": "UTC", "active": True}]
    assert nightly["parameters"]["input"] == "{{ $MIXFORGE_NIGHTLY_INPUT }}"
    assert nightly["parameters"]["incremental"] is True  # only new shards, deduplicated against the pool
    assert nightly["concurrency_limit"]["collision_strategy"] == "ENQUEUE"
    assert by_name["gpu"]["work_pool"]["name"] == "mixforge-gpu" and "gpu" in by_name["gpu"]["tags"]
    assert all(not d.get("schedules") for d in deployments if d["name"] != "nightly")


FLOWS = ["curate", "mix", "mix_takedown", "pipeline", "rephrase", "train_classifier"]
# Form fields the issue named (#16: rule sets, language thresholds, runtime_env, licences) that must be typed.
NAMED_FIELDS = re.compile(r"\.(filter|rules|language_id|thresholds|stop_words|n_grams|runtime_env|licenses)\b")
PLACEHOLDER = re.compile(r"<[A-Za-z_][^<>]*>")


def json_editors(schema: dict, node: dict | None = None, path: str = "", seen: tuple = ()) -> list[str]:
    """Paths of the properties the Prefect UI renders as a raw JSON editor: no type (`Any`), an
    object without properties (a free mapping), a `oneOf`; `anyOf` branches and array items are
    followed (the UI offers typed choices and lists of typed items)."""
    node = schema if node is None else node
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        if name in seen:
            return []
        node = {**schema["definitions"][name], **{k: v for k, v in node.items() if k != "$ref"}}
        seen = (*seen, name)
    if "oneOf" in node:
        return [path]
    for key in ("anyOf", "allOf"):
        if key in node:
            return [p for i, sub in enumerate(node[key]) for p in json_editors(schema, sub, f"{path}|{i}", seen)]
    if "enum" in node or "const" in node:
        return []
    if node.get("type") is None or (node["type"] == "object" and not node.get("properties")):
        return [path]
    if node["type"] == "object":
        return [p for k, v in node["properties"].items() for p in json_editors(schema, v, f"{path}.{k}", seen)]
    if node["type"] == "array":
        return json_editors(schema, node.get("items", {}), f"{path}[]", seen)
    return []


def descriptions(node, path: str = ""):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "description" and isinstance(v, str):
                yield path, v
            yield from descriptions(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from descriptions(v, f"{path}[{i}]")


def check_form(name: str, schema: dict) -> list[str]:
    """Every parameter described, with an example; no `<placeholder>` (the UI renders descriptions as
    HTML); the named fields typed. Returns the JSON editors left."""
    for param, prop in schema["properties"].items():
        assert prop.get("description"), f"{name}.{param}: no description"
        assert prop.get("examples"), f"{name}.{param}: no example"
    hidden = [(p, d) for p, d in descriptions(schema) if PLACEHOLDER.search(d)]
    assert not hidden, f"{name}: placeholders the UI hides: {hidden}"
    editors = json_editors(schema)
    named = [p for p in editors if NAMED_FIELDS.search(p)]
    assert not named, f"{name}: raw JSON editors for {named}"
    return editors


def test_every_flow_parameter_has_a_description_an_example_and_typed_fields():
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools.validation import validate

    for func in FLOWS:
        module = "mix" if func == "mix_takedown" else func
        flow = load_flow_from_entrypoint(f"{REPO / 'flows' / module}.py:{func}")
        schema = parameter_schema(flow.fn).model_dump_for_openapi()
        editors = check_form(func, schema)
        # the examples and the defaults are what a server enforcing the schema accepts, and the flow too
        examples = {k: v["examples"][0] for k, v in schema["properties"].items()}
        defaults = {k: v["default"] for k, v in schema["properties"].items() if "default" in v}
        for params in (examples, {**examples, **defaults}):
            validate(params, schema, raise_on_error=True)
            flow.validate_parameters(params)
        if func == "curate":  # open by nature: fsspec options, the settings of plugin stages
            assert sorted(editors) == [".config.extra_stages", ".config.storage.options"]


def test_the_form_fields_in_the_form_and_in_yaml_are_the_same_config():
    """Mappings as YAML (and the CLI) write them, and the typed lists of the form: one config; it
    dumps (Prefect parameters, the form's defaults) as the lists, which validate back to it."""
    from mixforge.config import CurateConfig

    as_yaml = yaml.safe_load(
        """
        filter:
          language_id: {keep: [en, de], thresholds: {de: 0.8}}
          rules:
            - {name: gopher_repetition, top_n_grams: {2: 0.25}, dup_n_grams: {5: 0.2, 6: 0.18}}
            - {name: gopher_quality, stop_words: {en: [the, and], de: [der, die]}}
        ray: {runtime_env: {working_dir: ., excludes: [.venv], env_vars: {OMP_NUM_THREADS: "1"}, conda: {x: 1}}}
        """
    )
    as_form = {
        "filter": {
            "language_id": {"keep": ["en", "de"], "thresholds": [{"language": "de", "min_score": 0.8}]},
            "rules": [
                {
                    "name": "gopher_repetition",
                    "top_n_grams": [{"n": 2, "max_fraction": 0.25}],
                    "dup_n_grams": [{"n": 5, "max_fraction": 0.2}, {"n": 6, "max_fraction": 0.18}],
                },
                {
                    "name": "gopher_quality",
                    "stop_words": [
                        {"language": "en", "words": ["the", "and"]},
                        {"language": "de", "words": ["der", "die"]},
                    ],
                },
            ],
        },
        "ray": {
            "runtime_env": {
                "working_dir": ".",
                "excludes": [".venv"],
                "env_vars": [{"name": "OMP_NUM_THREADS", "value": "1"}],
                "conda": {"x": 1},
            }
        },
    }
    config = CurateConfig.model_validate(as_yaml)
    assert CurateConfig.model_validate(as_form) == config
    # what the stages read: mappings, and the runtime_env ray.init gets
    assert config.filter.language_id.thresholds == {"de": 0.8}
    assert config.filter.rules[0].top_n_grams == {2: 0.25}
    assert config.filter.rules[1].stop_words == {"en": ("the", "and"), "de": ("der", "die")}
    assert config.ray.runtime_env == {
        "working_dir": ".",
        "excludes": [".venv"],
        "env_vars": {"OMP_NUM_THREADS": "1"},
        "conda": {"x": 1},
    }
    dumped = config.model_dump(mode="json")
    assert dumped["filter"]["language_id"]["thresholds"] == as_form["filter"]["language_id"]["thresholds"]
    assert dumped["ray"]["runtime_env"] == as_form["ray"]["runtime_env"]
    assert CurateConfig.model_validate(dumped) == config
    # the form's typed entries keep their checks, and a credential in env_vars is refused in either shape
    for bad in (
        {"filter": {"language_id": {"thresholds": [{"language": "de"}]}}},
        {"filter": {"language_id": {"thresholds": [{"language": "de", "min_score": 0.5}] * 2}}},
        {"ray": {"runtime_env": {"env_vars": [{"name": "HF_TOKEN", "value": "hf_secret"}]}}},
        {"ray": {"runtime_env": {"working_dir": 3}}},
    ):
        with pytest.raises(ValueError) as err:
            CurateConfig.model_validate(bad)
        assert "hf_secret" not in str(err.value)


def test_deploy_helper_refuses_what_it_cannot_deploy(tmp_path):
    env = base_env(tmp_path / "home")
    env.pop("MIXFORGE_NIGHTLY_INPUT", None)

    def deploy(*names):
        return subprocess.run(
            [sys.executable, "deployments/deploy.py", *names],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    proc = deploy("nope")
    assert proc.returncode == 2 and "no such deployment(s)" in proc.stderr and "curate" in proc.stderr
    if (REPO / "flows" / "pipeline.py").is_file():
        proc = deploy("nightly")
        assert proc.returncode == 2 and "MIXFORGE_NIGHTLY_INPUT" in proc.stderr
    else:
        proc = deploy("nightly")
        assert proc.returncode == 2 and "flows/pipeline.py" in proc.stderr


# --------------------------------------------------------------------------- a real server


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """`prefect server start` on a free loopback port with its own SQLite database."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    env = base_env(home / "home")
    env.update(
        PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        PREFECT_UI_ENABLED="false",
        PREFECT_SERVER_API_HOST="127.0.0.1",
    )
    log = open(home / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    api = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 150
    while True:
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"prefect server did not start: {(home / 'server.log').read_text()[-3000:]}")
        time.sleep(0.5)
    (home / "incoming").mkdir()
    client_env = {
        **base_env(home / "client-home"),
        "PREFECT_API_URL": api,
        "MIXFORGE_NIGHTLY_INPUT": str(home / "incoming"),
        "MIXFORGE_STORE": str(home / "store"),
    }
    yield {"api": api, "home": home, "env": client_env}
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


@pytest.fixture(scope="module")
def worker(prefect_server):
    """The deployments deployed by deployments/deploy.py, and a process worker polling their pool."""
    env = prefect_server["env"]
    home = prefect_server["home"]
    proc = subprocess.run(
        [sys.executable, "deployments/deploy.py"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = open(home / "worker.log", "wb")
    # The worker runs elsewhere than the checkout: the deployment's pull step finds the code.
    wproc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect",
            "worker",
            "start",
            "--pool",
            "mixforge",
            "--type",
            "process",
            "--limit",
            "1",
        ],
        cwd=home,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    yield {"deploy_output": proc.stdout + proc.stderr, "log": home / "worker.log"}
    os.killpg(wproc.pid, signal.SIGTERM)
    try:
        wproc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(wproc.pid, signal.SIGKILL)
    log.close()


def read_with_client(api: str, fn):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api}):
        with get_client(sync_client=True) as client:
            return fn(client)


def test_deployments_are_registered_with_forms_and_schedules(prefect_server, worker):
    present = [d for d in prefect_deployments() if (REPO / d["entrypoint"].split(":")[0]).is_file()]
    deployed = read_with_client(prefect_server["api"], lambda c: c.read_deployments())
    flow_names = read_with_client(prefect_server["api"], lambda c: {f.id: f.name for f in c.read_flows()})
    by_name = {f"{flow_names[d.flow_id]}/{d.name}": d for d in deployed}
    assert {n.split("/")[1] for n in by_name} == {d["name"] for d in present}
    for spec in present:
        (full,) = [n for n in by_name if n.endswith("/" + spec["name"])]
        d = by_name[full]
        assert d.work_pool_name == spec["work_pool"]["name"] and d.entrypoint == spec["entrypoint"]
        assert set(spec["tags"]) <= set(d.tags)
        assert d.enforce_parameter_schema
        assert [s.schedule.cron for s in d.schedules] == [s["cron"] for s in spec.get("schedules", [])]
        check_form(full, d.parameter_openapi_schema)  # the form as deployed: described, typed

    # The curate form: typed fields from the flow signature, the config as nested sections.
    schema = by_name["curate/curate"].parameter_openapi_schema
    assert set(schema["properties"]) == {"input", "output", "config", "run_id", "incremental"}
    assert schema["properties"]["incremental"]["default"] is False
    assert set(schema["required"]) == {"input", "output"}
    config = schema["definitions"]["CurateConfig"]["properties"]
    assert {"stages", "read", "normalize", "filter", "dedup", "ray", "storage"} <= set(config)
    ray = schema["definitions"]["RayConfig"]["properties"]
    assert "RAY_ADDRESS" in ray["address"]["description"] and ray["max_retries"]["default"] == 3
    if "mix/mix" in by_name:
        mix_schema = by_name["mix/mix"].parameter_openapi_schema
        assert "spec" in mix_schema["required"] and "MixSpec" in mix_schema["definitions"]


def test_ci_trigger_runs_curate_through_the_worker_with_artifacts(prefect_server, worker, tmp_path):
    raw, store = tmp_path / "raw", tmp_path / "store"
    write_shard(str(raw / "a.jsonl"), prose_docs(40, "a") + [{"text": ""}, b"{broken"])
    copies = [{**d, "id": d["id"] + "-copy"} for d in prose_docs(5, "a")]  # 5 exact duplicates of a's texts, own ids
    write_shard(str(raw / "b.jsonl.gz"), prose_docs(30, "b") + copies)
    write_shard(str(raw / "c.parquet"), docs(10, "c"))
    params = {
        "input": str(raw),
        "output": str(store),
        "run_id": "from-ci",
        "config": {"ray": {"num_cpus": 1, "object_store_memory_mb": 128}, "stages": ["normalize", "dedup"]},
    }
    proc = subprocess.run(
        [
            sys.executable,
            "deployments/trigger.py",
            "curate/curate",
            "--params",
            json.dumps(params),
            "--timeout",
            "300",
            "--poll-interval",
            "1",
        ],
        cwd=REPO,
        env=prefect_server["env"],
        capture_output=True,
        text=True,
        timeout=360,
    )
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-2000:], worker["log"].read_text()[-4000:])
    run = json.loads(proc.stdout)
    assert run["state"] == "COMPLETED" and run["deployment"] == "curate/curate"
    assert {a["key"] for a in run["artifacts"]} == {"curate-from-ci", "curate-from-ci-summary"}

    # It ran on the worker of the process pool, with the parameters as given.
    flow_run = read_with_client(prefect_server["api"], lambda c: c.read_flow_run(run["flow_run_id"]))
    assert flow_run.work_pool_name == "mixforge"
    assert flow_run.parameters["config"]["stages"] == ["normalize", "dedup"]
    assert (
        f"Completed submission of flow run '{run['flow_run_id']}'" in worker["log"].read_text()
        or run["flow_run_id"] in worker["log"].read_text()
    )

    # The artifacts hold the run's counts, and the data is where they say.
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    (table,) = read_with_client(
        prefect_server["api"],
        lambda c: c.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["curate-from-ci"]))),
    )
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert [r["stage"] for r in rows] == ["normalize", "dedup"]
    assert rows[0]["docs_in"] == 87 and rows[0]["docs_kept"] == 85
    assert rows[1]["docs_in"] == 85 and rows[1]["docs_dropped"] >= 5
    parts = sorted((store / "runs" / "from-ci" / "dedup").glob("part-*.parquet"))
    assert len(parts) == 3
    assert sum(pq.read_metadata(p).num_rows for p in parts) == rows[1]["docs_kept"]


def test_ci_trigger_reports_a_failed_run(prefect_server, worker, tmp_path):
    params = {"input": str(tmp_path / "nothing-here" / "*.jsonl"), "output": str(tmp_path / "store")}
    proc = subprocess.run(
        [
            sys.executable,
            "deployments/trigger.py",
            "curate/curate",
            "--params",
            json.dumps(params),
            "--timeout",
            "300",
            "--poll-interval",
            "1",
        ],
        cwd=REPO,
        env=prefect_server["env"],
        capture_output=True,
        text=True,
        timeout=360,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    run = json.loads(proc.stdout)
    assert run["state"] == "FAILED" and "no input found" in (run["message"] or "") + proc.stderr


def test_nightly_deployment_is_incremental(prefect_server, worker):
    """Two nights through the real server and worker with the deployment's own parameters
    (input and store from MIXFORGE_NIGHTLY_INPUT / MIXFORGE_STORE, incremental: true): the
    second night, with nothing new, is a no-op: no run, no new mixture version."""
    incoming, store = prefect_server["home"] / "incoming", prefect_server["home"] / "store"
    write_shard(str(incoming / "a.jsonl"), prose_docs(30, "night"))
    quick = {
        "config": {
            "stages": ["normalize", "dedup"],
            "dedup": {"partitions": 2},
            "ray": {"num_cpus": 1, "object_store_memory_mb": 128},
        }
    }

    def night() -> dict:
        proc = subprocess.run(
            [
                sys.executable,
                "deployments/trigger.py",
                "pipeline/nightly",
                "--params",
                json.dumps(quick),
                "--timeout",
                "300",
                "--poll-interval",
                "1",
            ],
            cwd=REPO,
            env=prefect_server["env"],
            capture_output=True,
            text=True,
            timeout=360,
        )
        assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-2000:], worker["log"].read_text()[-4000:])
        return json.loads(proc.stdout)

    first = night()
    assert first["state"] == "COMPLETED"
    (run_id,) = [p.name for p in (store / "runs").iterdir()]
    assert (store / "runs" / run_id / "_complete.json").is_file()
    assert (store / "index" / "dedup" / "_index.json").is_file()  # the default index of an incremental store
    assert sorted(p.name for p in (store / "mixtures" / "nightly").glob("v*")) == ["v0001"]
    # The parent run carries the night's summary, and trigger.py reports it, with its subflows.
    (summary,) = first["artifacts"]
    assert summary["key"] == "pipeline-nightly" and summary["type"] == "markdown"
    assert summary["description"] == "pipeline: mixture nightly v0001 built"
    assert f"## Curated (run `{run_id}`)" in summary["data"]
    assert "| 30 | 30 | 0 | 0 |" in summary["data"]  # docs in, kept, dropped, quarantined
    assert "| nightly | v0001 | yes |" in summary["data"]
    subflows = {r["flow"]: r for r in first["subflow_runs"]}
    assert set(subflows) == {"curate", "mix"} and all(r["state"] == "COMPLETED" for r in subflows.values())
    assert f"curate-{run_id}" in {a["key"] for a in subflows["curate"]["artifacts"]}

    second = night()
    assert second["state"] == "COMPLETED"
    assert [p.name for p in (store / "runs").iterdir()] == [run_id]
    assert sorted(p.name for p in (store / "mixtures" / "nightly").glob("v*")) == ["v0001"]
    (summary,) = second["artifacts"]
    assert summary["description"] == "pipeline: nothing new, nightly v0001 still current"
    assert "nothing new under" in summary["data"] and "| nightly | v0001 | no |" in summary["data"]
    assert [r["flow"] for r in second["subflow_runs"]] == ["curate"]  # nothing mixed


# --------------------------------------------------------------------------- code shipped to a cluster

SHIP_SCRIPT = r"""
import json, os, sys
import ray
from ray.cluster_utils import Cluster
from mixforge.config import RayConfig
from tasks import ray_runtime

code = sys.argv[1]
cluster = Cluster(
    initialize_head=True, head_node_args=dict(num_cpus=1, object_store_memory=128 << 20, include_dashboard=False)
)

@ray.remote
def shipped():
    import shipped_code  # only in `code`, never installed on the cluster
    return shipped_code.VALUE

out = {}
for name, env in (("without", None), ("with", {"working_dir": code})):
    ray_runtime.connect(RayConfig(address=cluster.address, runtime_env=env))
    try:
        out[name] = ray.get(shipped.remote())
    except Exception as e:
        out[name] = type(getattr(e, "cause", None) or e).__name__
    ray.shutdown()
cluster.shutdown()
print(json.dumps(out))
"""


def test_ray_runtime_env_ships_code_to_an_existing_cluster(tmp_path):
    """`ray.runtime_env` reaches ray.init: a module only in a local folder runs on a cluster whose
    nodes were started without it (and does not without the runtime_env)."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "shipped_code.py").write_text("VALUE = 'shipped at run time'\n")
    env = base_env(tmp_path / "home")
    proc = subprocess.run(
        [sys.executable, "-c", SHIP_SCRIPT, str(code)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"without": "ModuleNotFoundError", "with": "shipped at run time"}
