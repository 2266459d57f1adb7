"""infra/ checked statically (no container engine or Kubernetes here): every YAML parses; the
Kubernetes manifests validate against the Kubernetes JSON schemas (kubernetes-validate, schemas
bundled, offline) and against cross-references of our own; the `ray up` config validates against
the schema Ray ships; the images install exactly the project's pinned requirement sets."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.helpers import REPO

INFRA = REPO / "infra"
K8S_MANIFESTS = sorted((INFRA / "k8s").glob("*.yaml")) + [INFRA / "ray" / "raycluster.yaml"]
K8S_VERSION = "1.33.0"


def docs_of(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def k8s_objects() -> list[tuple[Path, dict]]:
    return [(p, d) for p in K8S_MANIFESTS if p.name != "kustomization.yaml" for d in docs_of(p)]


def pins(path: Path) -> dict[str, str]:
    """name -> version of a requirements file; every requirement line must be an exact pin."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[^\]]+\])?==([^\s;]+)", line)
        assert m, f"{path.name}: not an exact pin: {line!r}"
        out[re.sub(r"[-_.]+", "-", m.group(1).lower())] = m.group(3)
    return out


def project_direct_pins() -> dict[str, str]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    out = {}
    for d in deps:
        name, version = re.fullmatch(r"([A-Za-z0-9_.\-]+)(?:\[[^\]]+\])?==(\S+)", d).groups()
        out[re.sub(r"[-_.]+", "-", name.lower())] = version
    return out


# --------------------------------------------------------------------------- YAML everywhere


def test_every_yaml_file_parses():
    files = (
        sorted(INFRA.rglob("*.yaml"))
        + sorted((REPO / "deployments").glob("*.yaml"))
        + sorted((REPO / ".github").rglob("*.yml"))
    )
    assert len(files) >= 12
    for f in files:
        assert docs_of(f), f"{f} is empty"


# --------------------------------------------------------------------------- Kubernetes


def test_kubernetes_manifests_validate_against_the_kubernetes_schemas():
    kv = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed (see tests' requirements)"
    )
    checked = 0
    for _path, obj in k8s_objects():
        if obj["apiVersion"].startswith("ray.io/"):
            continue  # a CRD: checked by test_raycluster_* below
        kv.validate(obj, K8S_VERSION, strict=True)  # raises on any schema violation or unknown field
        checked += 1
    assert checked >= 10
    # The validator bites: a typo'd field fails.
    bad = next(o for _, o in k8s_objects() if o["kind"] == "Deployment")
    bad = json.loads(json.dumps(bad))
    bad["spec"]["template"]["spec"]["containers"][0]["imagePullPolicee"] = "Always"
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, K8S_VERSION, strict=True)


def test_kubernetes_manifests_are_consistent():
    objects = k8s_objects()
    kinds = sorted(o["kind"] for _, o in objects)
    assert {"Namespace", "Secret", "Service", "StatefulSet", "Deployment", "Job", "RayCluster"} <= set(kinds)
    secrets = {o["metadata"]["name"]: set(o["stringData"]) for _, o in objects if o["kind"] == "Secret"}
    pod_labels = []
    for path, o in objects:
        assert o["metadata"]["name"], path
        if o["kind"] != "Namespace":
            assert o["metadata"].get("namespace") == "mixforge", (
                f"{path.name}: {o['kind']} outside the mixforge namespace"
            )
        pods = []
        if o["kind"] in ("Deployment", "StatefulSet", "Job"):
            pods = [o["spec"]["template"]]
            if o["kind"] != "Job":
                selector = o["spec"]["selector"]["matchLabels"]
                assert selector.items() <= o["spec"]["template"]["metadata"]["labels"].items(), (
                    f"{path.name}: selector"
                )
        elif o["kind"] == "RayCluster":
            pods = [o["spec"]["headGroupSpec"]["template"]] + [g["template"] for g in o["spec"]["workerGroupSpecs"]]
        for pod in pods:
            pod_labels.append(pod["metadata"]["labels"])
            for c in pod["spec"]["containers"]:
                image = c["image"]
                assert re.search(r":[\w.\-]+$", image) and not image.endswith(":latest"), (
                    f"{path.name}: unpinned image {image}"
                )
                assert "limits" in c.get("resources", {}) or o["kind"] == "Job", (
                    f"{path.name}: {c['name']} has no limits"
                )
                for ref in c.get("envFrom", []):
                    assert ref["secretRef"]["name"] in secrets, f"{path.name}: unknown secret {ref}"
                for env in c.get("env", []):
                    if "valueFrom" in env:
                        key = env["valueFrom"]["secretKeyRef"]
                        assert key["key"] in secrets[key["name"]], f"{path.name}: {key} not in the secret"
    for _, o in objects:
        if o["kind"] == "Service":
            sel = o["spec"]["selector"]
            assert any(sel.items() <= labels.items() for labels in pod_labels), (
                f"service {o['metadata']['name']} selects no pod"
            )

    kustomization = docs_of(INFRA / "k8s" / "kustomization.yaml")[0]
    listed = {(INFRA / "k8s" / r).resolve() for r in kustomization["resources"]}
    assert listed == {p.resolve() for p in K8S_MANIFESTS if p.name != "kustomization.yaml"}


