"""Row predicates users write: a mixture group's `where` and the rephrase stage's `select`.

A predicate is a mapping of column -> condition, all of which must hold (empty: every row):

- a value: equal to it (`source: web`); a list: equal to one of them (`lang: [en, fr]`);
- a range: `{min: 0.3}` (>=), `{max: 0.9}` (<), `{above: 0.3}` (>), `{at_most: 0.9}` (<=), one lower and one
  upper bound at most (`{min: 0.3, max: 0.9}`: 0.3 <= value < 0.9);
- `{not: value}` or `{not: [values]}`: set, and none of these;
- `{missing: true}`: the value is null; `{missing: false}`: it is set;
- the key `synthetic: true|false`: rephrased rows (`parent_id` set) or originals (a table without
  `parent_id` holds only originals).

A null never equals a value, is never in a list or a range, and never matches `not`: only `missing`
tests see it. Literal values are compared as the column's type: `"3"` equals 3 in an integer column,
2.5 never does, and `true` is the string "true" in a string column (`literal_values`, `as_kind`).

`compile_where` turns a predicate into one Polars expression; `columns` names what it reads;
`check_schema` says why it cannot apply to a table (an unknown column, a range over strings). The
mixture pre-flight checks the same rules against Parquet metadata (mixtures/preflight.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from pydantic import Field, model_serializer, model_validator

from mixforge.schema import PARENT_ID
from mixforge.strict import StrictModel

if TYPE_CHECKING:
    import polars as pl

SYNTHETIC = "synthetic"  # predicate key: true = rephrased rows (parent_id set), false = original rows

Scalar = bool | int | float | str


class Range(StrictModel):
    """A numeric range: `min` (>=) or `above` (>) below, `max` (<) or `at_most` (<=) above; either end may
    be left open."""

    min: float | None = Field(None, description="Inclusive lower bound.")
    max: float | None = Field(None, description="Exclusive upper bound.")
    above: float | None = Field(None, description="Exclusive lower bound (instead of min).")
    at_most: float | None = Field(None, description="Inclusive upper bound (instead of max).")

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.min is not None and self.above is not None:
            raise ValueError("give one lower bound: min (>=) or above (>)")
        if self.max is not None and self.at_most is not None:
            raise ValueError("give one upper bound: max (<) or at_most (<=)")
        low, high = self.lower, self.upper
        if low is None and high is None:
            raise ValueError("a range needs min, max, above or at_most")
        if low is not None and high is not None:
            closed = self.min is not None and self.at_most is not None  # min <= v <= at_most: one value is enough
            if low[1] > high[1] or (low[1] == high[1] and not closed):
                raise ValueError(f"{low[0]} ({low[1]}) must be below {high[0]} ({high[1]})")
        return self

    @property
    def lower(self) -> tuple[str, float] | None:
        """(name, value) of the lower bound, if any."""
        return next(((k, v) for k, v in (("min", self.min), ("above", self.above)) if v is not None), None)

    @property
    def upper(self) -> tuple[str, float] | None:
        """(name, value) of the upper bound, if any."""
        return next(((k, v) for k, v in (("max", self.max), ("at_most", self.at_most)) if v is not None), None)

    @model_serializer(mode="wrap")
    def _dump(self, handler) -> dict[str, Any]:
        # The bounds added later appear only when set: a {min, max} range dumps (and hashes) as it always did.
        data = handler(self)
        return {k: v for k, v in data.items() if k in ("min", "max") or v is not None}


class Not(StrictModel):
    """`{not: value}` or `{not: [values]}`: the value is set and is none of these."""

    not_: list[Scalar] | Scalar = Field(..., alias="not", description="A value, or a list of values, to leave out.")

    @property
    def values(self) -> list[Scalar]:
        return list(self.not_) if isinstance(self.not_, list) else [self.not_]

    @model_serializer(mode="plain")
    def _dump(self) -> dict[str, Any]:
        return {"not": self.not_}


class Missing(StrictModel):
    """`{missing: true}`: the value is null; `{missing: false}`: it is set."""

    missing: bool = Field(..., description="true: the value is null; false: it is set.")


Condition = Range | Not | Missing | list[Scalar] | Scalar
Where = dict[str, Condition]


def equal_values(cond: Condition) -> list[Scalar] | None:
    """The values an equality condition (a value, a list, or `not`) names; None for a range or a null test."""
    if isinstance(cond, (Range, Missing)):
        return None
    if isinstance(cond, Not):
        return cond.values
    return list(cond) if isinstance(cond, list) else [cond]


# ----------------------------------------------------------------------------- reading a predicate


def _fmt(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else repr(v)


def describe_condition(column: str, cond: Condition) -> str:
    """A condition as a user reads it: `source = 'web'`, `lang in ['en', 'fr']`, `0.5 <= quality < 0.9`."""
    if isinstance(cond, Range):
        low = "" if cond.lower is None else f"{cond.lower[1]:g} {'<=' if cond.min is not None else '<'} "
        high = "" if cond.upper is None else f" {'<' if cond.max is not None else '<='} {cond.upper[1]:g}"
        return f"{low}{column}{high}"
    if isinstance(cond, Not):
        return f"{column} not in {cond.not_!r}" if isinstance(cond.not_, list) else f"{column} != {_fmt(cond.not_)}"
    if isinstance(cond, Missing):
        return f"{column} is {'' if cond.missing else 'not '}null"
    if column == SYNTHETIC:
        return f"{column} = {_fmt(cond)}"
    if isinstance(cond, list):
        return f"{column} in {cond!r}"
    return f"{column} = {_fmt(cond)}"


def describe_where(where: Mapping[str, Condition]) -> str:
    return " and ".join(describe_condition(c, v) for c, v in where.items()) or "every document (where: {})"


def columns(where: Mapping[str, Condition]) -> set[str]:
    """The columns a predicate reads (`synthetic` reads `parent_id`)."""
    return {PARENT_ID if c == SYNTHETIC else c for c in where}


# ----------------------------------------------------------------------------- types of columns and literals


def kind_of(t: pa.DataType) -> str:
    """What predicates can do with an Arrow type: int, float, string, bool, null or other."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_null(t):
        return "null"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    return "other"


