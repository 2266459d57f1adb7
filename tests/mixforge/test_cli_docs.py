"""The CLI's documentation: `--version`, every command's help, description and examples (which
must parse), and the shipped example configs (complete, defaults, valid)."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import types
import typing

import pytest
import yaml
from pydantic import BaseModel

from mixforge import __version__
from mixforge.cli import build_parser
from mixforge.config import CurateConfig, load_yaml
from mixforge.filters.base import RULE_SETS
from mixforge.stages.registry import CurationStage, register_stage, stage_names, unregister_stage
from tests.helpers import REPO


def test_version_is_fast_and_imports_no_orchestration():
    # A fresh interpreter: `--version` exits 0 and has imported neither Prefect nor Ray (nor the
    # flows and tasks layers that pull them in).
    script = (
        "import json, sys\n"
        "from mixforge.cli import main\n"
        "try:\n"
        "    main(['--version'])\n"
        "finally:\n"
        "    heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('prefect', 'ray', 'flows', 'tasks'))\n"
        "    print(json.dumps(heavy), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"mixforge {__version__}\n"
    assert json.loads(done.stderr.strip().splitlines()[-1]) == []


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, its parser, its one-line help) for every subcommand, at any depth."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield (*path, name), sub, helps.get(name)
                yield from _commands(sub, (*path, name))


def _examples(epilog: str) -> list[str]:
    head, *lines = epilog.splitlines()
    assert head in ("example:", "examples:"), epilog
    assert lines and all(line.startswith("  mixforge ") for line in lines), epilog
    return [line.strip() for line in lines]


def _check_documented(parser: argparse.ArgumentParser, path: tuple[str, ...], sub, help_text) -> None:
    name = " ".join(path)
    assert help_text and "\n" not in help_text, f"{name}: one-line help"
    assert sub.description and len(sub.description) > len(help_text), f"{name}: a description"
    assert sub.epilog, f"{name}: examples in the epilog"
    text = sub.format_help()
    for example in _examples(sub.epilog):
        assert example in text, f"{name}: the help keeps the example's layout: {example}"
        words = shlex.split(example, comments=True)
        assert words[: 1 + len(path)] == ["mixforge", *path], f"{name}: example of another command: {example}"
        args = parser.parse_args(words[1:])  # a usage error raises: the example must parse
        assert args.command == path[0]


@pytest.fixture()
def extra_stage():
    stage = register_stage(CurationStage("doc-check", lambda *a: {}, "count the words of each document"))
    yield stage
    unregister_stage(stage.name)


def test_every_command_has_help_description_and_examples_that_parse(extra_stage):
    parser = build_parser()
    assert parser.description and "mixforge COMMAND --help" in parser.epilog
    commands = {path: (sub, help_text) for path, sub, help_text in _commands(parser)}
    expected = {(s,) for s in stage_names() if s != "normalize"} | {
        ("curate",),
        ("rephrase",),
        ("train-classifier",),
        ("demo",),
        ("mix",),
        ("mixtures",),
        *(("mixtures", a) for a in ("list", "show", "diff", "takedown")),
        ("runs",),
        *(("runs", a) for a in ("list", "show", "clean", "unlock")),
        ("explain",),
        ("server",),
        ("export",),
        ("lineage",),
        ("optimize",),
    }
    assert ("doc-check",) in expected
    assert expected <= set(commands), expected - set(commands)
    for path, (sub, help_text) in commands.items():
        _check_documented(parser, path, sub, help_text)
    # a stage registered outside the built-ins is described from its own help
    assert "count the words of each document" in commands[("doc-check",)][0].description


# ----------------------------------------------------------------------------- shipped configs


def _models_in(annotation: typing.Any) -> tuple[type[BaseModel] | None, bool]:
    """The config model a field holds (unwrapping Optional and Annotated), and whether it holds a
    sequence of them; (None, False) for anything else."""
    if typing.get_origin(annotation) is typing.Annotated:
        return _models_in(typing.get_args(annotation)[0])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (tuple, list) and args:
        item, many = _models_in(args[0])
        return (item, True) if item is not None and not many else (None, False)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            if arg is not type(None) and _models_in(arg)[0] is not None:
                return _models_in(arg)
    return None, False


def _model_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every field of `model`, recursively, as dotted paths (`x[].y` for the fields of a list's items)."""
    paths = set()
    for name, field in model.model_fields.items():
        path = prefix + name
        paths.add(path)
        sub, many = _models_in(field.annotation)
        if sub is not None:
            paths |= _model_paths(sub, path + ("[]." if many else "."))
    return paths


