"""How a group's documents are chosen: one `Sampler` class per method, found by its `method` name.

Every sampler is "a seeded key per copy, smallest first": a group's partial pass takes its copies
in key order and plan.py finds the cut in tokens (shard_steps.py computes the keys per shard). So a
sampler says only
- which annotation columns it reads (`columns`; `numeric_columns` for the pre-flight check);
- how many copies of each document one pass holds (`copies_in_pass`: 1 unless it rehydrates);
- the key of each copy (`copy_keys`), from u ~ U[0, 1) drawn per copy and seeded by (seed, phase, group,
  shard), so every planning round and the final draw see the same keys;
- what its keys need to know about the whole pool: figures per shard (`shard_stats`), their fold
  (`merge_stats`, order-independent), the pool-wide facts made from them (`norm`, sent to every
  shard), and an interval [lo, hi) holding every key (`key_bracket`, where the threshold search starts).

A new method is one subclass with `method: Literal["name"] = "name"` and its own fields: it
registers itself when the class is defined, and specs name it as `sampling: {method: name, ...}`
(`Sampling`, the type of `GroupSpec.sampling`, validates against whatever is registered then).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, NamedTuple

import numpy as np
import polars as pl
from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError, PydanticUndefined, core_schema

from mixforge.config import StrictModel

# Efraimidis-Spirakis keys in log space: log(E) is clipped at LOG_E_MIN (E = 0 only when u == 0)
LOG_E_MIN = float(np.log(1e-300))
LOG_E_MAX = float(np.log(-np.log1p(-(1.0 - 2.0**-53)))) + 1e-9
ZERO_WEIGHT_OFFSET = 1000.0  # zero-weight documents (power weighting, score <= 0): after every weighted one

SAMPLERS: dict[str, type[Sampler]] = {}  # method name -> class, filled as the classes are defined


class NumericColumn(NamedTuple):
    """A column a sampler reads as numbers: the spec field naming it, and what a shard lacking it means."""

    field: str
    column: str
    when_missing: str


class Sampler(StrictModel):
    """One sampling method. Subclasses set `method: Literal["name"] = "name"` and override what differs
    from uniform sampling (one copy per document, key u)."""

    method: str

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        method = cls.model_fields["method"].default
        if method is PydanticUndefined:  # a shared base of several samplers, not a method itself
            return
        if not isinstance(method, str):
            raise TypeError(f"{cls.__qualname__}: declare the method name as `method: Literal['name'] = 'name'`")
        earlier = SAMPLERS.get(method)
        if earlier is not None and (earlier.__module__, earlier.__qualname__) != (cls.__module__, cls.__qualname__):
            raise TypeError(
                f"sampling method {method!r} is taken by {earlier.__module__}.{earlier.__qualname__}; "
                f"{cls.__module__}.{cls.__qualname__} needs another name"
            )
        SAMPLERS[method] = cls

    # ------------------------------------------------------------------ what it reads

    def columns(self) -> tuple[str, ...]:
        """Annotation columns the sampler reads (besides the groups' predicate columns)."""
        return tuple(c.column for c in self.numeric_columns())

    def numeric_columns(self) -> tuple[NumericColumn, ...]:
        """Columns that must hold numbers (the pre-flight check reads them from the pool's metadata)."""
        return ()

    # ------------------------------------------------------------------ per shard

    def copies_in_pass(self, frame: pl.DataFrame, rows: np.ndarray) -> np.ndarray:
        """Copies of each of `rows` in one pass over the group (int64)."""
        return np.ones(len(rows), np.int64)

    # (not `keys`: Prefect, walking a flow's parameters, reads any model with a `keys` method as a mapping)
    def copy_keys(
        self, u: np.ndarray, frame: pl.DataFrame, tokens: np.ndarray, rows: np.ndarray, norm: Any
    ) -> np.ndarray:
        """The key of each copy, smallest taken first: `u` its seeded uniform number, `rows` its row in
        the shard (into `frame` and `tokens`), `norm` what `norm()` made of the whole pool."""
        return u

    def shard_stats(self, frame: pl.DataFrame, tokens: np.ndarray, rows: np.ndarray) -> dict[str, Any]:
        """Figures of the group's `rows` in one shard that `norm` or `key_bracket` need (small: they
        go to the driver)."""
        return {}

    def merge_stats(self, a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
        """The fold of two groups' `shard_stats` figures (a and b hold them among the common ones)."""
        return {}

    def norm(self, stats: Mapping[str, Any]) -> Any:
        """Pool-wide facts every shard needs for the same keys, from the group's merged stats (None: none)."""
        return None

    def key_bracket(self, norm: Any, stats: Mapping[str, Any]) -> tuple[float, float]:
        """An interval [lo, hi) holding every key of the group."""
        return 0.0, 1.0

    # ------------------------------------------------------------------ identity

    def fingerprint(self) -> dict[str, Any]:
        """What goes into the spec's fingerprint (and so its hash and the manifest)."""
        return self.model_dump(mode="json")


class _Registered:
    """Validates `sampling:` against the samplers registered when it runs (so one defined after the
    spec models is usable), and gives the JSON schema (the Prefect form) a union of them all."""

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> core_schema.CoreSchema:
        def validate(value: Any) -> Sampler:
            if isinstance(value, Sampler):
                return value
            if not isinstance(value, Mapping):
                raise PydanticCustomError("sampling_type", "expected a mapping such as {method: uniform}")
            method = value.get("method", "uniform")
            cls = SAMPLERS.get(method) if isinstance(method, str) else None
            if cls is None:
                raise PydanticCustomError(
                    "sampling_method",
                    "unknown sampling method {method} (known: {known})",
                    {"method": repr(method), "known": ", ".join(sorted(SAMPLERS))},
                )
            return cls.model_validate(value)

        def serialize(value: Sampler, info: Any) -> Any:
            out = value.model_dump(
                mode=info.mode,
                by_alias=info.by_alias,
                exclude_unset=info.exclude_unset,
                exclude_defaults=info.exclude_defaults,
                exclude_none=info.exclude_none,
            )
            # `method` picks the sampler when the dump is read back: never dropped as a default
            return out if "method" in out else {"method": value.method, **out}

        return core_schema.no_info_plain_validator_function(
            validate, serialization=core_schema.plain_serializer_function_ser_schema(serialize, info_arg=True)
        )

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema, handler: Any) -> Any:
        choices = {method: cls.__pydantic_core_schema__ for method, cls in sorted(SAMPLERS.items())}
        union = handler(core_schema.tagged_union_schema(choices, discriminator="method"))
        # anyOf, not oneOf: `{}` (uniform, `method` left out) fits every all-defaults member, and a
        # deployment that enforces its parameter schema must accept it as validation does
        if "oneOf" in union:
            union["anyOf"] = union.pop("oneOf")
        return union


# The type of GroupSpec.sampling: a union discriminated by `method` over the registered samplers.
Sampling = Annotated[Sampler, _Registered()]


# ----------------------------------------------------------------------------- the built-in methods


class RepeatRule(StrictModel):
    min_dup: int = Field(..., ge=1, description="Applies to documents whose duplicate count is at least this.")
    times: int = Field(..., ge=0, description="Copies of such a document in one pass over the group.")


# Loosely after FineWeb2's rehydration: content seen a few times is a quality signal and is
# repeated more; very large clusters (boilerplate, spam) fall back to one copy.
DEFAULT_REPEATS = (
    RepeatRule(min_dup=1, times=1),
    RepeatRule(min_dup=2, times=2),
    RepeatRule(min_dup=5, times=3),
    RepeatRule(min_dup=100, times=2),
    RepeatRule(min_dup=1000, times=1),
)


class _FlatFingerprint(Sampler):
    """The three methods that came first were one flat model holding the fields of all three; their
    fingerprint keeps that shape, so the spec_hash (and the manifest's `spec`) of every spec written
    before samplers were classes stays what it was."""

    FLAT_DEFAULTS: ClassVar[dict[str, Any]] = {
        "column": None,
        "temperature": 1.0,
        "weighting": "exp",
        "dup_column": "dup_count",
        "repeats": [r.model_dump(mode="json") for r in DEFAULT_REPEATS],
    }

    def fingerprint(self) -> dict[str, Any]:
        return {**self.FLAT_DEFAULTS, **self.model_dump(mode="json")}


class UniformSampling(_FlatFingerprint):
    """Every copy equally likely: key u."""

    method: Literal["uniform"] = "uniform"


@dataclass(frozen=True)
class ScoreNorm:
    """Pool-wide facts about a quality-sampled group that every shard needs for the same keys."""

    q_fill: float | None  # a missing score counts as the group's lowest; None: no scores at all (uniform)
    zero_logw: float = 0.0  # log-weight given to zero-weight documents (power weighting)


def _opt(fn, a, b):
    return b if a is None else a if b is None else fn(a, b)


class QualitySampling(_FlatFingerprint):
    """Weighted by a score column, without replacement (Efraimidis-Spirakis): key log(E) - log(w) with
    E ~ Exp(1) from u and w the document's weight, i.e. the order of largest u^(1/w) first in log
    space, so no weight underflows."""

    method: Literal["quality"] = "quality"
    column: str = Field(..., description="The score column (e.g. quality_fineweb).")
    temperature: float = Field(
        1.0,
        gt=0,
        description="Weights exp(score/T) (or score^(1/T) with weighting=power); lower T favours high scores more.",
    )
    weighting: Literal["exp", "power"] = Field(
        "exp", description="exp(score/T), or score^(1/T) for non-negative scores."
    )

    def numeric_columns(self) -> tuple[NumericColumn, ...]:
        return (NumericColumn("column", self.column, "their documents count as the group's lowest score"),)

    def scores(self, frame: pl.DataFrame, rows: np.ndarray) -> np.ndarray:
        return frame.get_column(self.column).cast(pl.Float64).fill_null(np.nan).to_numpy()[rows]

    def log_weights(self, norm: ScoreNorm, frame: pl.DataFrame, rows: np.ndarray) -> np.ndarray:
        if norm.q_fill is None:
            return np.zeros(len(rows))
        q = self.scores(frame, rows)
        q = np.where(np.isnan(q), norm.q_fill, q)
        t = self.temperature
        if self.weighting == "power":
            positive = q > 0
            return np.where(positive, np.log(np.where(positive, q, 1.0)) / t, norm.zero_logw)
        return q / t

    def copy_keys(
        self, u: np.ndarray, frame: pl.DataFrame, tokens: np.ndarray, rows: np.ndarray, norm: ScoreNorm
    ) -> np.ndarray:
        with np.errstate(divide="ignore"):
            log_e = np.maximum(np.log(-np.log1p(-u)), LOG_E_MIN)
        return log_e - self.log_weights(norm, frame, rows)

    def shard_stats(self, frame: pl.DataFrame, tokens: np.ndarray, rows: np.ndarray) -> dict[str, Any]:
        q = self.scores(frame, rows)
        q = q[~np.isnan(q)]
        pos = q[q > 0]
        return {
            "q_min": float(q.min()) if len(q) else None,
            "q_max": float(q.max()) if len(q) else None,
            "q_min_pos": float(pos.min()) if len(pos) else None,
        }

    def merge_stats(self, a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "q_min": _opt(min, a["q_min"], b["q_min"]),
            "q_max": _opt(max, a["q_max"], b["q_max"]),
            "q_min_pos": _opt(min, a["q_min_pos"], b["q_min_pos"]),
        }

    def norm(self, stats: Mapping[str, Any]) -> ScoreNorm:
        if stats["q_min"] is None:
            return ScoreNorm(None)
        zero = math.log(stats["q_min_pos"]) / self.temperature - ZERO_WEIGHT_OFFSET if stats["q_min_pos"] else 0.0
        return ScoreNorm(stats["q_min"], zero)

    def key_bracket(self, norm: ScoreNorm, stats: Mapping[str, Any]) -> tuple[float, float]:
        t = self.temperature
        if norm.q_fill is None:
            lw_lo = lw_hi = 0.0
        elif self.weighting == "exp":
            lw_lo, lw_hi = stats["q_min"] / t, stats["q_max"] / t
        else:
            lw_of = lambda q: math.log(q) / t if q > 0 else norm.zero_logw  # noqa: E731
            lw_lo, lw_hi = lw_of(stats["q_min"]), lw_of(stats["q_max"])
        return LOG_E_MIN - lw_hi - 1.0, LOG_E_MAX - lw_lo + 1.0


class RehydrateSampling(_FlatFingerprint):
    """Each document repeated by its duplicate count (FineWeb2's rehydration); copies drawn uniformly."""

    method: Literal["rehydrate"] = "rehydrate"
    dup_column: str = Field("dup_count", description="The duplicate-count column (null counts as 1).")
    repeats: tuple[RepeatRule, ...] = Field(
        DEFAULT_REPEATS,
        description="Copies per pass by duplicate count (the rule with the largest min_dup <= count applies).",
    )

    @model_validator(mode="after")
    def _ascending(self) -> RehydrateSampling:
        mins = [r.min_dup for r in self.repeats]
        if not mins or mins != sorted(set(mins)) or mins[0] != 1:
            raise ValueError("repeats: min_dup values must be distinct, ascending and start at 1")
        return self

    def numeric_columns(self) -> tuple[NumericColumn, ...]:
        return (NumericColumn("dup_column", self.dup_column, "their documents count as seen once"),)

    def copies_in_pass(self, frame: pl.DataFrame, rows: np.ndarray) -> np.ndarray:
        dup = frame.get_column(self.dup_column).fill_null(1).cast(pl.Int64).to_numpy()[rows]
        mins = np.array([r.min_dup for r in self.repeats], np.int64)
        times = np.array([r.times for r in self.repeats], np.int64)
        return times[np.clip(np.searchsorted(mins, np.maximum(dup, 1), side="right") - 1, 0, None)]
