"""Config models: YAML files are validated by these, and the same models are the flows'
parameters (the Prefect UI renders a form from them). Unknown keys and bad values are
errors naming the field's path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetPydanticSchema,
    PlainSerializer,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from mixforge.classify.config import ClassifyConfig
from mixforge.config_errors import ConfigError  # noqa: F401 - re-exported: mixforge.config.ConfigError
from mixforge.dedup.config import DedupConfig
from mixforge.filters.config import FilterConfig
from mixforge.forms import keyed_list
from mixforge.names import validate_name
from mixforge.shards import ReadConfig  # noqa: F401 - re-exported: the config's `read:` section
from mixforge.storage import SECRET_BLOCK_OPTION, RuntimeEnv, StorageOptions
from mixforge.strict import StrictModel

# Curation stages in pipeline order (DESIGN.md: normalize -> filter -> classify -> dedup); the
# registry (mixforge.stages.registry) is the one list, and may hold stages registered beyond these.
BUILTIN_STAGES = ("normalize", "filter", "classify", "dedup")


def _stages_schema(schema: dict[str, Any]) -> None:
    """The Prefect form lists the registered stages (the registry is read when the schema is made)."""
    from mixforge.stages.registry import stage_names

    schema["items"] = {"type": "string", "enum": list(stage_names())}


class NormalizeConfig(StrictModel):
    unicode_form: Literal["NFC", "NFKC"] | None = Field("NFC", description="Unicode normalisation form (null: none).")
    fix_mojibake: bool = Field(True, description="Repair UTF-8 decoded as Latin-1/cp1252 where detectable (ftfy).")
    strip_control_chars: bool = Field(
        True, description="Remove control characters (NUL included) except tab and newline."
    )
    normalize_newlines: bool = Field(True, description="CRLF and CR become LF.")
    drop_empty: bool = Field(True, description="Drop documents that are empty or whitespace-only after normalisation.")


class RayRuntimeEnv(StrictModel):
    """The Ray runtime_env keys a form offers; any other key Ray knows (conda, pip, uv, image_uri,
    config, ...) is passed on as given."""

    model_config = ConfigDict(extra="allow")

    working_dir: str | None = Field(
        None,
        description="Local folder (or URI of a zip) shipped to every worker as its working directory.",
        examples=["."],
    )
    excludes: list[str] | None = Field(
        None, description="Paths or globs of working_dir not shipped.", examples=[[".venv", ".git", "data"]]
    )
    py_modules: list[str] | None = Field(
        None, description="Local packages (folders or URIs) importable on every worker.", examples=[["mixforge"]]
    )
    py_executable: str | None = Field(
        None,
        description="Python executable the workers run (e.g. a venv's python).",
        examples=["/opt/venv/bin/python"],
    )
    env_vars: (
        keyed_list(
            "EnvVar",
            "One environment variable of the workers.",
            ("name", str, "Variable name."),
            ("value", str, "Its value (never a credential)."),
            {"name": "OMP_NUM_THREADS", "value": "1"},
        )
        | None
    ) = Field(None, description="Environment variables set on every worker (never credentials).")


def _env_vars_as_mapping(data: Any) -> Any:
    # The form gives env_vars as [{name, value}]: a mapping before the credential check reads the
    # names (unvalidated here, so that no type error can echo a value before that check).
    if isinstance(data, Mapping) and isinstance(data.get("env_vars"), (list, tuple)):
        entries = data["env_vars"]
        if all(isinstance(e, Mapping) and set(e) == {"name", "value"} for e in entries):
            return {**data, "env_vars": {e["name"]: e["value"] for e in entries}}
    return data


def _typed_runtime_env(env: dict[str, Any]) -> dict[str, Any]:
    # Checked after the credential check, so no error echoes a secret; ray.init gets a plain dict.
    typed = RayRuntimeEnv.model_validate(env)
    return {k: v for k, v in typed if k in typed.model_fields_set or k in (typed.model_extra or {})}


# The Ray runtime_env: a dict for ray.init, typed fields in the Prefect form, credentials refused.
TypedRuntimeEnv = Annotated[
    RuntimeEnv,
    AfterValidator(_typed_runtime_env),
    BeforeValidator(_env_vars_as_mapping),
    PlainSerializer(lambda env: RayRuntimeEnv.model_validate(env).model_dump(exclude_unset=True)),
    GetPydanticSchema(
        get_pydantic_json_schema=lambda _schema, handler: handler(RayRuntimeEnv.__pydantic_core_schema__)
    ),
]


class RayConfig(StrictModel):
    address: str | None = Field(
        None,
        description="Ray cluster to join (e.g. ray://head:10001 or auto); default: $RAY_ADDRESS, else a local Ray.",
    )
    num_cpus: int | None = Field(None, ge=1, description="CPUs for a local Ray (default: all).")
    max_shards_in_flight: int | None = Field(
        None, ge=1, description="Bound on shards scheduled at once (default: 2x cluster CPUs)."
    )
    max_retries: int = Field(3, ge=0, description="Retries of a shard whose worker died or raised.")
    object_store_memory_mb: int = Field(512, ge=64, description="Object store size of a local Ray.")
    runtime_env: TypedRuntimeEnv | None = Field(
        None,
        description="Ray runtime_env of the job (passed to ray.init), e.g. "
        "{working_dir: '.', excludes: ['.venv', '.git', 'data']} to ship this checkout's code to an existing "
        "cluster without rebuilding its image, or {env_vars: {...}}. Does not change the data, so it is not part "
        "of the run id. Never credentials (secret-looking keys and env_vars such as AWS_SECRET_ACCESS_KEY or "
        "HF_TOKEN are refused, as in storage.options): give those to the nodes' own environment.",
    )


class StorageConfig(StrictModel):
    """Where the store is and how to reach it. Never credentials: this model is a flow parameter,
    and Prefect keeps flow parameters in plain text in its database."""

    options: StorageOptions = Field(
        default_factory=dict,
        description="fsspec storage options without credentials, e.g. {endpoint_url: http://minio:9000} or {profile: "
        "NAME, client_kwargs: {region_name: eu-west-1}}. Keys that look like credentials are refused at any depth "
        "(case, '-', '_' and camelCase ignored): any key containing secret, token, password, passwd, passphrase, "
        "credential, access_key, api_key, account_key, private_key, sas_token, connection_string or authorization, "
        "any word pwd or sas, and any key ending in key (key, secret_key, sse_customer_key; kms_key_id is allowed) "
        "- so key, secret, token, session_token, security_token, aws_access_key_id, aws_secret_access_key, "
        "aws_session_token, client_secret, credentials, private_key, api_key, account_key, sas_token, password; "
        "also URLs with a password. gcsfs's token: anon|google_default|cloud|browser|cache is allowed. Credentials "
        "come from the environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN), the fsspec/boto "
        "configuration (~/.aws/credentials, profile: NAME), or the Prefect Secret block named by secret_block.",
    )
    secret_block: str | None = Field(
        None,
        description="Name of a Prefect Secret block whose value is a JSON object of fsspec options holding the "
        'credentials (e.g. {"key": ..., "secret": ...}). The flow run loads it when it first '
        "touches the store, keeps it in memory only, merges it into the options and hands it to Ray "
        "workers as task arguments; it is never written to parameters, artifacts, logs or files.",
    )

    @model_validator(mode="before")
    @classmethod
    def _block_reference(cls, data: Any) -> Any:
        # The reference travels inside `options` (as `secret_block: NAME`), so every call that
        # passes `config.storage.options` along resolves it through storage.filesystem().
        if isinstance(data, Mapping) and isinstance(data.get("options"), Mapping):
            block, in_options = data.get("secret_block"), data["options"].get(SECRET_BLOCK_OPTION)
            if block is None and in_options is not None:
                return {**data, "secret_block": in_options}
            if block is not None and in_options is None:
                return {**data, "options": {**data["options"], SECRET_BLOCK_OPTION: block}}
        elif isinstance(data, Mapping) and data.get("secret_block") is not None and "options" not in data:
            return {**data, "options": {SECRET_BLOCK_OPTION: data["secret_block"]}}
        return data

    @field_validator("secret_block")
    @classmethod
    def _block_name(cls, name: str | None) -> str | None:
        return None if name is None else validate_name(name, "Prefect Secret block name")

    @model_validator(mode="after")
    def _one_block(self) -> StorageConfig:
        if self.options.get(SECRET_BLOCK_OPTION) != self.secret_block:
            raise ValueError(
                f"secret_block {self.secret_block!r} and options.secret_block "
                f"{self.options.get(SECRET_BLOCK_OPTION)!r} differ: give the block once, as secret_block"
            )
        return self

    @field_serializer("options")
    def _options_without_reference(self, options: dict[str, Any]) -> dict[str, Any]:
        # Parameters show the block once, as `secret_block` (it is folded back in on validation).
        return {k: v for k, v in options.items() if k != SECRET_BLOCK_OPTION}


class CurateConfig(StrictModel):
    """Everything `curate` and the stage commands take besides input, output and run id."""

    stages: tuple[str, ...] = Field(
        BUILTIN_STAGES,
        json_schema_extra=_stages_schema,
        description="Stages to run, in pipeline order (normalize, filter, classify, dedup, and any registered stage). "
        "A first stage other than normalize on raw (non-Parquet-contract) input gets normalize put in front.",
    )
    read: ReadConfig = ReadConfig()
    normalize: NormalizeConfig = NormalizeConfig()
    filter: FilterConfig = FilterConfig()
    classify: ClassifyConfig = ClassifyConfig()
    dedup: DedupConfig = DedupConfig()
    ray: RayConfig = RayConfig()
    storage: StorageConfig = StorageConfig()
    extra_stages: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Settings of registered stages that are not built in, by stage name "
        "(validated by the stage's own config model).",
    )

    @field_validator("stages")
    @classmethod
    def _stages_in_order(cls, stages: tuple[str, ...]) -> tuple[str, ...]:
        from mixforge.stages.registry import stage_names

        order = stage_names()
        if not stages:
            raise ValueError("at least one stage")
        unknown = [s for s in stages if s not in order]
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}: the stages are {list(order)}")
        if len(set(stages)) != len(stages) or list(stages) != sorted(stages, key=order.index):
            raise ValueError(f"stages must be distinct and in pipeline order {list(order)}")
        return stages

    @model_validator(mode="after")
    def _extra_stage_settings(self) -> CurateConfig:
        from mixforge.stages.registry import get_stage

        for name in self.extra_stages:
            if name in BUILTIN_STAGES:
                raise ValueError(f"extra_stages.{name}: a built-in stage's settings go in its own section ({name}:)")
        # every stage it names or configures, so a stage run without its required settings fails here, not mid-run
        for name in dict.fromkeys([*(s for s in self.stages if s not in BUILTIN_STAGES), *self.extra_stages]):
            model = get_stage(name).config_model
            if model is None:
                continue
            try:
                model.model_validate(self.extra_stages.get(name, {}))
            except ValidationError as e:
                problems = "; ".join(f"{'.'.join(map(str, x['loc'])) or '<root>'}: {x['msg']}" for x in e.errors())
                raise ValueError(f"extra_stages.{name}: {problems}") from None
        return self

    def run_fingerprint(self) -> dict[str, Any]:
        """The part of the config that determines outputs (goes into the run id).

        Where and how it runs (Ray, credentials) does not change the data, so it is left out:
        the same run can resume on a cluster after starting on a laptop.
        """
        used = (set(self.stages) & set(BUILTIN_STAGES)) | {"read", "stages"}
        fingerprint = self.model_dump(mode="json", include=used)
        extra = {name: _settings_fingerprint(name, s) for name, s in self.extra_stages.items() if name in self.stages}
        if extra:  # only when used: run ids of built-in pipelines stay as they were
            fingerprint["extra_stages"] = extra
        return fingerprint


def _settings_fingerprint(name: str, settings: dict[str, Any]) -> Any:
    """A stage's settings as they go into the run id: its config model's `fingerprint()` where it has
    one (leaving out where it runs, e.g. rephrase's engine.python), else the settings as written."""
    from mixforge.stages.registry import get_stage, stage_names

    model = get_stage(name).config_model if name in stage_names() else None
    if model is not None and hasattr(model, "fingerprint"):
        return model.model_validate(settings).fingerprint()
    return settings


def _format_errors(origin: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        # a refused credential is never echoed, not even redacted
        got = "" if e["type"] in ("extra_forbidden", "secret_storage_option") else f" (got {e.get('input')!r})"
        lines.append(f"{origin}: {loc}: {msg}{got}")
    return "\n".join(lines)


def load_model(model: type[BaseModel], data: dict[str, Any] | None, origin: str) -> Any:
    try:
        return model.model_validate(data or {})
    except ValidationError as e:
        raise ConfigError(_format_errors(origin, e)) from None


def load_yaml(path: str | os.PathLike | None, model: type[BaseModel] = CurateConfig) -> Any:
    """Load and validate a YAML config file (None: all defaults)."""
    if path is None:
        return model()
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return load_model(model, data, str(path))
