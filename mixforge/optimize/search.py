"""The search spec (`mixforge optimize --spec SEARCH.yaml`): what a mixture optimisation searches and how.

It names a mixture spec (a path, relative to the search spec's folder, or inline) whose groups are
the search's dimensions, a prior (default: the groups' natural token shares, which the caller
counts), bounds per group, the token budget the proposal is for and the epoch cap at it, the
swarm, the targets (text shards the proxies are scored on, each with a weight), the proxy model,
the fit, the proposal, optional CLIMB rounds and an optional verification proxy.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from mixforge import storage
from mixforge.config import load_model, load_yaml
from mixforge.config_errors import ConfigError
from mixforge.mixtures.spec import MixSpec, absolute_path, load_spec, with_paths_under
from mixforge.names import name_field
from mixforge.optimize.fit import FitOptions
from mixforge.optimize.propose import ProposeOptions
from mixforge.optimize.proxy import ProxyConfig
from mixforge.optimize.swarm import Space, epoch_caps, make_space
from mixforge.strict import StrictModel

SearchName = name_field("optimisation name")
# A path or the spec inline; tagged so that an inline spec's errors read `mixture.spec.<field>`.
MixtureRef = Annotated[
    Annotated[MixSpec, Tag("spec")] | Annotated[str, Tag("path")],
    Discriminator(lambda v: "path" if isinstance(v, str) else "spec"),
]
TargetName = name_field("target name")


class GroupBounds(StrictModel):
    min: float = Field(0.0, ge=0, le=1, description="Smallest share of the group in any mixture searched.")
    max: float = Field(1.0, ge=0, le=1, description="Largest share (the epoch cap may lower it further).")

    @model_validator(mode="after")
    def _ordered(self) -> GroupBounds:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self


class TargetSpec(StrictModel):
    name: TargetName = Field(..., description="Target name (lowercase letters, digits, single dashes).")
    uri: str = Field(
        ...,
        description="Text shards the proxies are scored on (Parquet with a `text` column): a file, glob or "
        "prefix. In a spec file, a relative path is relative to its folder.",
    )
    weight: float = Field(1.0, gt=0, description="Weight of this target's loss in the objective.")


class SwarmOptions(StrictModel):
    size: int = Field(16, ge=2, description="Proxies in the first round (RegMix: hundreds; 16 is a useful start).")
    concentration: float | tuple[float, float] = Field(
        (0.1, 5.0),
        description="Dirichlet scale on the prior: a number, or a [low, high] range drawn log-uniformly per mixture "
        "(RegMix), so the swarm spans near-one-hot mixtures and ones close to the prior.",
    )
    round_concentration: float = Field(
        50.0, gt=0, description="Dirichlet scale around the current proposal in later rounds (higher: closer)."
    )

    @field_validator("concentration")
    @classmethod
    def _positive(cls, v: Any) -> Any:
        lo, hi = (v, v) if isinstance(v, int | float) else v
        if not 0 < lo <= hi:
            raise ValueError(f"must be positive (a range: 0 < low <= high), got {v}")
        return v


class QualityTemperature(StrictModel):
    """QuaDMix: the search also covers the temperature T of quality-weighted sampling (weights exp(score/T)
    or score^(1/T)) of some groups, drawn log-uniformly within [min, max] per proxy."""

    min: float = Field(0.25, gt=0, description="Lowest temperature searched (low T: high scores favoured).")
    max: float = Field(4.0, gt=0, description="Highest temperature searched (high T: close to uniform).")
    groups: list[str] | None = Field(
        None,
        description="Searched groups whose temperature is searched too; each must sample by `quality` "
        "(default: every searched group whose sampling.method is quality).",
    )

    @model_validator(mode="after")
    def _ordered(self) -> QualityTemperature:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        if self.groups is not None and len(set(self.groups)) != len(self.groups):
            raise ValueError(f"groups: names must be distinct, got {self.groups}")
        return self


class SearchSpec(StrictModel):
    """A mixture optimisation: search space, targets, swarm, proxy, fit and proposal."""

    name: SearchName = Field(
        ..., description="Optimisation name; runs go to {store}/optimize/{name}/{run}/ (the mixture's store)."
    )
    mixture: MixtureRef = Field(
        ...,
        description="The mixture spec whose group weights are searched: a path (relative to this file's folder) "
        "or the spec inline. Its pool, groups, tokenizer and store are used; its weights are not.",
    )
    groups: list[str] | None = Field(
        None, min_length=2, description="The groups searched, by name (default: every group of the mixture spec)."
    )
    prior: dict[str, float] | None = Field(
        None, description="Group -> prior share the swarm is sampled around (default: natural token shares)."
    )
    bounds: dict[str, GroupBounds] = Field(
        default_factory=dict, description="Group -> {min, max} share; groups left out: 0 to 1."
    )
    budget_tokens: int | None = Field(
        None,
        ge=1,
        description="The training budget the proposal is for (default: the mixture spec's budget_tokens); with "
        "epoch_cap it caps each group's share.",
    )
    epoch_cap: float = Field(
        4.0,
        gt=0,
        description="No mixture takes a group more than this many times over at the budget ('To Repeat or Not To "
        "Repeat': up to ~4 epochs cost little).",
    )
    seed: int = Field(0, ge=0, description="Seed of the swarm and of every random choice after it.")
    swarm: SwarmOptions = SwarmOptions()
    targets: list[TargetSpec] = Field(..., min_length=1, description="Evaluation sets, each with a weight.")
    proxy: ProxyConfig = ProxyConfig()
    fit: FitOptions = FitOptions()
    propose: ProposeOptions = ProposeOptions()
    rounds: list[int] = Field(
        default_factory=list,
        description="CLIMB: swarm sizes of later rounds, each sampled around the previous proposal (e.g. [32, 16]).",
    )
    verify: bool = Field(
        False, description="Train one more proxy on the proposal and report it beside the best proxy, prior, uniform."
    )
    quality_temperature: QualityTemperature | None = Field(
        None,
        description="QuaDMix: also search the sampling temperature of quality-sampled groups, within [min, max] "
        "(null: the mixture spec's temperatures are kept).",
    )

    @field_validator("rounds")
    @classmethod
    def _round_sizes(cls, v: list[int]) -> list[int]:
        if any(n < 1 for n in v):
            raise ValueError(f"every round needs at least one proxy, got {v}")
        return v

    @field_validator("prior")
    @classmethod
    def _prior_shares(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is not None and (any(x < 0 for x in v.values()) or sum(v.values()) <= 0):
            raise ValueError(f"shares must be >= 0 with a positive sum, got {v}")
        return v

    @field_validator("targets")
    @classmethod
    def _distinct_targets(cls, v: list[TargetSpec]) -> list[TargetSpec]:
        names = [t.name for t in v]
        if len(set(names)) != len(names):
            raise ValueError(f"names must be distinct, got {names}")
        return v

    @field_validator("groups")
    @classmethod
    def _distinct_groups(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError(f"names must be distinct, got {v}")
        return v

    def check_against_mixture(self) -> None:
        """The checks that need the mixture spec's groups (ConfigError naming the field); run by
        `resolve_mixture`, which every way of loading a search spec goes through."""
        mixture = self.mixture_spec()
        known = [g.name for g in mixture.groups]
        unknown = sorted(set(self.groups or ()) - set(known))
        if unknown:
            raise ConfigError(f"groups: {unknown} are not groups of mixture {mixture.name!r} ({known})")
        searched = self.group_names()
        if len(searched) < 2:
            raise ConfigError(f"groups: a search needs at least 2 groups, mixture {mixture.name!r} has {known}")
        for field_name, keys in (("prior", self.prior or {}), ("bounds", self.bounds)):
            outside = sorted(set(keys) - set(searched))
            if outside:
                raise ConfigError(f"{field_name}: {outside} are not among the searched groups {searched}")
        if self.prior is not None and set(self.prior) != set(searched):
            missing = sorted(set(searched) - set(self.prior))
            raise ConfigError(f"prior: give a share for every searched group; missing {missing}")
        if self.budget_tokens is None and mixture.budget_tokens is None:
            raise ConfigError(
                f"budget_tokens: give one (mixture {mixture.name!r} has no top-level budget_tokens to default to)"
            )
        lower = sum(b.min for b in self.bounds.values())
        if lower > 1:
            raise ConfigError(f"bounds: the min shares add up to {lower:.4g} > 1")
        qt = self.quality_temperature
        if qt is not None:
            for g in qt.groups or ():
                if g not in searched:
                    raise ConfigError(f"quality_temperature.groups: {g!r} is not among the searched groups {searched}")
                method = mixture.group(g).sampling.method
                if method != "quality":
                    raise ConfigError(
                        f"quality_temperature.groups: group {g!r} samples by {method!r}, not by quality "
                        "(only a quality-sampled group has a temperature to search)"
                    )
            if not self.temperature_groups():
                raise ConfigError(
                    f"quality_temperature: no searched group of mixture {mixture.name!r} samples by quality "
                    f"(searched: {searched})"
                )

    # ------------------------------------------------------------------ derived

    def mixture_spec(self) -> MixSpec:
        if not isinstance(self.mixture, MixSpec):
            raise ConfigError(f"mixture: the spec {self.mixture!r} is not loaded yet (resolve_mixture)")
        return self.mixture

    def group_names(self) -> list[str]:
        """The searched groups, in the mixture spec's order."""
        groups = [g.name for g in self.mixture_spec().groups]
        return [g for g in groups if self.groups is None or g in self.groups]

    def temperature_groups(self) -> list[str]:
        """The groups whose quality-sampling temperature is searched, in the mixture spec's order ([]: none)."""
        qt = self.quality_temperature
        if qt is None:
            return []
        mixture = self.mixture_spec()
        return [
            g
            for g in self.group_names()
            if (g in qt.groups if qt.groups is not None else mixture.group(g).sampling.method == "quality")
        ]

    def dump(self) -> dict[str, Any]:
        """The spec as JSON, without `quality_temperature` when it is off: a run made before the option
        existed keeps its claim (search.json) and its run id, so it still resumes."""
        data = self.model_dump(mode="json")
        if data.get("quality_temperature") is None:
            data.pop("quality_temperature", None)
        return data

    def budget(self) -> int:
        return int(self.budget_tokens or self.mixture_spec().budget_tokens)

    def prior_shares(self, natural_tokens: Mapping[str, float] | None = None) -> dict[str, float]:
        """The prior over the searched groups: the spec's, else the natural token shares given."""
        groups = self.group_names()
        source = self.prior if self.prior is not None else natural_tokens
        if source is None:
            raise ValueError("the spec has no prior: pass each group's natural tokens")
        missing = sorted(set(groups) - set(source))
        if missing:
            raise ValueError(f"prior: no share or token count for groups {missing}")
        total = sum(float(source[g]) for g in groups)
        if total <= 0:
            raise ConfigError(f"prior: the searched groups {groups} have no tokens")
        return {g: float(source[g]) / total for g in groups}

    def space(self, available_tokens: Mapping[str, float]) -> Space:
        """The feasible weights given each group's available tokens: the prior (natural shares
        unless the spec has one), the bounds and the epoch cap at the budget."""
        groups = self.group_names()
        missing = sorted(set(groups) - set(available_tokens))
        if missing:
            raise ValueError(f"no available token count for groups {missing}")
        caps = epoch_caps({g: available_tokens[g] for g in groups}, self.budget(), self.epoch_cap)
        bounds = {g: (b.min, b.max) for g, b in self.bounds.items()}
        return make_space(self.prior_shares(available_tokens), bounds, caps)

    def target_weights(self) -> dict[str, float]:
        return {t.name: t.weight for t in self.targets}


