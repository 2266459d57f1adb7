"""The nightly pipeline, incremental, with real parts (Prefect harness, a local Ray, a local
directory and a moto S3 endpoint):
night 1 curates shard A; night 2 curates only the new shard B, whose planted copies of A's
documents the pool's dedup index removes, and mixes over both runs; night 3, with nothing new,
is a no-op."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mixforge.config import CurateConfig, RayConfig, StorageConfig
from mixforge.mixtures.versions import MixtureLayout, list_versions
from mixforge.storage import InputShard
from tasks.planning import PoolRun, incremental_config, new_shards, pool_runs
from tests.helpers import prose, write_shard

CONFIG = CurateConfig(stages=["normalize", "dedup"], ray=RayConfig(max_shards_in_flight=2), dedup={"partitions": 4})


def replace_words(text: str, positions: list[int], tag: str) -> str:
    words = text.split(" ")
    for p in positions:
        words[p] = f"{tag}{p}"
    return " ".join(words)


def doc(id: str, text: str) -> dict:
    return {"id": id, "text": text, "source": "fixture"}


@pytest.fixture(params=["local", "s3"])
def where(request, tmp_path):
    """(root URI, storage options, filesystem): a local directory, or a bucket on a real S3 endpoint."""
    from fsspec.core import url_to_fs

    if request.param == "local":
        root, opts = str(tmp_path), {}
    else:
        root, opts = request.getfixturevalue("s3_bucket")
    fs, _ = url_to_fs(root, **opts)
    return root, opts, fs


def names(fs, uri: str) -> list[str]:
    fs.invalidate_cache()  # s3fs caches listings
    return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(uri, detail=False))


def read_parts(fs, folder: str) -> pa.Table:
    fs.invalidate_cache()
    files = sorted(fs.glob(f"{folder}/part-*.parquet"))
    return pa.concat_tables([pq.read_table(fs.open(f)) for f in files], promote_options="permissive")


@pytest.mark.usefixtures("ray_local", "prefect_harness")
def test_nightly_pipeline_curates_only_new_shards_dedups_against_the_pool_and_mixes_all_runs(where):
    from flows.pipeline import pipeline

    root, opts, fs = where
    incoming, store = f"{root}/incoming", f"{root}/store"
    config = CONFIG.model_copy(update={"storage": StorageConfig(options=opts)})
    shard_fs = fs if opts else None  # tests.helpers.write_shard: local paths, or a filesystem's paths
    a_docs = [doc(f"a-{i}", prose(100 + i, 30)) for i in range(6)]
    write_shard(f"{incoming}/a.jsonl".removeprefix("s3://"), a_docs, shard_fs)

    def night():
        return pipeline(input=incoming, output=store, config=config, mixture_name="nightly", incremental=True)

    def read_json(uri: str):
        fs.invalidate_cache()
        return json.loads(fs.cat_file(uri))

    # Night 1: everything is new.
    first = night()
    assert first["noop"] is False and first["incremental"]["new_shards"] == 1
    assert first["incremental"]["index"] == f"{store}/index/dedup"  # the default index, under the store
    assert first["stages"][-1]["docs_kept"] == 6
    assert read_json(f"{store}/runs/{first['run_id']}/_complete.json")["run_id"] == first["run_id"]
    assert first["mixture"]["version"] == "v0001" and first["pool"] == [first["output"]]

    # Night 2: B arrives, holding an exact and a near copy of A's documents.
    b_docs = [doc(f"b-{i}", prose(200 + i, 30)) for i in range(4)]
    b_docs += [
        doc("b-copy-of-a1", a_docs[1]["text"]),
        doc("b-near-a2", replace_words(a_docs[2]["text"], [5, 60, 120], "z")),
    ]
    write_shard(f"{incoming}/b.jsonl".removeprefix("s3://"), b_docs, shard_fs)
    second = night()
    assert second["noop"] is False and second["run_id"] != first["run_id"]
    assert (
        second["incremental"]["input_shards"],
        second["incremental"]["already_curated"],
        second["incremental"]["new_shards"],
    ) == (2, 1, 1)
    run2 = read_json(f"{store}/runs/{second['run_id']}/_run.json")
    assert [s["uri"].rsplit("/", 1)[1] for s in run2["inputs"]] == ["b.jsonl"]  # only B was curated
    assert run2["config"]["dedup"]["index"] == f"{store}/index/dedup"
    dedup = second["stages"][-1]
    assert (dedup["docs_in"], dedup["docs_kept"]) == (6, 4)
    assert dedup["dedup"]["index_segments_used"] == 1
    removed = read_parts(fs, f"{second['output']}/_removed")
    assert dict(zip(removed.column("id").to_pylist(), removed.column("duplicate_of").to_pylist())) == {
        "b-copy-of-a1": "a-1",
        "b-near-a2": "a-2",
    }  # the pool's documents win

    # The mixture spans both runs, and never the removed copies.
    mixture = second["mixture"]
    assert mixture["version"] == "v0002"
    assert second["pool"] == sorted([first["output"], second["output"]])
    manifest = read_json(mixture["manifest"])
    assert sorted(manifest["pool"]["inputs"]) == second["pool"]
    assert set(manifest["pool"]["run_ids"]) == {first["run_id"], second["run_id"]}
    ids = set(
        pa.concat_tables([pq.read_table(fs.open(f["uri"]), columns=["id"]) for f in manifest["files"]])
        .column("id")
        .to_pylist()
    )
    assert ids and not ids & {"b-copy-of-a1", "b-near-a2"}

    # Night 3: nothing new: no run, no new mixture version; the summary says so.
    runs_before = names(fs, f"{store}/runs")
    third = night()
    assert third["noop"] is True and third["run_id"] is None and third["stages"] == []
    assert third["incremental"]["new_shards"] == 0 and "nothing new" in third["message"]
    assert third["mixture"]["version"] == "v0002" and third["mixture"]["built"] is False
    assert names(fs, f"{store}/runs") == runs_before
    assert list_versions(MixtureLayout(store, "nightly"), opts) == ["v0001", "v0002"]

    # A run that finished (its documents are in the index) but died before its completion
    # marker still counts as curated: its shard must not be curated again.
    fs.rm(f"{store}/runs/{second['run_id']}/_complete.json")
    fourth = night()
    assert fourth["noop"] is True and fourth["incremental"]["already_curated"] == 2
    assert read_json(f"{store}/runs/{second['run_id']}/_complete.json")["repaired"] is True

    # Nothing new, but no mixture version over the current pool (as when last night's mix failed
    # after its curate run completed): the night builds one, without curating anything.
    fs.rm(f"{store}/mixtures/nightly/v0002", recursive=True)
    catch_up = night()
    assert catch_up["noop"] is False and catch_up["run_id"] is None and catch_up["mixture"]["version"] == "v0002"
    assert catch_up["pool"] == second["pool"]


@pytest.mark.usefixtures("ray_local", "prefect_harness")
def test_a_given_mixture_spec_is_rebuilt_when_it_changes_even_with_nothing_new(tmp_path):
    from flows.pipeline import pipeline
    from mixforge.mixtures.spec import MixSpec

    incoming, store = tmp_path / "incoming", str(tmp_path / "store")
    write_shard(str(incoming / "a.jsonl"), [doc(f"a-{i}", prose(300 + i, 30)) for i in range(4)])
    spec = MixSpec.model_validate(
        {
            "name": "picked",
            "pool": [store],
            "store": store,
            "seed": 0,
            "budget_fraction": 0.5,
            "groups": [{"name": "fixture", "where": {"source": ["fixture"]}, "weight": 1.0, "max_epochs": 2}],
        }
    )

    def night(mixture: MixSpec) -> dict:
        return pipeline(input=str(incoming), output=store, config=CONFIG, mixture=mixture, incremental=True)

    first = night(spec)
    assert first["mixture"]["version"] == "v0001" and first["mixture"]["name"] == "picked"
    assert night(spec)["noop"] is True  # same spec, same pool
    changed = night(spec.model_copy(update={"seed": 1}))
    assert changed["noop"] is False and changed["run_id"] is None and changed["mixture"]["version"] == "v0002"


def test_the_pool_on_s3_is_the_completed_runs_of_its_index(s3_bucket):
    """Run discovery on a real S3 endpoint: completed runs of the index count, unfinished ones and
    runs of another index do not, and a finished run missing its marker is repaired."""
    import s3fs

    root, opts = s3_bucket
    fs = s3fs.S3FileSystem(**opts)
    index = f"{root}/index/dedup"

    def run(run_id: str, inputs: list[str], index_uri: str | None, complete: bool, stats: bool = True):
        base = f"{root}/runs/{run_id}".removeprefix("s3://")
        config = {"stages": ["normalize", "dedup"], "dedup": {"index": index_uri}}
        fs.pipe_file(
            f"{base}/_run.json",
            json.dumps(
                {"run_id": run_id, "config": config, "inputs": [{"uri": u, "size": 10} for u in inputs]}
            ).encode(),
        )
        if stats:
            fs.pipe_file(f"{base}/dedup/_stats.json", b"{}")
        if complete:
            fs.pipe_file(f"{base}/_complete.json", json.dumps({"run_id": run_id}).encode())

    run("run-a", ["s3://in/a.jsonl"], index, complete=True)
    run("run-b", ["s3://in/b.jsonl"], index, complete=False)  # died before its index update
    run("run-c", ["s3://in/c.jsonl"], f"{root}/other-index", complete=True)  # another pool
    run("run-d", ["s3://in/d.jsonl"], index, complete=False)  # died after its index update
    fs.pipe_file(
        f"{index}/segments/s-000001.json".removeprefix("s3://"), json.dumps({"segment": 1, "run_id": "run-a"}).encode()
    )
    fs.pipe_file(
        f"{index}/segments/s-000002.json".removeprefix("s3://"), json.dumps({"segment": 2, "run_id": "run-d"}).encode()
    )

    runs = pool_runs(root, index, opts)
    assert [(r.run_id, r.output) for r in runs] == [
        ("run-a", f"{root}/runs/run-a/dedup"),
        ("run-d", f"{root}/runs/run-d/dedup"),
    ]
    assert fs.exists(f"{root}/runs/run-d/_complete.json".removeprefix("s3://"))
    found = [InputShard(f"s3://in/{n}.jsonl", 10) for n in "abcde"]
    assert [s.uri.rsplit("/", 1)[1] for s in new_shards(found, runs)] == ["b.jsonl", "c.jsonl", "e.jsonl"]
    assert pool_runs(f"{root}/empty-store", index, opts) == []


def test_a_shard_is_new_unless_a_pool_run_curated_the_same_uri_and_size():
    runs = [PoolRun("run-1", "/store/runs/run-1/dedup", frozenset({("/in/a.jsonl", 100), ("/in/b.jsonl", 50)}))]
    found = [InputShard("/in/a.jsonl", 100), InputShard("/in/b.jsonl", 51), InputShard("/in/c.jsonl", 10)]
    assert [s.uri for s in new_shards(found, runs)] == ["/in/b.jsonl", "/in/c.jsonl"]  # b was rewritten
    assert new_shards(found, []) == found


def test_incremental_needs_dedup_feeding_the_index_and_defaults_the_index_into_the_store():
    assert incremental_config(CONFIG, "s3://pool").dedup.index == "s3://pool/index/dedup"
    explicit = CONFIG.model_copy(update={"dedup": CONFIG.dedup.model_copy(update={"index": "s3://other/idx"})})
    assert incremental_config(explicit, "s3://pool").dedup.index == "s3://other/idx"
    with pytest.raises(ValueError, match="add 'dedup' to config.stages"):
        incremental_config(CurateConfig(stages=["normalize", "filter"]), "s3://pool")
    with pytest.raises(ValueError, match="update_index"):
        incremental_config(CurateConfig(dedup={"update_index": False}), "s3://pool")


@pytest.mark.usefixtures("ray_local", "prefect_harness")
def test_cli_curate_incremental_twice(tmp_path, capsys):
    import yaml

    from mixforge.cli import main

    write_shard(str(tmp_path / "in" / "a.jsonl"), [doc(f"a-{i}", prose(i, 6)) for i in range(4)])
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"stages": ["normalize", "dedup"], "dedup": {"partitions": 4}}))
    argv = [
        "curate",
        "--input",
        str(tmp_path / "in"),
        "--output",
        str(tmp_path / "store"),
        "--config",
        str(cfg),
        "--incremental",
        "--json",
        "-q",
    ]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["run_id"] and first["incremental"]["new_shards"] == 1
    assert main(argv) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["run_id"] is None and second["incremental"]["new_shards"] == 0
    assert main(argv[:-2] + ["-q"]) == 0
    assert "nothing new to curate" in capsys.readouterr().out


def test_incremental_over_an_empty_input_folder_is_a_no_op_but_a_missing_one_fails(tmp_path):
    from mixforge import planning
    from mixforge.config import CurateConfig
    from mixforge.config_errors import ConfigError

    (tmp_path / "empty").mkdir()
    config = CurateConfig(stages=["normalize", "dedup"])
    plan = planning.plan_curate(str(tmp_path / "empty"), str(tmp_path / "store"), config, incremental=True)
    assert plan.run is None and plan.incremental["input_shards"] == 0 and plan.incremental["new_shards"] == 0
    with pytest.raises(ConfigError, match="no shards"):  # not incremental: an empty input is a mistake
        planning.plan_curate(str(tmp_path / "empty"), str(tmp_path / "store"), config)
    with pytest.raises(ConfigError, match="--input"):  # a typo never passes as "nothing new"
        planning.plan_curate(str(tmp_path / "typo"), str(tmp_path / "store"), config, incremental=True)
