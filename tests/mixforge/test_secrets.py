"""Credentials never become flow parameters, artifacts, logs, `_run.json` or manifests.

Secret-looking storage options are refused with a message saying where credentials belong; a
Prefect Secret block named by `storage.secret_block` is resolved by the flow run (the driver),
kept in memory, and handed to Ray workers as task arguments. The end-to-end test turns on moto's
IAM authentication, so the bucket can only be reached with the block's credentials.
"""

from __future__ import annotations

import json
import logging
import os
import re

import pytest
import requests

from mixforge import storage
from mixforge.classify.config import TrainClassifierConfig
from mixforge.config import ConfigError, CurateConfig, StorageConfig, load_model, load_yaml
from mixforge.rephrase.config import RephraseRunConfig

HELP = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "~/.aws/credentials",
    "profile: NAME",
    "storage.secret_block",
)
NEVER_SHOWN = "Sup3r-S3cret-Value-42"


@pytest.mark.parametrize(
    "options, named",
    [
        ({"key": NEVER_SHOWN}, "key"),
        ({"secret": NEVER_SHOWN}, "secret"),
        ({"token": NEVER_SHOWN}, "token"),
        ({"password": NEVER_SHOWN}, "password"),
        ({"passwd": NEVER_SHOWN}, "passwd"),
        ({"session_token": NEVER_SHOWN}, "session_token"),
        ({"security_token": NEVER_SHOWN}, "security_token"),
        ({"AWS_ACCESS_KEY_ID": NEVER_SHOWN}, "AWS_ACCESS_KEY_ID"),
        ({"aws_secret_access_key": NEVER_SHOWN}, "aws_secret_access_key"),
        ({"aws-session-token": NEVER_SHOWN}, "aws-session-token"),
        ({"SecretAccessKey": NEVER_SHOWN}, "SecretAccessKey"),
        ({"accessKey": NEVER_SHOWN}, "accessKey"),
        ({"secret_key": NEVER_SHOWN}, "secret_key"),
        ({"account_key": NEVER_SHOWN}, "account_key"),
        ({"sas_token": NEVER_SHOWN}, "sas_token"),
        ({"credentials": {"a": NEVER_SHOWN}}, "credentials"),
        ({"Credential": NEVER_SHOWN}, "Credential"),
        ({"private_key": NEVER_SHOWN}, "private_key"),
        ({"client_secret": NEVER_SHOWN}, "client_secret"),
        ({"api_key": NEVER_SHOWN}, "api_key"),
        ({"apiKey": NEVER_SHOWN}, "apiKey"),
        ({"connection_string": NEVER_SHOWN}, "connection_string"),
        ({"client_kwargs": {"aws_access_key_id": NEVER_SHOWN}}, "client_kwargs.aws_access_key_id"),
        ({"client_kwargs": {"aws_secret_access_key": NEVER_SHOWN}}, "client_kwargs.aws_secret_access_key"),
        ({"config_kwargs": {"nested": {"Password": NEVER_SHOWN}}}, "config_kwargs.nested.Password"),
        ({"s3_additional_kwargs": {"SSECustomerKey": NEVER_SHOWN}}, "s3_additional_kwargs.SSECustomerKey"),
        (
            {"client_kwargs": {"headers": {"Authorization": f"Bearer {NEVER_SHOWN}"}}},
            "client_kwargs.headers.Authorization",
        ),
        ({"list": [{"token": NEVER_SHOWN}]}, "list[0].token"),
        ({"endpoint_url": f"https://user:{NEVER_SHOWN}@minio:9000"}, "endpoint_url (a URL with a password)"),
    ],
)
def test_secret_looking_options_are_refused_without_echoing_them(options, named):
    with pytest.raises(ConfigError) as err:
        load_model(CurateConfig, {"storage": {"options": options}}, "curate.yaml")
    message = str(err.value)
    assert message.startswith(f"curate.yaml: storage.options: {named}: looks like a credential;")
    assert all(h in message for h in HELP) and NEVER_SHOWN not in message
    # Built directly (as Prefect validates flow parameters), the error does not echo it either.
    with pytest.raises(ValueError) as direct:
        CurateConfig(storage={"options": options})
    assert NEVER_SHOWN not in str(direct.value) and NEVER_SHOWN not in repr(direct.value.errors())
    with pytest.raises(storage.SecretInStorageOptions, match=re.escape(f"storage.options.{named.split(' ')[0]}")):
        storage.refuse_secret_options(options)