def _yaml_paths(value: typing.Any, prefix: str = "") -> set[str]:
    paths = set()
    if isinstance(value, dict):
        for key, sub in value.items():
            paths |= {prefix + str(key)} | _yaml_paths(sub, f"{prefix}{key}.")
    elif isinstance(value, list):
        for item in value:
            paths |= _yaml_paths(item, prefix[:-1] + "[].")
    return paths


def _builtin_rule_sets() -> dict[str, type[BaseModel]]:
    # rule sets defined by tests in this process (tests/mixforge/filters) are not the shipped ones
    return {name: cls.config_class for name, cls in RULE_SETS.items() if cls.__module__.startswith("mixforge.")}


def test_curate_yaml_names_every_field_with_its_default():
    path = REPO / "configs" / "curate.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    config = load_yaml(path)

    # every field of CurateConfig, at any depth; a classifier's fields are in the classify example
    example = yaml.safe_load((REPO / "configs" / "classify.example.yaml").read_text(encoding="utf-8"))
    named = _yaml_paths(data) | {p for p in _yaml_paths(example) if p.startswith("classify.classifiers[].")}
    missing = _model_paths(CurateConfig) - named
    assert not missing, f"configs/curate.yaml does not name {sorted(missing)}"

    # every shipped rule set, each with all its keys
    rules = {rule["name"]: rule for rule in data["filter"]["rules"]}
    for name, model in _builtin_rule_sets().items():
        assert name in rules, f"configs/curate.yaml: filter.rules has no {name!r}"
        assert set(rules[name]) == set(model.model_fields), name

    # the values are the defaults: the additions are the url rule set (a no-op without lists) and the C4
    # paragraph rule (annotate: it adds columns, drops nothing), each with its own defaults
    dumped, default = config.model_dump(mode="json"), CurateConfig().model_dump(mode="json")
    extra = [r for r in dumped["filter"]["rules"] if r not in default["filter"]["rules"]]
    assert [r["name"] for r in extra] == ["url", "c4_paragraph"]
    assert extra[0] == _builtin_rule_sets()["url"]().model_dump(mode="json")
    assert extra[1] == _builtin_rule_sets()["c4_paragraph"](mode="annotate").model_dump(mode="json")
    dumped["filter"]["rules"] = [r for r in dumped["filter"]["rules"] if r["name"] not in ("url", "c4_paragraph")]
    assert dumped == default


def test_classify_example_validates_with_and_without_its_commented_clusters():
    path = REPO / "configs" / "classify.example.yaml"
    config = load_yaml(path)
    (classifier,) = config.classify.classifiers
    assert classifier.kind == "binary-quality" and "/models/" in classifier.model
    assert config.dedup.keep.column == f"quality_{classifier.name}"  # the column the classifier writes

    # the commented embedding_clusters block is valid YAML for the same config once uncommented
    text = path.read_text(encoding="utf-8")
    block = re.search(r"^  # embedding_clusters:\n(?:  #   .*\n)+", text, re.M)
    assert block, "the example shows embedding_clusters, commented"
    uncommented = re.sub(r"^  # ", "  ", block.group(0), flags=re.M).replace("    # centroids", "    centroids")
    data = yaml.safe_load(text.replace(block.group(0), uncommented))
    clusters = CurateConfig.model_validate(data).classify.embedding_clusters
    assert clusters.enabled and clusters.k == 16 and clusters.centroids