def check_targets(
    search: SearchSpec, storage_options: Mapping[str, Any] | None = None, origin: str = "search spec"
) -> None:
    """The pre-flight of the targets (before Prefect or Ray start, and again at the start of a run): each
    target finds Parquet shards and its first shard has a `text` column; ConfigError naming the target and
    its URI otherwise (without it, a missing target failed only after the pool was counted). Reads footers only."""
    from mixforge.shards import parquet_file

    opts = dict(search.mixture_spec().storage_options if storage_options is None else storage_options)
    for i, t in enumerate(search.targets):
        where = f"{origin}: targets[{i}] ({t.name}): {t.uri!r}"
        try:
            shards = storage.discover_shards(t.uri, opts)
        except FileNotFoundError:
            raise ConfigError(f"{where}: no such file or folder") from None
        parquet = [s for s in shards if s.uri.lower().endswith(".parquet")]
        if not parquet:
            raise ConfigError(f"{where}: no Parquet shards there (a target is Parquet with a `text` column)")
        with parquet_file(parquet[0].uri, opts) as pf:
            columns = pf.schema_arrow.names
        if "text" not in columns:
            raise ConfigError(f"{where}: {parquet[0].uri} has no `text` column (columns: {columns})")


def resolve_mixture(spec: SearchSpec, base: str | os.PathLike, origin: str = "search spec") -> SearchSpec:
    """`spec` with its mixture spec loaded (a path is relative to the folder `base`), the relative
    paths in it and in the targets resolved against `base`, and validated again now that its groups
    are known (ConfigError naming the field, prefixed by `origin`)."""
    data = spec.model_dump(mode="python", exclude={"mixture"})
    data["targets"] = [{**t, "uri": absolute_path(t["uri"], base)} for t in data["targets"]]
    if isinstance(spec.mixture, MixSpec):
        mixture = with_paths_under(spec.mixture, base)
    else:
        try:
            mixture = load_spec(absolute_path(spec.mixture, base))
        except ConfigError as e:
            raise ConfigError(f"{origin}: mixture: {e}") from None
    resolved = load_model(SearchSpec, {**data, "mixture": mixture}, origin)
    try:
        resolved.check_against_mixture()
    except ConfigError as e:
        raise ConfigError(f"{origin}: {e}") from None
    return resolved


