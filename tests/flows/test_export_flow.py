"""The export as people run it: the `mix` flow with an export (as `mix --export` and the pipeline's
`export` parameter run it), the `export` flow, its Prefect artifacts and the data card's export section;
real Prefect (test harness), the local process pool."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mixforge.export.build import ExportConfig
from mixforge.export.formats import get_format
from tests.flows.test_curate_flow import artifacts_for
from tests.mixforge.mixtures.test_mixtures import make_spec, write_pool

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def local_pool(monkeypatch):
    monkeypatch.setenv("MIXFORGE_EXECUTOR", "local")  # a small job: the local process pool, as the CLI picks


def test_mix_with_export_then_a_second_export_with_metadata(tmp_path, local_pool):
    from flows.export import export as export_flow
    from flows.mix import mix

    pool = write_pool(str(tmp_path), shards=2, per_shard=120)
    spec = make_spec(pool, str(tmp_path / "store"), name="flow-export", budget_tokens=8_000)
    summary = mix(spec=spec, export=ExportConfig(format="megatron", file_tokens=3_000))
    exported = summary["export"]
    assert exported["version"] == summary["version"] == "v0001"
    assert exported["docs"] == summary["docs"]  # every row of the version, repeats included
    assert exported["tokens"] == summary["tokens"] + summary["docs"]  # the mixture's counts plus one EOS each
    manifest = json.loads(Path(exported["manifest"]).read_text())
    assert exported["files"] == len(manifest["files"]) == 3  # ceil(tokens / file_tokens) parts
    fmt = get_format("megatron")
    lengths = np.concatenate([fmt.read(f["uri"].rsplit(".", 1)[0])[1] for f in manifest["files"]])
    assert len(lengths) == summary["docs"] and lengths.sum() == exported["tokens"]

    # a second export of the same version (npy, metadata conditioning): the `export` flow on its own
    second = export_flow(
        store=spec.store,
        name="flow-export",
        version="1",
        config=ExportConfig(format="npy", metadata={"template": "{source}: "}, tag="meta"),
    )
    assert second["key"].startswith("npy-tiktoken-cl100k_base-meta") and second["docs"] == exported["docs"]
    assert second["tokens"] > exported["tokens"]  # the prefixes

    # the Prefect UI: tokens per phase and group, and the files with the tokenizer, in one history per mixture
    tables = [json.loads(t.data) if isinstance(t.data, str) else t.data for t in artifacts_for("export-flow-export")]
    assert sorted(t[0]["export"] for t in tables) == sorted([exported["key"], second["key"]])
    rows = next(t for t in tables if t[0]["export"] == second["key"])
    assert {r["group"] for r in rows} == {g["group"] for g in second["groups"]}
    assert sum(r["tokens"] for r in rows) == second["tokens"]
    files = artifacts_for("export-flow-export-files")
    assert any("part-00000.npy" in a.data and "cl100k_base" in a.data for a in files)
    # the data card lists both exports (the version's data and manifest are unchanged)
    card = Path(summary["card"]).read_text()
    assert card.count("## Training-ready exports") == 1
    assert f"`{exported['key']}`" in card and f"`{second['key']}`" in card
    assert "metadata conditioning" in card


def test_mix_with_a_tokenizer_that_does_not_load_builds_no_version(tmp_path, local_pool, capsys):
    """`mix --export FILE` and the `mix` flow with an export: the export's settings (tokenizer loadable, phases,
    template) are checked before the version is built, so a bad one leaves no new version in the store."""
    import yaml

    from flows.mix import mix
    from mixforge import cli
    from mixforge.config_errors import ConfigError
    from mixforge.mixtures.spec import TokenizerSpec

    pool = write_pool(str(tmp_path), shards=1, per_shard=60)
    spec = make_spec(pool, str(tmp_path / "store"), name="no-tokenizer", budget_tokens=2_000)
    missing = str(tmp_path / "nowhere" / "tokenizer.json")
    bad = ExportConfig(tokenizer=TokenizerSpec(kind="huggingface", name=missing))
    versions = tmp_path / "store" / "mixtures" / "no-tokenizer"

    with pytest.raises(ConfigError, match=f"tokenizer huggingface '{missing}' cannot be loaded: .*not found"):
        mix(spec=spec, export=bad)
    assert not versions.exists()  # nothing drawn, written or committed

    spec_file, export_file = tmp_path / "mix.yaml", tmp_path / "export.yaml"
    spec_file.write_text(yaml.safe_dump(spec.model_dump(mode="json", exclude_unset=True)))
    export_file.write_text(yaml.safe_dump(bad.model_dump(mode="json", exclude_unset=True)))
    assert cli.main(["mix", "--spec", str(spec_file), "--export", str(export_file), "-q"]) == 2  # the CLI's pre-flight
    assert f"tokenizer huggingface '{missing}' cannot be loaded" in capsys.readouterr().err
    assert not versions.exists()

    with pytest.raises(ConfigError, match=r"metadata\.phases: mixture spec 'no-tokenizer' has no phase 'anneal'"):
        mix(spec=spec, export=ExportConfig(metadata={"template": "{source}: ", "phases": ["anneal"]}))
    assert not versions.exists()
