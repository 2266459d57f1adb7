"""The mixture spec: what to take from the curated pool, how much, and how (YAML + pydantic).

A spec names its pool and its store, defines groups by predicates over pool columns, and gives
each group a target share of a token budget. Its paths are absolute paths or URIs; `load_spec`
resolves a spec file's relative paths against the file's folder, and a build refuses any left
(a spec given as a mapping, e.g. from the Prefect UI: preflight.py). Groups are disjoint: a
document belongs to the first group (in spec order) whose predicates it matches; documents
matching no group are not used.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mixforge.config import RayConfig, StorageConfig, StrictModel, load_yaml
from mixforge.forms import keyed_list
from mixforge.mixtures.samplers import Sampling, UniformSampling
from mixforge.names import name_field
from mixforge.predicates import (  # noqa: F401 - re-exported: the where syntax is mixforge.predicates'
    PARENT_ID,
    SYNTHETIC,
    Condition,
    Range,
    Where,
    describe_condition,
    describe_where,
)
from mixforge.runs import sha256_json

# A mapping in YAML (`web: ODC-By 1.0`), a list of typed entries in the Prefect form and in the manifest.
SourceLicences = keyed_list(
    "SourceLicence",
    "The licence of one source.",
    ("source", str, "Source name (`*`: every other source)."),
    ("licence", str, "Its licence, shown in the data card."),
    {"source": "web", "licence": "ODC-By 1.0"},
)

MixtureName = name_field("mixture name")
GroupName = name_field("group name")
PhaseName = name_field("phase name")


class GroupSpec(StrictModel):
    name: GroupName = Field(..., description="Group name (lowercase letters, digits, single dashes; at most 64).")
    where: Where = Field(
        default_factory=dict,
        description="Predicates over pool columns, all of which must hold: a value, a list of values, a range "
        "{min, max} (or above / at_most), {not: values}, {missing: true|false}; `synthetic: true|false` selects "
        "rephrased rows or originals. Empty: every document.",
    )
    weight: float | None = Field(
        None, ge=0, description="Target share of the budget (weights are normalised over a phase's groups)."
    )
    # Per phase on purpose: phases are separate stages of training, and a later phase (an anneal)
    # re-reading the best sources already seen in the main phase is the point of having it (OLMo 2's
    # Dolmino mix). The manifest reports each phase's epochs, so the total is visible.
    max_epochs: float = Field(
        1.0,
        gt=0,
        description="Cap within each phase: tokens taken in a phase <= max_epochs x the group's "
        "tokens; a document is taken at most ceil(max_epochs) times in a phase (x its "
        "repeats when rehydrating). Another phase may take the same documents again.",
    )
    sampling: Sampling = Field(
        UniformSampling(),
        description="How the group's last, partial pass chooses documents: `method` names a sampler "
        "(uniform, quality, rehydrate, or any registered one; mixforge.mixtures.samplers) and the "
        "other keys are its settings.",
    )
    allow_empty: bool = Field(
        False,
        description="Set when matching no document is expected, e.g. a nightly mixture whose pool only sometimes "
        "holds rephrased rows or a given source: an empty group is then a warning and its weight goes "
        "to the other groups. Without it, a group that can match nothing (a misspelt value, a range "
        "outside the scores) fails the build before any work. Its columns must still exist.",
    )


class PhaseSpec(StrictModel):
    name: PhaseName = Field(..., description="Phase name, e.g. main or anneal; its data goes to its own folder.")
    budget_tokens: int | None = Field(None, ge=1, description="Tokens in this phase.")
    budget_fraction: float | None = Field(
        None, gt=0, description="Or: this fraction of the tokens available in the phase's groups."
    )
    weights: dict[str, float] | None = Field(
        None,
        description="Group name -> weight for this phase (default: the "
        "groups' own weights). Groups left out are not used.",
    )
    temperature: float | None = Field(
        None,
        gt=0,
        description="Temperature sampling across groups: share proportional to "
        "weight x (natural token share)^(1/T), weight defaulting to 1.",
    )

    @model_validator(mode="after")
    def _one_budget(self) -> PhaseSpec:
        if (self.budget_tokens is None) == (self.budget_fraction is None):
            raise ValueError("give exactly one of budget_tokens and budget_fraction")
        return self


class TokenizerSpec(StrictModel):
    kind: Literal["tiktoken", "huggingface"] = Field(
        "tiktoken", description="tiktoken encoding, or a Hugging Face tokenizer (needs the `tokenizers` package)."
    )
    name: str = Field(
        "cl100k_base", description="tiktoken encoding name, or the path of a tokenizer.json (or a folder holding one)."
    )
    batch_docs: int = Field(1024, ge=1, description="Documents per encode batch.")


class Exclusions(StrictModel):
    """Documents a mixture never samples (takedowns). Every takedown of a mixture is added to its
    next builds automatically, so a taken-down document does not come back with a resample."""

    ids: list[str] = Field(default_factory=list, description="Document ids never to sample.")
    url_patterns: list[str] = Field(default_factory=list, description="URL globs (`*`, `?`) never to sample.")

    def __bool__(self) -> bool:
        return bool(self.ids or self.url_patterns)


class OutputSpec(StrictModel):
    shard_tokens: int = Field(
        50_000_000,
        ge=1,
        description="Tokens per output shard, about: a phase of T tokens gets ceil(T / "
        "shard_tokens) shards of near-equal size (equal slices of the global shuffle).",
    )
    row_group_rows: int = Field(16_384, ge=1, description="Rows per Parquet row group in output shards.")


class MixSpec(StrictModel):
    """A mixture: pool, groups with target weights, budget, sampling and seed."""

    name: MixtureName = Field(
        ...,
        description="Mixture name (lowercase letters, digits, single dashes; at most 64); versions "
        "go to {store}/mixtures/{name}/vNNNN/ and it keys the Prefect artifacts.",
    )
    pool: list[str] = Field(
        ...,
        min_length=1,
        description="Curated pool: globs, prefixes or files of contract Parquet (e.g. {root}/runs/{run_id}/dedup/). "
        "Absolute paths or URIs; in a spec file, relative paths are relative to its folder.",
    )
    store: str = Field(
        ...,
        description="Store root URI; the mixture is written under {store}/mixtures/{name}/. An absolute path or "
        "URI; in a spec file, a relative path is relative to its folder.",
    )
    seed: int = Field(
        0, ge=0, description="Seed of every random choice: same pool + spec + seed = byte-identical data."
    )
    tokenizer: TokenizerSpec = TokenizerSpec()
    budget_tokens: int | None = Field(None, ge=1, description="Total tokens (without phases).")
    budget_fraction: float | None = Field(
        None, gt=0, description="Or: this fraction of the tokens available in the groups (without phases)."
    )
    temperature: float | None = Field(
        None, gt=0, description="Temperature sampling across groups (without phases); see PhaseSpec.temperature."
    )
    on_short: Literal["redistribute", "fail"] = Field(
        "redistribute",
        description="A group whose capped tokens cannot meet its target: give the "
        "shortfall to the other groups in proportion to their shares, or fail.",
    )
    tolerance_pp: float = Field(
        0.5,
        gt=0,
        description="Allowed gap between planned and realised token share, "
        "in percentage points (reported when exceeded).",
    )
    groups: list[GroupSpec] = Field(..., min_length=1)
    phases: list[PhaseSpec] = Field(
        default_factory=list,
        description="Optional phases (e.g. main, anneal), each with its own weights "
        "and budget. Without phases there is one phase, `main`.",
    )
    licenses: SourceLicences = Field(
        default_factory=dict, description="Each source's licence, shown in the data card (source `*`: the rest)."
    )
    exclude: Exclusions = Field(
        default_factory=Exclusions,
        description="Documents never sampled; the mixture's earlier takedowns are added when a version is built.",
    )
    output: OutputSpec = OutputSpec()
    ray: RayConfig = RayConfig()
    storage: StorageConfig = StorageConfig()

    @field_validator("pool", mode="before")
    @classmethod
    def _pool_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _consistent(self) -> MixSpec:
        names = [g.name for g in self.groups]
        if len(set(names)) != len(names):
            raise ValueError(f"group names must be distinct: {names}")
        if self.phases:
            if self.budget_tokens is not None or self.budget_fraction is not None or self.temperature is not None:
                raise ValueError("with phases, give budget and temperature per phase, not at the top level")
            pnames = [p.name for p in self.phases]
            if len(set(pnames)) != len(pnames):
                raise ValueError(f"phase names must be distinct: {pnames}")
        elif (self.budget_tokens is None) == (self.budget_fraction is None):
            raise ValueError("give exactly one of budget_tokens and budget_fraction (or phases)")
        for phase in self.effective_phases():
            weights = self.phase_weights(phase)
            unknown = sorted(set(weights) - set(names))
            if unknown:
                raise ValueError(f"phase {phase.name!r}: weights name unknown groups {unknown}")
            if phase.temperature is None:
                missing = [g for g, w in weights.items() if w is None]
                if missing:
                    raise ValueError(
                        f"phase {phase.name!r}: groups {missing} have no weight (give weights, or a temperature)"
                    )
            if not any((w is None or w > 0) for w in weights.values()):
                raise ValueError(f"phase {phase.name!r}: no group has a positive weight")
        return self

    def effective_phases(self) -> list[PhaseSpec]:
        if self.phases:
            return list(self.phases)
        return [
            PhaseSpec.model_construct(
                name="main",
                budget_tokens=self.budget_tokens,
                budget_fraction=self.budget_fraction,
                weights=None,
                temperature=self.temperature,
            )
        ]

    def phase_weights(self, phase: PhaseSpec) -> dict[str, float | None]:
        """Group name -> weight (None: to be set by temperature sampling) for the groups in `phase`."""
        if phase.weights is not None:
            return dict(phase.weights)
        return {g.name: g.weight for g in self.groups if g.weight is None or g.weight > 0}

    def group(self, name: str) -> GroupSpec:
        return next(g for g in self.groups if g.name == name)

    def fingerprint(self) -> dict[str, Any]:
        """The part of the spec that determines the data (where and how it runs is left out, and
        `allow_empty`, which decides whether a build may go ahead, never what it draws)."""
        data = self.model_dump(
            mode="json", exclude={"ray": True, "storage": True, "groups": {"__all__": {"allow_empty"}}}
        )
        for group, dumped in zip(self.groups, data["groups"]):
            dumped["sampling"] = group.sampling.fingerprint()
        data["licenses"] = dict(self.licenses)  # hashed as the mapping it always was (the form shows a list)
        return data

    def spec_hash(self) -> str:
        return sha256_json(self.fingerprint())

    @property
    def storage_options(self) -> dict[str, Any]:
        return dict(self.storage.options)


# ----------------------------------------------------------------------------- paths


def is_relative_path(uri: str) -> bool:
    """A local path that means nothing without a working directory (no scheme, not absolute, no ~)."""
    return "://" not in uri and not os.path.isabs(uri) and not uri.startswith("~")


def absolute_path(uri: str, base: str | os.PathLike) -> str:
    """`uri` with a relative local path resolved against the folder `base` (URIs and absolute
    paths as they are; `~` expanded)."""
    if "://" in uri:
        return uri
    uri = os.path.expanduser(uri)
    return uri if os.path.isabs(uri) else os.path.normpath(os.path.join(os.fspath(base), uri))


def path_fields(spec: MixSpec) -> dict[str, str]:
    """Every path the spec holds, by field: `pool[i]`, `store`, and a Hugging Face tokenizer's file."""
    paths = {f"pool[{i}]": p for i, p in enumerate(spec.pool)} | {"store": spec.store}
    if spec.tokenizer.kind == "huggingface":
        paths["tokenizer.name"] = spec.tokenizer.name
    return paths


def relative_paths(spec: MixSpec) -> dict[str, str]:
    """The spec's relative local paths, by field: a spec given as a mapping (the Prefect UI, an API
    call) has no folder to resolve them against, and a worker's working directory is no answer."""
    return {f: p for f, p in path_fields(spec).items() if is_relative_path(p)}


def with_paths_under(spec: MixSpec, base: str | os.PathLike) -> MixSpec:
    """`spec` with its relative local paths resolved against the folder `base`."""
    tokenizer = spec.tokenizer
    if tokenizer.kind == "huggingface":
        tokenizer = tokenizer.model_copy(update={"name": absolute_path(tokenizer.name, base)})
    return spec.model_copy(
        update={
            "pool": [absolute_path(p, base) for p in spec.pool],
            "store": absolute_path(spec.store, base),
            "tokenizer": tokenizer,
        }
    )


def load_spec(path: str | os.PathLike) -> MixSpec:
    """Load and validate a mixture spec YAML (ConfigError naming the field's path on bad input).
    Relative paths in it (pool, store, a tokenizer file) are relative to the spec file's folder,
    never to the working directory, so a spec means the same data wherever it is run from."""
    return with_paths_under(load_yaml(path, MixSpec), os.path.dirname(os.path.abspath(path)))
