"""One predicate language (mixforge.predicates): a mixture group's `where` and rephrase's `select`
are the same model, compiled by the same code to the same rows; rephrase's former list of
{column, op, value} is still read, with a warning giving the same selection in the new syntax."""

from __future__ import annotations

import warnings

import polars as pl
import pyarrow as pa
import pytest
from pydantic import TypeAdapter, ValidationError

from mixforge.config import ConfigError, load_model
from mixforge.mixtures.pool import assign_groups, predicate_columns
from mixforge.mixtures.preflight import inspect_spec
from mixforge.mixtures.spec import MixSpec
from mixforge.predicates import Where, check_schema, columns, describe_where, matching_rows
from mixforge.rephrase.config import RephraseConfig, RephraseRunConfig
from mixforge.stages.rephrase import selected_rows
from tests.mixforge.mixtures.test_mixture_preflight import write_shards

WHERE = TypeAdapter(Where)


def table() -> pa.Table:
    return pa.table(
        {
            "id": [f"d{i}" for i in range(6)],
            "source": ["web", "web", "books", "code", None, "web"],
            "lang": ["en", "fr", "en", "de", "en", None],
            "quality": [0.1, 0.3, 0.5, 0.7, None, 0.9],
            "dups": pa.array([1, 2, 3, 1, 2, None], pa.int64()),
            "flag": [True, False, None, True, False, True],
            "parent_id": [None, None, "d0", None, "d2", None],
        }
    )


def rows(where: dict, t: pa.Table | None = None) -> list[int]:
    mask = matching_rows(WHERE.validate_python(where), table() if t is None else t)
    return [i for i, m in enumerate(mask) if m]


@pytest.mark.parametrize(
    "where, expected",
    [
        ({}, [0, 1, 2, 3, 4, 5]),
        ({"source": "web"}, [0, 1, 5]),
        ({"lang": ["en", "fr"]}, [0, 1, 2, 4]),
        ({"quality": {"min": 0.3}}, [1, 2, 3, 5]),
        ({"quality": {"min": 0.3, "max": 0.7}}, [1, 2]),
        ({"quality": {"above": 0.3, "at_most": 0.7}}, [2, 3]),
        ({"quality": {"min": 0.5, "at_most": 0.5}}, [2]),
        ({"lang": {"not": "en"}}, [1, 3]),  # a null is never "not en"
        ({"lang": {"not": ["en", "de"]}}, [1]),
        ({"quality": {"missing": True}}, [4]),
        ({"lang": {"missing": False}, "source": "web"}, [0, 1]),
        ({"synthetic": True}, [2, 4]),
        ({"synthetic": False, "source": ["web", "books"]}, [0, 1, 5]),
        ({"dups": "3"}, [2]),  # compared as the column's type
        ({"dups": 2.5}, []),  # never a whole number: equals nothing
        ({"flag": True}, [0, 3, 5]),
        ({"no_such_column": {"missing": True}}, [0, 1, 2, 3, 4, 5]),  # a column a shard lacks is all null
        ({"no_such_column": "x"}, []),
    ],
)
def test_every_form_selects_its_rows(where, expected):
    assert rows(where) == expected


def test_synthetic_without_a_parent_column_means_every_row_is_an_original():
    t = table().drop(["parent_id"])
    assert rows({"synthetic": False}, t) == [0, 1, 2, 3, 4, 5] and rows({"synthetic": True}, t) == []


def test_string_columns_take_booleans_as_their_text():
    t = pa.table({"answer": ["true", "false", "yes"]})
    assert rows({"answer": True}, t) == [0] and rows({"answer": [False, "yes"]}, t) == [1, 2]


def test_ranges_need_one_bound_per_side_in_order():
    for bad, message in [
        ({}, "a range needs min, max, above or at_most"),
        ({"min": 1, "above": 0}, "give one lower bound"),
        ({"max": 1, "at_most": 2}, "give one upper bound"),
        ({"min": 0.5, "max": 0.5}, "must be below"),
        ({"above": 0.5, "at_most": 0.5}, "must be below"),
    ]:
        with pytest.raises(ValidationError, match=message):
            WHERE.validate_python({"quality": bad})


def test_a_range_dumps_as_before_and_new_forms_dump_as_written():
    # The spec hash is computed from these dumps: a {min, max} range must dump as it always did.
    assert WHERE.dump_python(WHERE.validate_python({"q": {"min": 0.3}}), mode="json") == {
        "q": {"min": 0.3, "max": None}
    }
    written = {"q": {"above": 0.3, "at_most": 0.9}, "lang": {"not": ["en"]}, "url": {"missing": True}}
    assert WHERE.dump_python(WHERE.validate_python(written), mode="json") == {
        "q": {"min": None, "max": None, "above": 0.3, "at_most": 0.9},
        "lang": {"not": ["en"]},
        "url": {"missing": True},
    }
    where = WHERE.validate_python(written | {"synthetic": False, "source": "web"})
    assert describe_where(where) == (
        "0.3 < q <= 0.9 and lang not in ['en'] and url is null and synthetic = false and source = 'web'"
    )
    assert columns(where) == {"q", "lang", "url", "parent_id", "source"}


def test_schema_check_names_unknown_columns_and_type_mistakes():
    where = WHERE.validate_python(
        {"lang": {"min": 1}, "dups": True, "flag": {"not": 1}, "langs": "en", "synthetic": "yes", "quality": "x"}
    )
    assert check_schema(where, table().schema, "rephrase.select") == [
        "rephrase.select.lang: a range {min, max} needs a numeric column, but 'lang' holds strings",
        "rephrase.select.dups: true is a boolean, but 'dups' holds integers",
        "rephrase.select.flag: 1 is not true or false, but 'flag' holds true/false",
        "rephrase.select.langs: unknown column 'langs' (columns: id, source, lang, quality, dups, flag, parent_id)",
        "rephrase.select.synthetic: takes true (rephrased rows) or false (originals), not 'yes'",
    ]  # "x" in a number column is no mistake: it equals nothing


