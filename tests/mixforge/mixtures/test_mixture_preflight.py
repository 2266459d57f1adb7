"""A mixture spec that can match nothing fails before any work: pre-flight on the pool's Parquet
metadata (no Prefect, no Ray), and planning's per-shard totals before anything is written. Real
Parquet pools on disk and on S3 (moto); the flow with a local Ray and Prefect's harness."""

from __future__ import annotations

import argparse
import io
import os
import time
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mixforge import storage
from mixforge.config import ConfigError
from mixforge.mixtures import build as B
from mixforge.mixtures.plan import EmptyGroupError, plan_mixture
from mixforge.mixtures.preflight import PreflightError, check_spec, inspect_spec
from mixforge.mixtures.samplers import NumericColumn, Sampler
from mixforge.mixtures.spec import MixSpec, load_spec
from mixforge.mixtures.versions import MixtureLayout, list_mixtures
from mixforge.names import InvalidName
from tests.mixforge.mixtures.test_mixtures import make_spec, pool_rows, write_pool


def write_shards(folder: str, shards: list[list[dict]], fs=None, **write_options) -> str:
    """Contract-like Parquet shards from row dicts (zstd, 250-row groups), as the curate stages write them."""
    for i, rows in enumerate(shards):
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows), buf, compression="zstd", row_group_size=250, **write_options)
        uri = storage.join(folder, f"part-{i:05d}.parquet")
        if fs is None:
            os.makedirs(folder, exist_ok=True)
            with open(uri, "wb") as f:
                f.write(buf.getvalue())
        else:
            fs.pipe_file(uri.removeprefix("s3://"), buf.getvalue())
    return folder