def test_every_model_carrying_storage_options_refuses_them(tmp_path):
    bad = {"endpoint_url": "http://minio:9000", "client_kwargs": {"aws_secret_access_key": NEVER_SHOWN}}
    for model, data, where in [
        (TrainClassifierConfig, {"storage_options": bad}, "storage_options"),
        (RephraseRunConfig, {"rephrase": {"model": "m"}, "storage": {"options": bad}}, "storage.options"),
        (StorageConfig, {"options": bad}, "options"),
    ]:
        with pytest.raises(
            ConfigError, match=rf"x.yaml: {where}: client_kwargs.aws_secret_access_key: looks like a credential"
        ) as err:
            load_model(model, data, "x.yaml")
        assert NEVER_SHOWN not in str(err.value)
    from mixforge.mixtures.spec import MixSpec

    with pytest.raises(ConfigError, match="storage.options: client_kwargs.aws_secret_access_key: looks like") as err:
        load_model(
            MixSpec,
            {
                "name": "m",
                "pool": ["/p"],
                "store": "/s",
                "budget_tokens": 10,
                "groups": [{"name": "all"}],
                "storage": {"options": bad},
            },
            "spec.yaml",
        )
    assert NEVER_SHOWN not in str(err.value)
    path = tmp_path / "c.yaml"
    path.write_text(
        f"storage:\n  options:\n    endpoint_url: http://minio:9000\n    key: minio\n    secret: {NEVER_SHOWN}\n"
    )
    with pytest.raises(ConfigError, match=r"storage.options: key, secret: look like a credential") as err:
        load_yaml(path)
    assert NEVER_SHOWN not in str(err.value)


def test_the_ray_runtime_env_refuses_credentials_too():
    for runtime_env, named in [
        ({"env_vars": {"AWS_SECRET_ACCESS_KEY": NEVER_SHOWN}}, "env_vars.AWS_SECRET_ACCESS_KEY"),
        ({"env_vars": {"HF_TOKEN": NEVER_SHOWN}}, "env_vars.HF_TOKEN"),
        ({"pip": [f"git+https://me:{NEVER_SHOWN}@git.example.org/x.git"]}, "pip[0] (a URL with a password)"),
    ]:
        with pytest.raises(ConfigError) as err:
            load_model(CurateConfig, {"ray": {"runtime_env": runtime_env}}, "c.yaml")
        assert str(err.value).startswith(
            f"c.yaml: ray.runtime_env: {named}: looks like a credential; the Ray runtime_env is a flow parameter"
        )
        assert NEVER_SHOWN not in str(err.value)
    fine = {"working_dir": ".", "excludes": [".venv", ".git"], "env_vars": {"OMP_NUM_THREADS": "1"}}
    assert CurateConfig(ray={"runtime_env": fine}).ray.runtime_env == fine


def test_options_that_are_not_credentials_pass():
    options = {
        "endpoint_url": "http://minio:9000",
        "profile": "analytics",
        "anon": False,
        "requester_pays": True,
        "client_kwargs": {"region_name": "eu-west-1", "verify": False},
        "config_kwargs": {"signature_version": "s3v4", "s3": {"addressing_style": "path"}},
        "s3_additional_kwargs": {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/data"},
        "use_listings_cache": False,
        "default_block_size": 1 << 20,
    }
    assert CurateConfig(storage={"options": options}).storage.options == options
    assert StorageConfig(options={"token": "anon"}).options == {"token": "anon"}  # gcsfs: a way to authenticate
    assert TrainClassifierConfig(storage_options={"endpoint_url": "http://x"}).storage_options == {
        "endpoint_url": "http://x"
    }


def test_the_secret_block_reference_rides_in_the_options_and_dumps_once():
    config = CurateConfig(storage={"options": {"endpoint_url": "http://x"}, "secret_block": "s3-creds"})
    # every `config.storage.options` passed along carries the reference (a name, not a secret)...
    assert config.storage.options == {"endpoint_url": "http://x", "secret_block": "s3-creds"}
    # ...while the parameters show it once, and read back the same
    dumped = config.model_dump(mode="json")["storage"]
    assert dumped == {"options": {"endpoint_url": "http://x"}, "secret_block": "s3-creds"}
    assert CurateConfig.model_validate(config.model_dump(mode="json")) == config
    assert StorageConfig(options={"secret_block": "s3-creds"}).secret_block == "s3-creds"
    assert (
        TrainClassifierConfig(storage_options={"secret_block": "s3-creds"}).storage_options["secret_block"]
        == "s3-creds"
    )
    with pytest.raises(ValueError, match="differ"):
        StorageConfig(options={"secret_block": "a"}, secret_block="b")
    with pytest.raises(ValueError, match="invalid Prefect Secret block name"):
        StorageConfig(secret_block="Creds_1")
    assert config.run_fingerprint().get("storage") is None  # where and how: never in the run id or _run.json


def test_resolved_options_merge_nested_credentials():
    with storage.handed_secrets({"creds": {"key": "k", "client_kwargs": {"aws_session_token": "t"}}}):
        merged = storage.resolve_options(
            {"endpoint_url": "http://x", "client_kwargs": {"region_name": "r"}, "secret_block": "creds"}
        )
        assert merged == {
            "endpoint_url": "http://x",
            "key": "k",
            "client_kwargs": {"region_name": "r", "aws_session_token": "t"},
        }
    assert storage.resolved_secrets() == {}  # handed secrets live as long as the task that got them
    assert storage.resolve_options({"endpoint_url": "http://x"}) == {"endpoint_url": "http://x"}


# ----------------------------------------------------------------------------- end to end


@pytest.fixture
def iam_only_bucket(s3_bucket):
    """The test's bucket, reachable only with a fresh IAM user's access key (moto checks signatures
    once its auth is on); the environment's credentials stop working. Yields (root, endpoint, key, secret)."""
    import boto3

    root, opts = s3_bucket
    endpoint = opts["endpoint_url"]
    iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1")
    user = f"u-{root.removeprefix('s3://')[-40:]}"
    iam.create_user(UserName=user)
    iam.put_user_policy(
        UserName=user,
        PolicyName="all",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        ),
    )
    key = iam.create_access_key(UserName=user)["AccessKey"]
    requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()
    try:
        yield root, endpoint, key["AccessKeyId"], key["SecretAccessKey"]
    finally:
        requests.post(f"{endpoint}/moto-api/reset-auth", data=b"inf", timeout=10).raise_for_status()
        storage.forget_secrets()