def test_a_mixture_group_and_a_rephrase_selection_pick_the_same_rows():
    where = {"source": ["web", "code"], "quality": {"above": 0.2}, "dups": {"not": 3}, "synthetic": False}
    spec = MixSpec.model_validate(
        {
            "name": "m",
            "pool": "/p",
            "store": "/s",
            "budget_tokens": 10,
            "groups": [{"name": "g", "where": where, "weight": 1}],
        }
    )
    config = RephraseConfig(engine={"model": "m"}, select=where)
    assert spec.groups[0].where == config.select
    t = table()
    frame = pl.from_arrow(t.select(sorted(predicate_columns(spec))))
    in_group = [i for i, g in enumerate(assign_groups(spec, frame)) if g == 0]
    assert in_group == [i for i, s in enumerate(selected_rows(t, config)) if s] == [1, 3]  # row 5: dups is null
    with pytest.raises(ValueError, match="rephrase.select.lang: a range"):
        selected_rows(t, RephraseConfig(engine={"model": "m"}, select={"lang": {"min": 1}}))


# ----------------------------------------------------------------------------- rephrase's former select


@pytest.mark.parametrize(
    "old, new",
    [
        ({"op": "==", "value": "en"}, "en"),
        ({"op": "!=", "value": "en"}, {"not": "en"}),
        ({"op": "in", "value": ["en", "fr"]}, ["en", "fr"]),
        ({"op": "not_in", "value": ["en"]}, {"not": ["en"]}),
        ({"op": "is_null"}, {"missing": True}),
        ({"op": "not_null"}, {"missing": False}),
    ],
)
def test_each_former_operator_has_its_new_form(old, new):
    with pytest.warns(FutureWarning, match="deprecated") as caught:
        config = RephraseConfig(engine={"model": "m"}, select=[{"column": "lang", **old}])
    assert config.select == WHERE.validate_python({"lang": new})
    assert "write it in the mixture's where syntax: select: {lang: " in str(caught[0].message)


def test_former_comparisons_become_ranges_and_merge_per_column():
    old = [
        {"column": "quality", "op": ">", "value": 0.2},
        {"column": "quality", "op": "<=", "value": 0.7},
        {"column": "source", "op": "!=", "value": "books"},
        {"column": "source", "op": "not_in", "value": ["code"]},
        {"column": "source", "op": "not_null"},
    ]
    with pytest.warns(FutureWarning) as caught:
        config = load_model(RephraseRunConfig, {"rephrase": {"engine": {"model": "m"}, "select": old}}, "cfg.yaml")
    message = str(caught[0].message)
    assert "select: {quality: {above: 0.2, at_most: 0.7}, source: {not: [books, code]}}" in message
    assert "never selects a row whose value is null" in message  # not_in used to select nulls
    assert config.rephrase.select == WHERE.validate_python(
        {"quality": {"above": 0.2, "at_most": 0.7}, "source": {"not": ["books", "code"]}}
    )
    assert rows(config.rephrase.select) == [1]  # in (0.2, 0.7]: d1 (web), d2 (books), d3 (code)


def test_former_conditions_without_an_equivalent_are_refused_with_the_reason():
    for old, message in [
        ([{"column": "day", "op": ">=", "value": "2024-01-01"}], "ranges compare numbers"),
        (
            [{"column": "q", "op": ">=", "value": 1}, {"column": "q", "op": ">", "value": 2}],
            "cannot be written as one",
        ),
        ([{"column": "q", "op": "in", "value": 3}], "needs a list value"),
    ]:
        with pytest.raises(ConfigError, match=message), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            load_model(RephraseRunConfig, {"rephrase": {"engine": {"model": "m"}, "select": old}}, "cfg.yaml")


def test_the_new_form_gives_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = RephraseConfig(engine={"model": "m"}, select={"quality": {"max": 0.5}})
    assert rows(config.select) == [0, 1]


# ----------------------------------------------------------------------------- the mixture pre-flight


def test_preflight_checks_the_new_forms_against_the_pool_metadata(tmp_path):
    shard = [
        {"id": f"d{i}", "text": "x", "source": "web", "lang": "en", "score": i / 10 + 0.05, "url": None}
        for i in range(9)
    ]
    pool = write_shards(str(tmp_path / "pool"), [shard])

    def findings(where: dict) -> list[str]:
        spec = MixSpec.model_validate(
            {
                "name": "m",
                "pool": pool,
                "store": str(tmp_path / "s"),
                "budget_tokens": 10,
                "groups": [{"name": "g", "where": where, "weight": 1}],
            }
        )
        return inspect_spec(spec).errors

    assert findings({"score": {"above": 0.2, "at_most": 0.5}, "url": {"missing": True}, "lang": {"not": "fr"}}) == []
    assert findings({"score": {"above": 0.9}}) == [
        "groups[0].where.score: no value of the pool satisfies 0.9 < score (score is between 0.05 and 0.85 in the "
        "row-group statistics); group 'g' matches nothing"
    ]
    assert findings({"score": {"missing": True}}) == [
        "groups[0].where.score: no row of the pool has score missing (the row-group statistics count no nulls); "
        "group 'g' matches nothing"
    ]
    assert findings({"lang": {"not": 1}}) == []  # 1 is "1" in a string column: it leaves nothing out
    assert findings({"score": {"not": "high"}}) == []
    assert findings({"lang": {"not": True}, "score": {"not": False}}) == [
        "groups[0].where.score: false is a boolean, but 'score' holds numbers"
    ]
