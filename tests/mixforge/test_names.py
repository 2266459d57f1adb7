"""One name rule for everything that becomes a path or an artifact key (mixforge.names)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from mixforge.classify import store
from mixforge.classify.config import ClassifierSpec, EmbeddingClustersConfig, InvalidModelName, validate_model_name
from mixforge.config import ConfigError, CurateConfig, StorageConfig, load_model
from mixforge.names import InvalidName, artifact_key, is_valid_name, name_field, validate_name


@pytest.mark.parametrize(
    "bad, problem",
    [
        ("../../x", "path separator or '..'"),
        ("..", "path separator or '..'"),
        ("/abs", "path separator or '..'"),
        ("a/b", "path separator or '..'"),
        ("a\\b", "path separator or '..'"),
        ("Upper", "upper-case"),
        ("a--b", "single dashes"),
        ("-lead", "single dashes"),
        ("trail-", "single dashes"),
        ("", "is empty"),
        ("x" * 65, "65 characters long"),
        ("a_b", "single dashes"),
        ("a b", "single dashes"),
        ("café", "single dashes"),
    ],
)
def test_bad_names_are_refused_saying_why(bad, problem):
    with pytest.raises(InvalidName, match="invalid run id") as err:
        validate_name(bad, "run id")
    assert problem in str(err.value) and "lowercase letters, digits and single dashes" in str(err.value)
    assert isinstance(err.value, ConfigError)  # the CLI maps ConfigError to exit 2
    assert not is_valid_name(bad)


@pytest.mark.parametrize("bad", [None, 3, 1.5, b"abc", ["a"]])
def test_non_strings_are_refused(bad):
    with pytest.raises(InvalidName, match="must be a string"):
        validate_name(bad, "mixture name")


@pytest.mark.parametrize(
    "good", ["a", "0", "edu-quality", "nightly-2026-12", "run-0123456789abcdef", "x" * 64, "a-b-c"]
)
def test_valid_names_pass_unchanged(good):
    assert validate_name(good, "name") == good and is_valid_name(good)


def test_pydantic_fields_name_the_field_and_the_rule():
    class Spec(BaseModel):
        phase: name_field("phase name")

    assert Spec(phase="anneal").phase == "anneal"
    with pytest.raises(ValidationError) as err:
        Spec(phase="../up")
    (e,) = err.value.errors()
    assert e["loc"] == ("phase",) and "invalid phase name '../up'" in e["msg"]

    with pytest.raises(
        ConfigError, match=r"c\.yaml: classify\.classifiers\.0\.name: .*invalid classifier name 'Bad_Name'"
    ):
        load_model(CurateConfig, {"classify": {"classifiers": [{"name": "Bad_Name", "model": "/m"}]}}, "c.yaml")
    with pytest.raises(ConfigError, match=r"classify\.embedding_clusters\.name: .*invalid model name 'a/b'"):
        load_model(CurateConfig, {"classify": {"embedding_clusters": {"name": "a/b"}}}, "c.yaml")
    with pytest.raises(ConfigError, match=r"storage\.secret_block: .*invalid Prefect Secret block name '\.\./creds'"):
        load_model(CurateConfig, {"storage": {"secret_block": "../creds"}}, "c.yaml")
    assert ClassifierSpec(name="edu", model="/m").name == "edu"
    assert EmbeddingClustersConfig(name="topics-v2").name == "topics-v2"
    assert StorageConfig(secret_block="s3-creds").secret_block == "s3-creds"


def test_model_names_use_the_same_rule():
    # the two names mixforge.cli imports stay: they are the one rule
    assert InvalidModelName is InvalidName
    with pytest.raises(InvalidModelName, match="invalid model name"):
        validate_model_name("../../escaped")
    with pytest.raises(InvalidName, match="invalid model name '/abs'"):
        store.models_dir("/tmp/root", "/abs")
    assert store.models_dir("/tmp/root", "edu") == "/tmp/root/models/edu"


def test_artifact_keys():
    assert artifact_key("curate", "run-0a1b") == "curate-run-0a1b"
    assert artifact_key("model", "edu-quality") == "model-edu-quality"
    assert artifact_key(artifact_key("curate", "x"), "summary") == "curate-x-summary"
    long_key = artifact_key("mixture", "x" * 64, "manifest")  # a key may be longer than one name
    assert long_key.endswith("-manifest")
    for parts in (("curate", "Run"), ("train_classifier", "x"), ("classify", "../x"), ("a", ""), ("a", "-b")):
        with pytest.raises(InvalidName, match="invalid artifact key"):
            artifact_key(*parts)
