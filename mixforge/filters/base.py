"""The uniform rule-set interface, and the registry that makes a rule set one class.

A rule set scores a batch of documents: for every configured sub-rule it returns a boolean
"fails" array (True = the document fails this sub-rule), plus numeric feature columns, and,
for rule sets that edit documents (C4 line removal), the edited text and per-document counts of
what was removed. It never drops anything itself: the Filter stage decides, per rule set mode,
whether the first failing sub-rule drops the document or is only written as columns.

Adding a rule set is one config class and one rule-set class, in any module that is imported
before the config is read (a plugin module, a test module); defining them registers the rule set:
`FilterConfig.rules` (YAML, the flows' Prefect form) then accepts `name: max_digit_fraction`, and
the Filter stage runs it::

    class MaxDigitFractionConfig(RuleSetConfigBase):
        name: Literal["max_digit_fraction"] = Field("max_digit_fraction", description="Rule set: ...")
        max_fraction: float | None = Field(0.2, description="Fail if digits / characters is above (`too_many`).")

    class MaxDigitFraction(RuleSet):
        config_class = MaxDigitFractionConfig

        def evaluate_batch(self, batch: TextBatch) -> Evaluation:
            ev = Evaluation(batch.n_docs)
            fraction = safe_div(batch.text.str.count_matches(r"\\d").to_numpy(), batch.char_len)
            ev.threshold(f"{self.name}.too_many", fraction, above=self.config.max_fraction)
            ev.add_feature(f"{self.name}.digit_fraction", fraction)
            return ev

Every rule set gets the same `TextBatch`: text, and per document `lang` (language ID's label or
the input's `lang` column; word segmentation depends on it) and `url` when there are such columns,
and `default_language` (`FilterConfig.default_language`) for documents without a `lang`.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, TypeAdapter
from pydantic_core import core_schema

from mixforge.filters.text import TextBatch
from mixforge.strict import StrictModel

Mode = Literal["drop", "annotate"]
MODE_FIELD = Field(
    "drop",
    description="`drop`: the first failing sub-rule drops the document "
    "(drop_reason = its name); `annotate`: only write the columns.",
)


_COMPARE = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal}


@dataclass(frozen=True)
class Measure:
    """What a sub-rule compares, for the drop details: a document fails when `value` is `below_op`
    `below` or `above_op` `above` (limits: numbers, or arrays with one per document; None: that side is
    off). A document failing the sub-rule otherwise (a yes/no part, e.g. a keep-list) is recorded under
    the rule `otherwise` (None: the sub-rule's name) with its value and no threshold."""

    value: np.ndarray
    below: Any = None
    above: Any = None
    below_op: str = "<"
    above_op: str = ">"
    otherwise: str | None = None


@dataclass
class Failures:
    """Per document, the first failing sub-rule (in check order) and what it measured: `reason` its
    name (None: passed), `rule` the finer name (= reason unless a `Measure.otherwise`), `value`,
    `threshold` (NaN: none) and `op` (None: no comparison)."""

    reason: np.ndarray
    rule: np.ndarray
    value: np.ndarray
    op: np.ndarray
    threshold: np.ndarray


@dataclass
class Evaluation:
    """What one rule set found about each document of a batch."""

    n_docs: int
    fails: dict[str, np.ndarray] = field(
        default_factory=dict
    )  # "<ruleset>.<sub_rule>" -> bool[n_docs], in check order
    features: dict[str, np.ndarray] = field(default_factory=dict)  # "<ruleset>.<feature>" -> values[n_docs]
    # What a sub-rule compared (drop details); a sub-rule without one is a yes/no rule.
    measures: dict[str, Measure] = field(default_factory=dict)
    text: pa.Array | None = None  # edited text (same length) for the Filter to apply in drop mode, or None: no edit
    lines_removed: np.ndarray | None = None  # int[n_docs], with `text`
    chars_removed: np.ndarray | None = None  # int[n_docs], with `text`

    def add_rule(self, name: str, fails, measure: Measure | None = None) -> None:
        arr = np.asarray(fails, dtype=bool)
        assert arr.shape == (self.n_docs,), (name, arr.shape, self.n_docs)
        self.fails[name] = arr
        if measure is not None:
            self.measures[name] = measure

    def threshold(self, name: str, values, *, below=None, above=None, where=None) -> np.ndarray:
        """Add sub-rule `name`: a document fails when its value is strictly below `below` or
        strictly above `above`. A limit of None disables that side, so a null threshold in the
        config disables the rule (NaN values never fail). `where` (bool[n_docs]): only these
        documents can fail. Returns the fails array."""
        values = np.asarray(values)
        fails = np.zeros(self.n_docs, dtype=bool)
        if below is not None:
            fails |= values < below
        if above is not None:
            fails |= values > above
        if where is not None:
            fails &= np.asarray(where, dtype=bool)
        self.add_rule(name, fails, Measure(values, below=below, above=above))
        return fails

    def add_feature(self, name: str, values) -> None:
        arr = np.asarray(values)
        assert arr.shape == (self.n_docs,), (name, arr.shape, self.n_docs)
        self.features[name] = arr

    def any_fail(self) -> np.ndarray:
        out = np.zeros(self.n_docs, dtype=bool)
        for f in self.fails.values():
            out |= f
        return out

    def first_failure(self) -> np.ndarray:
        """Per document, the name of the first failing sub-rule (in check order), or None."""
        reason = np.full(self.n_docs, None, dtype=object)
        for name, f in self.fails.items():
            reason[f & (reason == None)] = name  # noqa: E711 (elementwise)
        return reason

    def failures(self) -> Failures:
        """`first_failure` with what that sub-rule measured (vectorised: one pass per sub-rule)."""
        n = self.n_docs
        out = Failures(
            reason=np.full(n, None, dtype=object),
            rule=np.full(n, None, dtype=object),
            value=np.full(n, np.nan),
            op=np.full(n, None, dtype=object),
            threshold=np.full(n, np.nan),
        )
        open_ = np.ones(n, dtype=bool)
        for name, f in self.fails.items():
            first = f & open_
            if not first.any():
                continue
            open_ &= ~first
            out.reason[first] = name
            out.rule[first] = name
            measure = self.measures.get(name)
            if measure is None:
                continue
            idx = np.flatnonzero(first)
            value = np.asarray(measure.value, dtype=np.float64)[idx]
            out.value[idx] = value
            explained = np.zeros(len(idx), dtype=bool)
            for limit, op in ((measure.below, measure.below_op), (measure.above, measure.above_op)):
                if limit is None:
                    continue
                limit = np.broadcast_to(np.asarray(limit, dtype=np.float64), (n,))[idx]
                hit = ~explained & _COMPARE[op](value, limit)
                out.threshold[idx[hit]] = limit[hit]
                out.op[idx[hit]] = op
                explained |= hit
            if measure.otherwise is not None:
                out.rule[idx[~explained]] = measure.otherwise
        return out


def zero_is_off(limit):
    """A limit for `Evaluation.threshold` where 0 turns the rule off, as null does: datatrove's
    Gopher filters test their thresholds for truthiness, and ours keep those published semantics."""
    return limit if limit else None


class RuleSetConfigBase(StrictModel):
    """Base of a rule set's config: one entry of `FilterConfig.rules`. A subclass declares
    `name: Literal["<rule set>"]` (the discriminator written in YAML) and its thresholds."""

    name: str
    mode: Mode = MODE_FIELD


_REGISTRY: dict[str, type[RuleSet]] = {}
# Rule sets by name, in registration (definition) order: the order of the choices in the config
# schema. Filled by defining a RuleSet subclass with a `config_class`; read-only here.
RULE_SETS: MappingProxyType[str, type[RuleSet]] = MappingProxyType(_REGISTRY)


class RuleSet:
    """Base class: a concrete rule set sets `config_class` (its name is that config's `name`) and
    implements `evaluate_batch`; defining it registers it (`RULE_SETS`)."""

    name: ClassVar[str]
    config_class: ClassVar[type[RuleSetConfigBase]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "config_class" in cls.__dict__:
            _register(cls)

    def __init__(self, config: RuleSetConfigBase | None = None) -> None:
        self.config = config if config is not None else self.config_class()

    def setup(self) -> None:
        """Load heavy state (models, lists) once per worker."""

    def evaluate_batch(self, batch: TextBatch) -> Evaluation:
        raise NotImplementedError

    def evaluate(self, text, lang=None, url=None, default_language: str = "en") -> Evaluation:
        """Convenience: evaluate a string column (pa.Array, pl.Series or list of str)."""
        return self.evaluate_batch(TextBatch(text, lang=lang, url=url, default_language=default_language))


def _register(cls: type[RuleSet]) -> None:
    config = cls.config_class
    where = f"{cls.__module__}.{cls.__qualname__}"
    if not (isinstance(config, type) and issubclass(config, RuleSetConfigBase)):
        raise TypeError(f"rule set {where}: config_class must be a subclass of RuleSetConfigBase, got {config!r}")
    name_field = config.model_fields["name"]
    name = name_field.default
    if (
        not isinstance(name, str)
        or typing.get_origin(name_field.annotation) is not Literal
        or typing.get_args(name_field.annotation) != (name,)
    ):
        raise TypeError(
            f'rule set {where}: {config.__name__} must declare name: Literal["<name>"] '
            '= "<name>" (the key that selects it in FilterConfig.rules)'
        )
    if cls.__dict__.get("name", name) != name:
        raise TypeError(f"rule set {where}: name {cls.__dict__['name']!r} differs from its config's name {name!r}")
    taken = _REGISTRY.get(name)
    # The same class defined again (a module reloaded) replaces its earlier definition.
    if taken is not None and (taken.__module__, taken.__qualname__) != (cls.__module__, cls.__qualname__):
        raise TypeError(f"rule set {where}: the name {name!r} is taken by {taken.__module__}.{taken.__qualname__}")
    cls.name = name
    _REGISTRY[name] = cls


def build_rule_set(config: RuleSetConfigBase) -> RuleSet:
    """The rule set for one entry of `FilterConfig.rules`."""
    cls = _REGISTRY.get(config.name)
    if cls is None or not isinstance(config, cls.config_class):
        raise TypeError(
            f"no rule set registered for {type(config).__name__} "
            f"(name {config.name!r}); registered: {sorted(_REGISTRY)}"
        )
    return cls(config)


_union_cache: tuple[tuple[type, ...], TypeAdapter] | None = None


def _config_union() -> TypeAdapter:
    """The discriminated union (on `name`) of the registered rule sets' config classes, rebuilt
    when a rule set is registered."""
    global _union_cache
    configs = tuple(cls.config_class for cls in _REGISTRY.values())
    if _union_cache is None or _union_cache[0] != configs:
        union = typing.Union[configs]  # noqa: UP007 - a union of a runtime tuple of classes: `|` cannot spell it
        _union_cache = (configs, TypeAdapter(typing.Annotated[union, Field(discriminator="name")]))
    return _union_cache[1]


class RuleSetConfig:
    """Annotation for one entry of `FilterConfig.rules`: validates (and describes, in the JSON
    schema) as the discriminated union of the config classes of the rule sets registered at that
    time, so a rule set defined after `FilterConfig` (a plugin, a test) is accepted too, including
    inside configs that embed FilterConfig. Errors are the union's own (`rules.0.c4.bogus`,
    "Input tag 'nope' found using 'name' does not match any of the expected tags: ...")."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        # Validated entries are config models: serialised by their own class, as in the union.
        return core_schema.no_info_plain_validator_function(lambda value: _config_union().validate_python(value))

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: core_schema.CoreSchema, handler: Any) -> Any:
        return handler(_config_union().core_schema)


def safe_div(num, den) -> np.ndarray:
    """num / den with 0 where den == 0 (datatrove would raise ZeroDivisionError there)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape)
    np.divide(num, den, out=out, where=den != 0)
    return out