KIND_WORDS = {"int": "integers", "float": "numbers", "string": "strings", "bool": "true/false", "null": "only nulls"}


class TypeMismatch(Exception):
    """The predicate mixes types up (a number for a true/false column): a mistake in it."""


class NeverEqual(Exception):
    """No value of the column can equal the literal (2.5 in an integer column)."""


def as_kind(value: Any, kind: str) -> Any:
    """`value` as a value of a column of `kind` (as `literal_values` compares it)."""
    if kind == "string":
        return str(value).lower() if isinstance(value, bool) else str(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise TypeMismatch(f"{value!r} is not true or false")
        return value
    if kind in ("int", "float"):
        if isinstance(value, bool):
            raise TypeMismatch(f"{str(value).lower()} is a boolean")
        if isinstance(value, str):
            try:
                value = float(value) if kind == "float" or not value.strip().lstrip("+-").isdigit() else int(value)
            except ValueError:
                raise NeverEqual(f"value {value!r} is no number") from None
        if kind == "int" and isinstance(value, float):
            if not value.is_integer():
                raise NeverEqual(f"value {value!r} is not a whole number")
            value = int(value)
        return value
    return value  # other types: compared as Polars casts them


def type_problem(column: str, cond: Condition, kind: str) -> str | None:
    """Why `cond` is a mistake for a column of `kind` (None: it is not); a value that merely never
    occurs is no mistake."""
    held = KIND_WORDS.get(kind, kind)
    if column == SYNTHETIC:
        return None if isinstance(cond, bool) else f"takes true (rephrased rows) or false (originals), not {cond!r}"
    if isinstance(cond, Range):
        if kind not in ("int", "float", "null"):
            return f"a range {{min, max}} needs a numeric column, but {column!r} holds {held}"
        return None
    for value in equal_values(cond) or ():
        try:
            as_kind(value, kind)
        except TypeMismatch as e:
            return f"{e}, but {column!r} holds {held}"
        except NeverEqual:
            pass
    return None


def check_schema(where: Mapping[str, Condition], schema: pa.Schema, what: str = "where") -> list[str]:
    """Every reason `where` cannot apply to a table of `schema`, one line each naming `what.column`."""
    problems = []
    for column, cond in where.items():
        if column == SYNTHETIC:
            problem = type_problem(column, cond, "bool")
        elif column not in schema.names:
            problem = f"unknown column {column!r} (columns: {', '.join(schema.names)})"
        else:
            problem = type_problem(column, cond, kind_of(schema.field(column).type))
        if problem:
            problems.append(f"{what}.{column}: {problem}")
    return problems


def literal_values(dtype: pl.DataType, values: Sequence[Any]) -> list[Any]:
    """The predicate's literal values as `dtype`, leaving out those that can never equal a value of it:
    a plain cast would turn 2.5 into 2 on an integer column, or True into 1 (the pre-flight reports them)."""
    import polars as pl

    if dtype == pl.String or isinstance(dtype, (pl.Categorical, pl.Enum)):
        values = [str(v).lower() if isinstance(v, bool) else str(v) for v in values]
        if dtype == pl.String:
            return values
    elif dtype == pl.Boolean:
        return [v for v in values if isinstance(v, bool)]
    elif dtype.is_numeric():
        values = [v for v in values if not isinstance(v, bool)]
        if dtype.is_integer():
            values = [v for v in values if not (isinstance(v, float) and not v.is_integer())]
    if dtype == pl.Null:
        return []
    out = []
    for v in values:  # one at a time: a list of mixed types is no Series
        cast = pl.Series([v]).cast(dtype, strict=False)
        if cast.null_count() == 0:
            out.append(cast[0])
    return out


# ----------------------------------------------------------------------------- compiling


def compile_condition(column: str, cond: Condition, schema: Mapping[str, pl.DataType]) -> pl.Expr:
    """True for rows meeting `cond` (never null), over a frame of `schema` (a column it lacks is all null)."""
    import polars as pl

    if column == SYNTHETIC:
        has_parent = pl.col(PARENT_ID).is_not_null() if PARENT_ID in schema else pl.lit(False)
        return has_parent if bool(cond) else ~has_parent
    if column not in schema:
        return pl.lit(isinstance(cond, Missing) and cond.missing)
    col = pl.col(column)
    if isinstance(cond, Missing):
        return col.is_null() if cond.missing else col.is_not_null()
    if isinstance(cond, Range):
        expr = pl.lit(True)
        if cond.min is not None:
            expr = expr & (col >= cond.min)
        if cond.above is not None:
            expr = expr & (col > cond.above)
        if cond.max is not None:
            expr = expr & (col < cond.max)
        if cond.at_most is not None:
            expr = expr & (col <= cond.at_most)
        return expr.fill_null(False)
    dtype = schema[column]
    values = literal_values(dtype, equal_values(cond))
    member = col.is_in(pl.Series(values, dtype=dtype).implode()).fill_null(False) if values else pl.lit(False)
    if isinstance(cond, Not):
        return col.is_not_null() & ~member
    return member


def compile_where(where: Mapping[str, Condition], schema: Mapping[str, pl.DataType]) -> pl.Expr:
    """True for rows meeting every condition of `where` (never null), over a frame of `schema`."""
    import polars as pl

    expr = pl.lit(True)
    for column, cond in where.items():
        expr = expr & compile_condition(column, cond, schema)
    return expr


def matching_rows(where: Mapping[str, Condition], table: pa.Table) -> list[bool]:
    """Which rows of an Arrow table meet `where` (columns it lacks are all null)."""
    import polars as pl

    needed = sorted(c for c in columns(where) if c in table.column_names)
    frame = pl.from_arrow(table.select(needed)) if needed else pl.DataFrame({"__row": range(table.num_rows)})
    # with_columns, not select: a pure literal (an empty predicate) must broadcast to every row
    return frame.with_columns(compile_where(where, frame.schema).alias("__m")).get_column("__m").to_list()