def test_a_secret_block_reaches_driver_and_workers_and_nothing_records_it(
    iam_only_bucket, ray_local, prefect_harness, caplog, capfd
):
    import s3fs
    from prefect.blocks.system import Secret
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )

    from flows.curate import curate
    from mixforge.config import RayConfig
    from tasks.executor import ray_map
    from tests.helpers import docs, write_shard

    caplog.set_level(logging.INFO)
    root, endpoint, key_id, secret = iam_only_bucket
    bucket = root.removeprefix("s3://")
    with pytest.raises(PermissionError):  # the environment's credentials no longer open the bucket
        s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True).ls(bucket)
    owner = s3fs.S3FileSystem(endpoint_url=endpoint, key=key_id, secret=secret, skip_instance_cache=True)
    write_shard(f"{bucket}/raw/a.jsonl", docs(12, "a"), owner)
    write_shard(f"{bucket}/raw/b.jsonl.zst", docs(7, "b"), owner)

    Secret(value={"key": key_id, "secret": secret}).save("mixforge-test-s3", overwrite=True)
    storage.forget_secrets()
    config = CurateConfig(
        stages=["normalize"],
        storage={"options": {"endpoint_url": endpoint}, "secret_block": "mixforge-test-s3"},
        ray=RayConfig(max_retries=0),
    )
    state = curate(input=f"{root}/raw/", output=f"{root}/store", config=config, return_state=True)
    summary = state.result()
    assert (
        summary["stages"][0]["docs_in"] == summary["stages"][0]["docs_kept"] == 19
    )  # read and written on Ray workers

    # The driver resolved the block; a Ray worker gets it in memory and its s3fs signs with it.
    assert storage.filesystem(root, config.storage.options)[0].key == key_id

    def worker_credentials(uri, options):
        fs, path = storage.filesystem(uri, options)
        return os.getpid(), fs.key, fs.secret == secret, len(fs.ls(path))

    ((_, (pid, worker_key, same_secret, listed), error),) = list(
        ray_map(
            ray_local.remote(worker_credentials),
            [(0, (f"{root}/raw", config.storage.options))],
            RayConfig(max_retries=0),
        )
    )
    assert error is None and pid != os.getpid() and worker_key == key_id and same_secret and listed == 2

    # Nothing written or recorded holds the credentials: parameters, task runs, artifacts, logs, files.
    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
        assert flow_run.parameters["config"]["storage"] == {
            "options": {"endpoint_url": endpoint},
            "secret_block": "mixforge-test-s3",
        }
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    assert artifacts and logs and task_runs
    recorded = {
        "flow run": flow_run.model_dump_json(),
        "task runs": json.dumps([t.model_dump(mode="json") for t in task_runs]),
        "artifacts": json.dumps([a.model_dump(mode="json") for a in artifacts]),
        "prefect logs": json.dumps([entry.message for entry in logs]),
        "python logs": caplog.text,
        "stdout/stderr": "".join(capfd.readouterr()),
    }
    owner.invalidate_cache()
    files = owner.find(bucket)
    assert any(f.endswith("/_run.json") for f in files) and any(f.endswith("/_stats.json") for f in files)
    for path in files:
        recorded[path] = owner.cat_file(path).decode("utf-8", "replace")
    ray_logs = os.path.join(ray_local._private.worker._global_node.get_session_dir_path(), "logs")
    for folder, _, names in os.walk(ray_logs):
        for name in names:
            with open(os.path.join(folder, name), "rb") as f:
                recorded[f"ray log {name}"] = f.read().decode("utf-8", "replace")
    leaks = [where for where, text in recorded.items() if secret in text or key_id in text]
    assert leaks == []


def test_a_missing_block_is_a_config_error(prefect_harness):
    storage.forget_secrets()
    with pytest.raises(
        ConfigError, match="storage.secret_block 'no-such-block': no Prefect Secret block of that name"
    ):
        storage.filesystem("s3://bucket/x", {"secret_block": "no-such-block"})