def raycluster() -> dict:
    (obj,) = docs_of(INFRA / "ray" / "raycluster.yaml")
    return obj


def test_raycluster_has_cpu_and_gpu_groups_on_the_projects_ray():
    rc = raycluster()
    lock = pins(REPO / "requirements" / "lock.txt")
    assert rc["apiVersion"] == "ray.io/v1" and rc["kind"] == "RayCluster"
    assert rc["spec"]["rayVersion"] == lock["ray"]
    head = rc["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    head_ports = {p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]}
    assert {6379, 8265, 10001} <= head_ports
    groups = {g["groupName"]: g for g in rc["spec"]["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    for g in groups.values():
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
        assert isinstance(g["rayStartParams"], dict)
        assert all(isinstance(v, str) for v in g["rayStartParams"].values())  # KubeRay wants strings
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == groups["gpu"]["rayStartParams"]["num-gpus"]
    assert "mixforge-gpu" in gpu["image"]
    assert "mixforge-cpu" in groups["cpu"]["template"]["spec"]["containers"][0]["image"]

    # Workers in Kubernetes reach this cluster through its head service (Ray Client port).
    workers = [o for p, o in k8s_objects() if p.name == "prefect-worker.yaml"]
    addresses = {
        e["value"]
        for w in workers
        for e in w["spec"]["template"]["spec"]["containers"][0]["env"]
        if e["name"] == "RAY_ADDRESS"
    }
    assert addresses == {f"ray://{rc['metadata']['name']}-head-svc:10001"}


# --------------------------------------------------------------------------- ray up


def test_ray_up_config_validates_against_rays_schema():
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = docs_of(INFRA / "ray" / "cluster.yaml")[0]
    jsonschema.validate(config, schema)
    assert set(config["available_node_types"]) == {"head", "cpu", "gpu"}
    assert config["head_node_type"] == "head"
    assert "--gpus all" in config["available_node_types"]["gpu"]["docker"]["worker_run_options"]
    assert any("prefect worker start --pool mixforge" in c for c in config["head_start_ray_commands"])
    with pytest.raises(jsonschema.ValidationError):  # the schema bites
        jsonschema.validate({**config, "max_wrokers": 3}, schema)


# --------------------------------------------------------------------------- compose


def test_compose_file_wires_server_postgres_worker_minio_and_ray():
    compose = docs_of(INFRA / "compose" / "docker-compose.yaml")[0]
    services = compose["services"]
    assert {"postgres", "prefect-server", "prefect-worker", "minio", "ray-head", "ray-worker"} <= set(services)
    for name, s in services.items():
        assert re.search(r":[\w.\-]+$", s["image"]) and not s["image"].endswith(":latest"), name
        for dep in s.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown {dep}"
    server_env = services["prefect-server"]["environment"]
    assert server_env["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
    assert "asyncpg" in pins(REPO / "requirements" / "lock.txt")
    worker = services["prefect-worker"]
    pools = {
        d["work_pool"]["name"]
        for d in yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())["deployments"]
    }
    assert worker["command"][:5] == ["prefect", "worker", "start", "--pool", "mixforge"] and "mixforge" in pools
    assert worker["environment"]["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert worker["environment"]["AWS_ENDPOINT_URL"] == "http://minio:9000"


# --------------------------------------------------------------------------- images


def dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        instr, _, args = buf.partition(" ")
        out.append((instr.upper(), args.strip()))
        buf = ""
    assert not buf, f"{path.name}: dangling continuation"
    return out


def pip_installs(instructions) -> list[list[str]]:
    runs = [args for instr, args in instructions if instr == "RUN"]
    cmds = [c.strip() for r in runs for c in r.split("&&")]
    return [c.split() for c in cmds if c.startswith("pip install")]


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.gpu"])
def test_images_install_only_pinned_sets(name):
    instructions = dockerfile(INFRA / "images" / name)
    (base,) = [a for i, a in instructions if i == "FROM"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base), base  # pinned to a patch release
    copied = [a.split()[0] for i, a in instructions if i == "COPY"]
    for src in copied:
        assert (REPO / src).exists(), f"{name} copies {src}, which is not in the repository"
    installs = pip_installs(instructions)
    assert installs, name
    for cmd in installs:
        assert "--no-deps" in cmd, f"{name}: `{' '.join(cmd)}` would resolve unpinned dependencies"
    req_files = [cmd[i + 1] for cmd in installs for i, tok in enumerate(cmd) if tok == "-r"]
    for f in req_files:
        assert f"{f}" in copied or any(f.startswith(c.rstrip("/") + "/") for c in copied), f"{name}: {f} not copied"
        pins(REPO / f)  # every line an exact pin
    assert ["pip", "install", "--no-deps", "."] in installs  # mixforge itself, no resolution
    workdirs = [a for i, a in instructions if i == "WORKDIR"]
    assert workdirs == ["/opt/mixforge"]  # where prefect.yaml's image pull step points
    image_code = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())["definitions"]["pull"][
        "image-code"
    ]
    assert image_code[0]["prefect.deployments.steps.set_working_directory"]["directory"] == "/opt/mixforge"
    if name == "Dockerfile.cpu":
        assert req_files == ["requirements/lock.txt", "infra/images/requirements-cluster.txt"]
    else:
        assert req_files == ["infra/images/requirements-gpu.txt"]


def test_cluster_extras_agree_with_the_lock():
    lock = pins(REPO / "requirements" / "lock.txt")
    extras = pins(INFRA / "images" / "requirements-cluster.txt")
    for must in ("grpcio", "aiohttp-cors", "opencensus", "py-spy", "smart-open", "virtualenv", "colorful"):
        assert must in extras, f"ray[default,client] needs {must}"
    clash = {n: (v, lock[n]) for n, v in extras.items() if n in lock and lock[n] != v}
    assert not clash, f"requirements-cluster.txt disagrees with requirements/lock.txt: {clash}"


# The GPU set differs from the project's pins only where vLLM pins its own versions (torch==2.14.0,
# transformers<5.21, numpy<2.4, numba==0.65.0), and it has no Prefect: Prefect 3.9.1 needs
# fastapi>=0.139, vLLM 0.33.0 fastapi<0.137 (Ray GPU nodes never import Prefect). The dedup kernel's
# bit-identity tests pass under numba 0.65.0 too (a dedup step may be scheduled on a GPU node).
GPU_OVERRIDES = {"torch", "transformers", "numpy", "numba"}
NOT_ON_GPU_NODES = {"prefect"}


def test_gpu_set_is_the_projects_pins_plus_vllm():
    gpu = pins(INFRA / "images" / "requirements-gpu.txt")
    assert "vllm" in gpu and "torch" in gpu
    assert gpu["ray"] == pins(REPO / "requirements" / "lock.txt")["ray"]
    assert not NOT_ON_GPU_NODES & set(gpu)
    for name, version in project_direct_pins().items():
        if name in NOT_ON_GPU_NODES:
            continue
        if name in GPU_OVERRIDES:
            assert name in gpu, f"the GPU set must pin {name}"
            continue
        assert gpu.get(name) == version, f"GPU set pins {name}=={gpu.get(name)}, the project {version}"
    # The cluster extras are in it too: GPU nodes are Ray nodes.
    for name in pins(INFRA / "images" / "requirements-cluster.txt"):
        assert name in gpu, f"the GPU set lacks Ray's cluster extra {name}"


# --------------------------------------------------------------------------- CI trigger


def test_github_workflow_runs_a_deployment_with_parameters_and_waits():
    wf = docs_of(REPO / ".github" / "workflows" / "run-deployment.yml")[0]
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` as True
    inputs = on["workflow_dispatch"]["inputs"]
    assert {"deployment", "parameters"} <= set(inputs)
    steps = [s for job in wf["jobs"].values() for s in job["steps"]]
    runs = "\n".join(s.get("run", "") for s in steps)
    assert "deployments/trigger.py" in runs and "--params" in runs and "--timeout" in runs
    prefect_pin = pins(REPO / "requirements" / "lock.txt")["prefect"]
    assert f"prefect=={prefect_pin}" in runs
    env = {k: v for job in wf["jobs"].values() for k, v in job.get("env", {}).items()}
    assert "secrets.PREFECT_API_URL" in env["PREFECT_API_URL"]
