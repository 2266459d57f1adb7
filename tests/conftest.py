"""Real parts, no mocks: a moto S3 server over HTTP, a local Ray, Prefect's test harness."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile

import pytest

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
os.environ.pop("RAY_ADDRESS", None)
# S3 credentials come from the environment, as in production (configs carry none: secret-looking
# storage options are refused). Set before any Ray worker starts, so workers inherit them; moto
# accepts any, and these keep real credentials of the developer's shell out of the tests.
os.environ.update(
    {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
)
os.environ.pop("AWS_SESSION_TOKEN", None)
os.environ.pop("AWS_PROFILE", None)
# CLI commands run by the tests share one local Prefect server (mixforge.prefect_server), in a Prefect
# home of the test session's own (never the developer's), stopped when the session ends; one a test
# starts in a home of its own stops itself after two idle minutes.
_PREFECT_HOME = tempfile.mkdtemp(prefix="mixforge-tests-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ["MIXFORGE_PREFECT_SERVER_IDLE_S"] = "120"
os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("MIXFORGE_PREFECT_SERVER", None)
os.environ.pop("MIXFORGE_EXECUTOR", None)


@pytest.fixture(scope="session", autouse=True)
def _stop_shared_prefect_server():
    yield
    from mixforge import prefect_server

    prefect_server.stop()
    shutil.rmtree(_PREFECT_HOME, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 HTTP endpoint (moto) on loopback; yields fsspec storage options for it: only the
    endpoint (credentials are in the environment, see above)."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    yield {"endpoint_url": endpoint}
    server.stop()


@pytest.fixture
def s3_bucket(s3_server, request):
    """A fresh bucket per test: returns (s3://bucket, storage_options)."""
    import boto3

    name = "t-" + request.node.name.lower().replace("_", "-").replace("[", "-").replace("]", "")[:40].strip("-")
    boto3.client(
        "s3",
        endpoint_url=s3_server["endpoint_url"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_bucket(Bucket=name)
    yield f"s3://{name}", s3_server


@pytest.fixture(scope="session")
def ray_local():
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=256 << 20,
            configure_logging=False,
            log_to_driver=False,
        )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