def load_search_spec(path: str | os.PathLike) -> SearchSpec:
    """Load and validate a search spec YAML; its paths (the mixture spec, targets, an inline mixture's
    pool and store) are relative to its folder, never to the working directory."""
    return resolve_mixture(load_yaml(path, SearchSpec), os.path.dirname(os.path.abspath(path)), str(path))


def resolve_mapping(spec: SearchSpec, origin: str = "search") -> SearchSpec:
    """A search spec given as a mapping (Prefect UI, deployment, API): its paths must be absolute or URIs
    (only a spec file resolves relative paths, against its own folder); then resolved as a file's is."""
    from mixforge.mixtures.spec import is_relative_path, relative_paths

    relative = (
        [f"mixture: {spec.mixture!r}"] if isinstance(spec.mixture, str) and is_relative_path(spec.mixture) else []
    )
    if isinstance(spec.mixture, MixSpec):
        relative += [f"mixture.{field}: {value!r}" for field, value in relative_paths(spec.mixture).items()]
    relative += [f"targets[{i}].uri: {t.uri!r}" for i, t in enumerate(spec.targets) if is_relative_path(t.uri)]
    if relative:
        raise ConfigError(
            f"{origin}: a search spec given as a mapping needs absolute paths or URIs; relative: {'; '.join(relative)}"
        )
    return resolve_mixture(spec, os.getcwd(), origin)