def domain_rows(n: int, start: int = 0) -> list[dict]:
    """pool_rows with three domains whose alphabetical range holds the typo 'reserch'."""
    rows = pool_rows(n, start)
    for r, k in zip(rows, range(start, start + n)):
        r["domain"] = ("news", "research", "software")[(k // 5) % 3]
    return rows


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> str:
    return write_pool(str(tmp_path_factory.mktemp("pool")))


@pytest.fixture(scope="module")
def domain_pool(tmp_path_factory) -> str:
    return write_shards(
        str(tmp_path_factory.mktemp("domains") / "runs" / "r1" / "dedup"),
        [domain_rows(400, s * 400) for s in range(3)],
    )


def one_group(where: dict, **group) -> list[dict]:
    return [{"name": "picked", "where": where, "weight": 1.0, **group}]


def errors_of(spec: MixSpec, origin: str | None = None) -> list[str]:
    with pytest.raises(PreflightError) as e:
        check_spec(spec, origin)
    assert isinstance(e.value, ConfigError)  # the CLI's exit 2
    assert str(e.value).splitlines() == e.value.report.errors  # one line each
    return e.value.report.errors


# ----------------------------------------------------------------------------- columns and types


def test_a_spec_that_fits_its_pool_passes_and_reads_only_metadata(pool, tmp_path):
    spec = make_spec(pool, str(tmp_path / "store"))
    report = inspect_spec(spec)
    assert report.errors == [] and report.warnings == []
    assert (report.shards, report.row_groups, report.rows) == (3, 9, 1800)
    assert check_spec(spec) == []


def test_unknown_column_is_one_line_naming_file_field_and_near_miss(pool, tmp_path):
    spec = make_spec(
        pool,
        str(tmp_path / "store"),
        groups=[
            {"name": "web", "where": {"source": "web"}, "weight": 0.5},
            {"name": "good", "where": {"qualty_score": {"min": 0.5}}, "weight": 0.5},
        ],
    )
    [line] = errors_of(spec, origin="mix.yaml")
    assert line.startswith(
        "mix.yaml: groups[1].where.qualty_score: unknown column 'qualty_score': no pool shard has it "
        "(did you mean 'quality_score'?); pool columns: "
    )
    assert "lang" in line and "\n" not in line


def test_range_on_a_string_column_and_other_type_mistakes(pool, tmp_path):
    store = str(tmp_path / "store")
    [line] = errors_of(make_spec(pool, store, groups=one_group({"domain": {"min": 0.5}})))
    assert line == "groups[0].where.domain: a range {min, max} needs a numeric column, but 'domain' holds strings"
    [line] = errors_of(make_spec(pool, store, groups=one_group({"dup_count": True})))
    assert line == "groups[0].where.dup_count: true is a boolean, but 'dup_count' holds integers"
    [line] = errors_of(make_spec(pool, store, groups=one_group({"synthetic": "no"})))  # bool("no") would be True
    assert line == "groups[0].where.synthetic: takes true (rephrased rows) or false (originals), not 'no'"
    [line] = errors_of(
        make_spec(pool, store, groups=one_group({"source": "web"}, sampling={"method": "quality", "column": "lang"}))
    )
    assert line == "groups[0].sampling.column: quality sampling needs a numeric column, but 'lang' holds strings"
    # a type mistake is no empty group: allow_empty does not hide it
    [line] = errors_of(make_spec(pool, store, groups=one_group({"domain": {"min": 0.5}}, allow_empty=True)))
    assert "needs a numeric column" in line


class ByScoreColumn(Sampler):
    """A sampler of this module only: pre-flight checks the columns it declares numeric, as the built-ins'."""

    method: Literal["by-score-column"] = "by-score-column"
    score: str

    def numeric_columns(self):
        return (NumericColumn("score", self.score, "their documents count as scoring lowest"),)


def test_a_registered_samplers_columns_are_checked_like_the_built_ins(pool, tmp_path):
    store = str(tmp_path / "store")
    [line] = errors_of(
        make_spec(pool, store, groups=one_group({}, sampling={"method": "by-score-column", "score": "lang"}))
    )
    assert (
        line == "groups[0].sampling.score: by-score-column sampling needs a numeric column, but 'lang' holds strings"
    )
    [line] = errors_of(
        make_spec(pool, store, groups=one_group({}, sampling={"method": "by-score-column", "score": "qualty_score"}))
    )
    assert line.startswith("groups[0].sampling.score: ") and "quality_score" in line  # the near miss


# ----------------------------------------------------------------------------- values that cannot occur


def test_values_outside_the_statistics_min_max(pool, tmp_path):
    store = str(tmp_path / "store")
    [line] = errors_of(make_spec(pool, store, groups=one_group({"source": "web", "quality_score": {"min": 1.5}})))
    assert line.startswith(
        "groups[0].where.quality_score: no value of the pool satisfies 1.5 <= quality_score "
        "(quality_score is between 0."
    )
    assert line.endswith("in the row-group statistics); group 'picked' matches nothing")
    [line] = errors_of(make_spec(pool, store, groups=one_group({"dup_count": [50, 60]})))  # the pool's counts are 1..6
    assert line.startswith(
        "groups[0].where.dup_count: value 50 never occurs in the pool; value 60 never occurs in the pool "
        "(dup_count is between 1 and 6)"
    )
    [line] = errors_of(
        make_spec(pool, store, groups=one_group({"dup_count": 2.5}))
    )  # planning would not truncate it to 2
    assert (
        line == "groups[0].where.dup_count: value 2.5 is not a whole number ('dup_count' holds integers); "
        "group 'picked' matches nothing"
    )
    # statistics only (no dictionaries in this pool): a string past the maximum is ruled out ...
    plain = write_shards(str(tmp_path / "plain"), [pool_rows(300, s * 300) for s in range(2)], use_dictionary=False)
    report = inspect_spec(make_spec(plain, store, groups=one_group({"lang": "zz"})))
    assert (
        report.errors
        == [
            "groups[0].where.lang: value 'zz' never occurs in the pool (lang is between 'de' and 'fr'); "
            "group 'picked' matches nothing"
        ]
        and report.dictionary_chunks == 0
    )
    # ... one inside [min, max] is left to planning (metadata cannot tell)
    assert inspect_spec(make_spec(plain, store, groups=one_group({"lang": "es"}))).errors == []


def test_a_value_missing_from_a_dictionary_encoded_column(domain_pool, tmp_path):
    store = str(tmp_path / "store")
    report = inspect_spec(
        make_spec(
            domain_pool,
            store,
            groups=[
                {"name": "news", "where": {"domain": "news"}, "weight": 0.5},
                {"name": "research", "where": {"domain": "reserch"}, "weight": 0.5},
            ],
        ),
        origin="configs/mix.yaml",
    )
    assert report.errors == [
        "configs/mix.yaml: groups[1].where.domain: value 'reserch' never occurs in the pool (domain has 3 "
        "values: 'news', 'research', 'software'; did you mean 'research'?); group 'research' matches nothing"
    ]
    assert (
        report.dictionary_chunks > 0
    )  # 'reserch' lies between 'news' and 'software': only the dictionaries rule it out
    # one misspelt value of several: the group still matches the others, so a warning
    report = inspect_spec(make_spec(domain_pool, store, groups=one_group({"domain": ["news", "sofware"]})))
    assert report.errors == [] and report.warnings == [
        "groups[0].where.domain: value 'sofware' never occurs in the pool (domain has 3 values: 'news', 'research', "
        "'software'; did you mean 'software'?); the group matches only 'news'"
    ]


def test_schema_drift_names_the_shards(tmp_path):
    folder = str(tmp_path / "drift")
    shards = [pool_rows(300, s * 300) for s in range(4)]
    for rows in shards[2:]:  # two shards written before `lang` existed
        for r in rows:
            del r["lang"]
    for r in shards[3]:  # and one where quality_score came out as text
        r["quality_score"] = f"{r['quality_score']:.3f}"
    write_shards(folder, shards)
    store = str(tmp_path / "store")

    report = inspect_spec(make_spec(folder, store, groups=one_group({"lang": "en"})))
    assert report.errors == [] and report.warnings == [
        "groups[0].where.lang: column 'lang' is missing from 2 of 4 pool shards "
        "(part-00002.parquet, part-00003.parquet): "
        "their documents never match group 'picked'"
    ]
    [line] = errors_of(make_spec(folder, store, groups=one_group({"quality_score": {"min": 0.5}})))
    assert line == (
        "groups[0].where.quality_score: a range {min, max} needs a numeric column, but 'quality_score' holds "
        "strings in 1 of 4 shards (part-00003.parquet)"
    )
    # a column in no shard at all is an error, not drift
    [line] = errors_of(
        make_spec(str(tmp_path / "drift" / "part-0000[23].parquet"), store, groups=one_group({"lang": "en"}))
    )
    assert line.startswith("groups[0].where.lang: unknown column 'lang': no pool shard has it")


def test_predicates_that_never_hold_in_the_same_row_group(tmp_path):
    folder = str(tmp_path / "split")
    first, second = pool_rows(250, 0), pool_rows(250, 250)
    for r in first:
        r["lang"] = "en"
    for r in second:
        r["lang"], r["domain"] = "fr", "science"
    write_shards(folder, [first + second])  # two row groups: (en, news|science) and (fr, science)
    report = inspect_spec(
        make_spec(folder, str(tmp_path / "store"), groups=one_group({"lang": "fr", "domain": "news"}))
    )
    assert report.errors == [
        "groups[0].where: each predicate holds somewhere in the pool, but no row group has rows that can "
        "satisfy all of them together (lang = 'fr' and domain = 'news'); group 'picked' matches nothing"
    ]


def test_allow_empty_turns_the_error_into_a_warning_and_the_build_goes_on(pool, tmp_path):
    groups = [
        {"name": "web", "where": {"source": "web"}, "weight": 0.6},
        {"name": "spanish", "where": {"lang": "es"}, "weight": 0.2},
        {"name": "books", "where": {"source": "books"}, "weight": 0.2},
    ]
    spec = make_spec(pool, str(tmp_path / "store"), groups=groups)
    [line] = errors_of(spec)
    assert line == (
        "groups[1].where.lang: value 'es' never occurs in the pool (lang has 3 values: 'de', 'en', 'fr'); "
        "group 'spanish' matches nothing"
    )

    groups[1]["allow_empty"] = True
    spec = make_spec(pool, str(tmp_path / "store"), groups=groups)
    assert check_spec(spec) == [line + " (allowed: allow_empty)"]
    assert (
        spec.spec_hash()
        == make_spec(
            pool,
            str(tmp_path / "store"),
            groups=groups[:1] + [{k: v for k, v in groups[1].items() if k != "allow_empty"}] + groups[2:],
        ).spec_hash()
    )  # it draws nothing different
    summary = B.build_mixture(spec)
    shares = {g["name"]: g for g in summary["groups"]}
    assert shares["spanish"]["tokens"] == 0 and shares["spanish"]["target_share"] == 0
    assert shares["web"]["target_share"] == pytest.approx(0.75) and shares["books"]["target_share"] == pytest.approx(
        0.25
    )
    assert any(
        "group 'spanish' (groups[1]: lang = 'es') matches no document of the pool" in n and "allow_empty" in n
        for n in summary["notes"]
    )


# ----------------------------------------------------------------------------- the pool, the tokenizer, the store


def test_pool_tokenizer_and_store_problems(pool, tmp_path):
    (tmp_path / "jsonl").mkdir()
    (tmp_path / "jsonl" / "a.jsonl").write_text('{"id": "1", "text": "x"}\n')
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "part-00000.parquet").write_bytes(b"PAR1 this is no parquet file")
    (tmp_path / "store-file").write_text("")
    spec = make_spec(
        [pool, str(tmp_path / "missing"), str(tmp_path / "jsonl"), str(tmp_path / "broken")],
        str(tmp_path / "store-file"),
        tokenizer={"kind": "huggingface", "name": str(tmp_path / "tok")},
    )
    errors = errors_of(spec)
    assert errors[0].startswith("tokenizer.name: no tokenizer.json at ")
    assert errors[1].startswith("store: ") and "is a file" in errors[1]
    assert errors[2] == f"pool[1]: nothing at {str(tmp_path / 'missing')!r} (no such file or folder)"
    assert errors[3].startswith("pool[2]: 1 shard is not Parquet (a.jsonl): a mixture samples a curated pool")
    assert errors[4].startswith(f"pool: {tmp_path / 'broken' / 'part-00000.parquet'}: not a readable Parquet file (")
    assert len(errors) == 5  # the readable shards were still checked: the groups fit them
    [line] = errors_of(make_spec(pool, str(tmp_path / "store"), tokenizer={"name": "cl100k_bse"}))
    assert line.startswith("tokenizer.name: unknown tiktoken encoding 'cl100k_bse' (did you mean 'cl100k_base'?)")


def test_on_s3_reads_footers_over_http(s3_bucket, tmp_path):
    import s3fs

    root, opts = s3_bucket
    endpoint = {"endpoint_url": opts["endpoint_url"]}  # credentials from the environment
    folder = write_shards(
        f"{root}/runs/r1/dedup", [domain_rows(300, s * 300) for s in range(2)], fs=s3fs.S3FileSystem(**opts)
    )
    spec = make_spec(folder, f"{root}/store", groups=one_group({"domain": "reserch"}), storage={"options": endpoint})
    [line] = errors_of(spec)
    assert line == (
        "groups[0].where.domain: value 'reserch' never occurs in the pool (domain has 3 values: 'news', "
        "'research', 'software'; did you mean 'research'?); group 'picked' matches nothing"
    )


def test_fifty_shards_checked_from_metadata_quickly(tmp_path, capsys):
    folder = write_shards(str(tmp_path / "big"), [domain_rows(400, s * 400) for s in range(50)])
    spec = make_spec(
        folder,
        str(tmp_path / "store"),
        groups=[
            {"name": "web-en", "where": {"source": "web", "lang": "en", "synthetic": False}, "weight": 0.4},
            {
                "name": "research",
                "where": {"domain": ["research", "reserch"], "quality_score": {"min": 0.3}},
                "weight": 0.3,
            },
            {"name": "rest", "where": {}, "weight": 0.3, "sampling": {"method": "rehydrate"}},
        ],
    )
    inspect_spec(spec)  # imports and the page cache: the figure below is the check itself
    t0 = time.perf_counter()
    report = inspect_spec(spec)
    wall = time.perf_counter() - t0
    assert report.errors == [] and len(report.warnings) == 1 and "'reserch' never occurs" in report.warnings[0]
    assert (report.shards, report.rows) == (50, 20_000)
    with capsys.disabled():
        print(
            f"\npreflight: {report.shards} shards, {report.row_groups} row groups, "
            f"{report.dictionary_chunks} dictionary chunks read, {wall * 1000:.0f} ms"
        )


# ----------------------------------------------------------------------------- found while planning


def correlated_rows(n: int, start: int = 0) -> list[dict]:
    """Books always score below 0.5 and everything else at or above it, row by row in the same row
    groups: `source: books` and `quality_score >= 0.6` each hold somewhere, never together."""
    rows = pool_rows(n, start)
    for r in rows:
        r["quality_score"] = (
            0.1 + 0.3 * r["quality_score"] if r["source"] == "books" else 0.5 + 0.5 * r["quality_score"]
        )
    return rows


def test_planning_names_the_empty_group_and_why(tmp_path):
    folder = write_shards(str(tmp_path / "pool"), [correlated_rows(300, s * 300) for s in range(2)])
    store = str(tmp_path / "store")
    groups = [
        {"name": "web", "where": {"source": "web"}, "weight": 0.5},
        {"name": "good-books", "where": {"source": "books", "quality_score": {"min": 0.6}}, "weight": 0.5},
    ]
    spec = make_spec(folder, store, groups=groups)
    assert check_spec(spec) == []  # the metadata cannot see it
    shards = B.resolve_pool(spec.pool)
    with pytest.raises(EmptyGroupError) as e:
        plan_mixture(spec, shards, B.count_tokens(spec, shards))
    assert str(e.value) == (
        "group 'good-books' (groups[1]: source = 'books' and 0.6 <= quality_score) matches no document of "
        "the pool (2 shards, 600 documents); no version was written (fix the predicates, or set "
        "allow_empty: true on the group if it may be empty)"
    )
    # a group whose documents all go to an earlier one
    shadowed = make_spec(
        folder,
        store,
        groups=[
            {"name": "all", "where": {}, "weight": 0.5},
            {"name": "web", "where": {"source": "web"}, "weight": 0.5},
        ],
    )
    with pytest.raises(
        EmptyGroupError,
        match=r"group 'web' \(groups\[1\]: source = 'web'\) matches 200 documents of the "
        r"pool, but every one belongs to an earlier group \('all'\)",
    ):
        plan_mixture(shadowed, shards, B.count_tokens(shadowed, shards))
    # ... or are all taken down
    ids = [r["id"] for s in range(2) for r in correlated_rows(300, s * 300) if r["source"] == "code"]
    excluded = make_spec(
        folder,
        store,
        exclude={"ids": ids},
        groups=[
            {"name": "web", "where": {"source": "web"}, "weight": 0.5},
            {"name": "code", "where": {"source": "code"}, "weight": 0.5},
        ],
    )
    with pytest.raises(EmptyGroupError, match="matches 200 documents of the pool, but every one is excluded"):
        plan_mixture(excluded, shards, B.count_tokens(excluded, shards))
    assert not os.path.exists(os.path.join(store, "mixtures"))


@pytest.mark.usefixtures("ray_local", "prefect_harness")
def test_the_mix_flow_fails_before_writing_anything(tmp_path):
    from flows.mix import mix

    folder = write_shards(str(tmp_path / "pool"), [correlated_rows(300, s * 300) for s in range(2)])
    store = str(tmp_path / "store")
    groups = [
        {"name": "web", "where": {"source": "web"}, "weight": 0.5},
        {"name": "good-books", "where": {"source": "books", "quality_score": {"min": 0.6}}, "weight": 0.5},
    ]
    spec = make_spec(folder, store, name="never-empty", groups=groups)
    t0 = time.perf_counter()
    with pytest.raises(
        EmptyGroupError,
        match=r"group 'good-books' \(groups\[1\]: source = 'books' and 0.6 <= quality_score\) "
        r"matches no document of the pool",
    ):
        mix(spec=spec)
    print(f"\nempty group found while planning, inside the flow: {time.perf_counter() - t0:.2f} s")
    assert not os.path.exists(os.path.join(store, "mixtures", "never-empty"))  # no version, no data prefix, no scratch
    # what pre-flight knows fails the flow before any Ray work (a run from the UI gets the CLI's check)
    t0 = time.perf_counter()
    with pytest.raises(PreflightError, match=r"^groups\[1\]\.where\.source: value 'bookz' never occurs"):
        mix(
            spec=make_spec(
                folder, store, name="never-empty", groups=[groups[0], {**groups[1], "where": {"source": "bookz"}}]
            )
        )
    print(f"\npreflight failure inside the flow: {time.perf_counter() - t0:.2f} s")
    assert not os.path.exists(os.path.join(store, "mixtures"))


# ----------------------------------------------------------------------------- names


def test_names_go_through_the_one_validator(pool, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        f"name: ../escape\npool: {pool}\nstore: {tmp_path}\nbudget_tokens: 10\n"
        "groups:\n  - {name: web--en, weight: 1}\nphases:\n  - {name: Main, budget_tokens: 5}\n"
    )
    with pytest.raises(ConfigError) as e:
        load_spec(bad)
    msg = str(e.value)
    assert "invalid mixture name '../escape': it contains a path separator or '..'" in msg
    assert "invalid group name 'web--en'" in msg and "invalid phase name 'Main': it contains upper-case letters" in msg

    with pytest.raises(InvalidName):
        MixtureLayout(str(tmp_path), "../../etc")
    from mixforge.mixtures import cli_commands

    parser = argparse.ArgumentParser(prog="mixforge")
    cli_commands.register(parser.add_subparsers(dest="command"), cmd_mix=lambda a: None, cmd_takedown=lambda a: None)
    for argv in (
        ["mixtures", "show", "../x", "--store", str(tmp_path)],
        ["mixtures", "diff", "/abs", "v1", "v2", "--store", str(tmp_path)],
        ["mixtures", "list", "Upper", "--store", str(tmp_path)],
    ):
        args = parser.parse_args(argv)
        with pytest.raises(InvalidName):
            args.func(args)
    args = parser.parse_args(["mixtures", "takedown", "../x", "--id", "a", "--reason", "r", "--store", str(tmp_path)])
    with pytest.raises(InvalidName):
        cli_commands.takedown_arguments(args)
    # a folder in the store that no build could have made is left out of listings
    os.makedirs(tmp_path / "mixtures" / "Not A Mixture")
    os.makedirs(tmp_path / "mixtures" / "ok-name")
    assert list_mixtures(str(tmp_path)) == ["ok-name"]
    # spec_for_pool makes valid group names from any value
    long = write_shards(
        str(tmp_path / "long"), [[{**r, "source": "A Very Long Source Name " * 5} for r in pool_rows(30)]]
    )
    spec = B.spec_for_pool(long, str(tmp_path / "store"))
    [group] = spec.groups
    assert group.name.startswith("a-very-long-source-name-a-very") and len(group.name) <= 64
