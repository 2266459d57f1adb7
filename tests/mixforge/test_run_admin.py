"""`mixforge runs list|show|clean` (mixforge.run_admin) on real runs of a local store and of S3 (moto),
and the dedup stage's scratch (`dedup/_work/`) removed once the stage is finished, resume intact.

Runs are made in this process as the curate flow makes them (planning.start_run, the registered
stages on a SerialExecutor, planning.mark_run_complete, planning.finish_run): no Prefect, no Ray.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest

from mixforge import contracts, planning, run_admin, storage
from mixforge.cli import main
from mixforge.config import CurateConfig
from mixforge.dedup.composite import run_dedup, work_dir
from mixforge.dedup.layouts import DedupLayout, IndexLayout
from mixforge.executor import SerialExecutor
from mixforge.runner import completed_outputs
from mixforge.runs import StageLayout
from mixforge.stages.registry import get_stage
from tests.helpers import REPO, prose, write_shard


def write_input(root: str, name: str, seed: int, fs=None) -> str:
    """Two small raw shards (one exact duplicate across them) under `root/name/`."""
    folder = storage.join(root, name)
    rows = [
        [{"id": f"{name}-a", "text": prose(seed, 20)}, {"id": f"{name}-b", "text": prose(seed + 1, 20)}],
        [{"id": f"{name}-c", "text": prose(seed + 2, 20)}, {"id": f"{name}-a-copy", "text": prose(seed, 20)}],
    ]
    for i, shard in enumerate(rows):
        write_shard(storage.join(folder, f"s{i}.jsonl").removeprefix("s3://"), shard, fs)
    return folder


def curate(
    input: str,
    store: str,
    run_id: str,
    stages: tuple[str, ...] = ("normalize", "dedup"),
    *,
    stop_after: str | None = None,
    keep_work: bool = False,
    options: dict | None = None,
    index: str | None = None,
) -> str:
    """A curate run as the flow makes it; `stop_after`: its process gives up after that stage (failed);
    `keep_work`: the dedup stage leaves its `_work/` behind (as runs made before it was removed did)."""
    dedup = {"partitions": 2, **({"index": index} if index else {})}  # few partitions: few files
    config = CurateConfig(stages=list(stages), storage={"options": options or {}}, dedup=dedup)
    plan = planning.start_run(planning.plan_curate(input, store, config, run_id))
    shards, summaries = plan.shards, []
    try:
        for name in plan.stages:
            if name == "dedup":
                summary = run_dedup(
                    plan.run.stage(name), run_id, shards, plan.config, SerialExecutor(), keep_work=keep_work
                )
            else:
                summary = get_stage(name).run(plan.run, shards, plan.config, SerialExecutor())
            summaries.append(summary)
            shards = completed_outputs(plan.run.stage(name), summary)
            if name == stop_after:
                return plan.run.dir
        planning.mark_run_complete(plan.run, {"output": summaries[-1]["output"], "stages": summaries}, options)
    finally:
        planning.finish_run(plan.run)
    return plan.run.dir


KILLED = """
import os, sys
from mixforge import planning
from mixforge.config import CurateConfig
planning.start_run(planning.plan_curate(sys.argv[1], sys.argv[2], CurateConfig(stages=["normalize"]), sys.argv[3]))
os._exit(9)  # killed: the lease is never released
"""


def start_and_kill(input: str, store: str, run_id: str) -> None:
    subprocess.run([sys.executable, "-c", KILLED, input, store, run_id], check=False, cwd=REPO, timeout=120)


def cli(capsys, *args: str) -> tuple[int, dict]:
    """The command's exit code and its --json output, checked against its committed JSON Schema."""
    import jsonschema

    code = main([*args, "--json"])
    value = json.loads(capsys.readouterr().out)
    if code == 0:
        schema = json.loads((REPO / "docs" / "schemas" / f"runs-{args[1]}.schema.json").read_text())
        jsonschema.Draft202012Validator(schema).validate(value)
    return code, value


def tree(root) -> dict[str, tuple[int, int]]:
    """Every file under a local folder with its size and mtime."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            st = os.stat(os.path.join(dirpath, f))
            out[os.path.relpath(os.path.join(dirpath, f), root)] = (st.st_size, st.st_mtime_ns)
    return out


def du(path) -> int:
    return sum(size for size, _ in tree(path).values())


def parts(stage_dir) -> dict[str, bytes]:
    return {os.path.basename(p): open(p, "rb").read() for p in sorted(glob.glob(f"{stage_dir}/part-*.parquet"))}


@pytest.fixture
def local_store(tmp_path):
    """A store with one run of each kind: complete (with the scratch an older version left), failed,
    killed, failed but sampled by a mixture version, failed but in the pool's dedup index, running."""
    from mixforge.mixtures.build import build_mixture, spec_for_pool

    store = str(tmp_path / "store")
    inputs = {name: write_input(str(tmp_path / "raw"), name, seed) for seed, name in enumerate("abcdef", 1)}
    curate(inputs["a"], store, "done", keep_work=True)
    curate(inputs["b"], store, "failed", stop_after="normalize")
    start_and_kill(inputs["c"], store, "killed")
    mixed = curate(inputs["d"], store, "mixed", stop_after="normalize")
    build_mixture(spec_for_pool(storage.join(mixed, "normalize"), store, name="from-failed"))
    index = planning.default_dedup_index(store)
    curate(inputs["e"], store, "indexed", stop_after="dedup", index=index)  # died before its completion marker
    plan = planning.plan_curate(inputs["f"], store, CurateConfig(stages=["normalize"]), "live")
    live = planning.start_run(plan)
    yield store
    planning.finish_run(live.run)


def test_list_show_and_clean_a_local_store(local_store, capsys):
    store = local_store
    code, listed = cli(capsys, "runs", "list", "--store", store)
    assert code == 0
    contracts.validate(listed, contracts.RunsList)
    rows = {r["run_id"]: r for r in listed["runs"]}
    assert {k: r["status"] for k, r in rows.items()} == {
        "done": "complete",
        "failed": "failed",
        "killed": "incomplete",
        "mixed": "failed",
        "indexed": "failed",
        "live": "running",
    }
    created = [r["created"] for r in listed["runs"]]
    assert created == sorted(created, reverse=True)  # newest first
    done = rows["done"]
    assert done["stages"] == done["stages_done"] == ["normalize", "dedup"]
    assert (done["docs_in"], done["docs_kept"]) == (4, 3)  # the exact copy went
    assert done["bytes"] == du(os.path.join(store, "runs", "done"))
    assert done["scratch_bytes"] == du(os.path.join(store, "runs", "done", "dedup", "_work")) > 0
    assert rows["failed"]["stages_done"] == ["normalize"] and rows["failed"]["docs_kept"] == 4
    assert rows["killed"]["stages_done"] == [] and rows["killed"]["docs_in"] is None
    assert rows["mixed"]["used_by"] == ["mixture from-failed v0001"]
    assert rows["indexed"]["used_by"] == [f"dedup index {planning.default_dedup_index(store)}"]
    assert rows["live"]["held_by"].startswith(f"process {os.getpid()} ")
    assert rows["failed"]["used_by"] == [] and rows["done"]["held_by"] is None

    code, shown = cli(capsys, "runs", "show", "done", "--store", store)
    assert code == 0
    contracts.validate(shown, contracts.RunsShow)
    run_json = json.loads(open(os.path.join(store, "runs", "done", "_run.json")).read())
    assert shown["manifest"] == run_json and shown["manifest"]["config_hash"]
    assert shown["completion"]["stages"] == ["normalize", "dedup"]
    assert [(s["name"], s["done"], s["stats"]["docs_kept"]) for s in shown["stage_stats"]] == [
        ("normalize", True, 4),
        ("dedup", True, 3),
    ]
    assert shown["lease_state"] == "released" and shown["lease"]["released"] is True
    assert shown["scratch"] == [
        {"uri": os.path.join(store, "runs", "done", "dedup", "_work"), "bytes": done["scratch_bytes"]}
    ]
    assert main(["runs", "show", "nope", "--store", store]) == 2

    # dry run: what would go, with sizes, and not a byte touched
    before = tree(store)
    code, dry = cli(capsys, "runs", "clean", "--store", store, "--dry-run")
    assert code == 0 and tree(store) == before
    contracts.validate(dry, contracts.RunsClean)
    would = {(r["run_id"], r["what"], r["bytes"]) for r in dry["removed"]}
    assert would == {
        ("failed", "run", rows["failed"]["bytes"]),
        ("killed", "run", rows["killed"]["bytes"]),
        ("done", "scratch", done["scratch_bytes"]),
    }
    assert {k["run_id"]: k["status"] for k in dry["kept"]} == {
        "mixed": "failed",
        "indexed": "failed",
        "live": "running",
    }

    done_parts = parts(os.path.join(store, "runs", "done", "dedup"))
    code, cleaned = cli(capsys, "runs", "clean", "--store", store)
    assert code == 0 and not cleaned["dry_run"]
    assert {(r["run_id"], r["what"]) for r in cleaned["removed"]} == {(r, w) for r, w, _ in would}
    assert cleaned["bytes_removed"] == sum(b for _, _, b in would)
    assert sorted(os.listdir(os.path.join(store, "runs"))) == ["done", "indexed", "live", "mixed"]
    assert not os.path.exists(os.path.join(store, "runs", "done", "dedup", "_work"))
    assert parts(os.path.join(store, "runs", "done", "dedup")) == done_parts and done_parts
    code, after = cli(capsys, "runs", "list", "--store", store)
    assert {r["run_id"]: r["status"] for r in after["runs"]}["done"] == "complete"
    # nothing left to clean: a second clean removes nothing
    code, again = cli(capsys, "runs", "clean", "--store", store)
    assert again["removed"] == [] and again["bytes_removed"] == 0


def test_clean_leaves_a_run_that_starts_meanwhile(tmp_path):
    """Each removal takes the run's lease: a run that a live process took after the listing is kept."""
    from mixforge import lease

    store = str(tmp_path / "store")
    curate(write_input(str(tmp_path / "raw"), "x", 7), store, "late", stop_after="normalize")
    removals, kept = run_admin.plan_clean(store)
    assert [(r.run_id, r.what) for r in removals] == [("late", "run")] and kept == []
    held = lease.acquire(os.path.join(store, "runs", "late"), "late", store)  # started between listing and removal
    try:
        done, skipped = run_admin._apply(store, removals, None)
    finally:
        held.release()
    assert done == [] and skipped[0]["run_id"] == "late" and "started meanwhile" in skipped[0]["reason"]
    assert os.path.exists(os.path.join(store, "runs", "late", "normalize", "_stats.json"))


def test_list_and_clean_on_s3(s3_bucket, tmp_path, capsys):
    import s3fs

    root, opts = s3_bucket
    fs = s3fs.S3FileSystem(**opts)
    store = f"{root}/store"
    curate(write_input(root, "in-a", 11, fs), store, "done", keep_work=True, options=opts)
    curate(write_input(root, "in-b", 12, fs), store, "failed", stop_after="normalize", options=opts)
    args = ["--store", store, "--storage-options", json.dumps(opts)]

    code, listed = cli(capsys, "runs", "list", *args)
    assert code == 0
    rows = {r["run_id"]: r for r in listed["runs"]}
    assert {k: r["status"] for k, r in rows.items()} == {"done": "complete", "failed": "failed"}
    objects = {p: i["size"] for p, i in fs.find(store.removeprefix("s3://"), detail=True).items()}
    assert rows["done"]["bytes"] == sum(s for p, s in objects.items() if "/runs/done/" in p)
    work = f"{store}/runs/done/dedup/_work"
    assert rows["done"]["scratch_bytes"] == sum(s for p, s in objects.items() if "/runs/done/dedup/_work/" in p) > 0

    fs.invalidate_cache()
    before = fs.find(store.removeprefix("s3://"), detail=True)
    code, dry = cli(capsys, "runs", "clean", *args, "--dry-run")
    fs.invalidate_cache()
    assert code == 0 and fs.find(store.removeprefix("s3://"), detail=True) == before
    assert {(r["run_id"], r["what"], r["uri"]) for r in dry["removed"]} == {
        ("failed", "run", f"{store}/runs/failed"),
        ("done", "scratch", work),
    }

    code, cleaned = cli(capsys, "runs", "clean", *args)
    assert code == 0 and len(cleaned["removed"]) == 2
    fs.invalidate_cache()
    left = fs.find(f"{store}/runs".removeprefix("s3://"))
    assert left and all("/runs/done/" in p for p in left) and not any("/_work/" in p for p in left)
    assert any(p.endswith("/runs/done/dedup/part-00000.parquet") for p in left)
    assert [r.run_id for r in run_admin.list_runs(store, opts)] == ["done"]


def test_dedup_scratch_goes_when_the_stage_is_done_and_resume_and_the_index_still_work(tmp_path):
    """`dedup/_work/` is removed once outputs, stats and the index commit are written; the index lives
    in its own folder; a rerun of the finished stage recomputes nothing; a run stopped between its stats
    and its commit still resumes from its work files."""
    index = IndexLayout(str(tmp_path / "index" / "dedup"))
    config = CurateConfig(stages=["dedup"], dedup={"index": index.uri, "partitions": 2})

    def contract_shards(name: str, seed: int) -> list[tuple[int, str]]:
        store = str(tmp_path / f"{name}-norm")
        run_dir = curate(write_input(str(tmp_path / "raw"), name, seed), store, name, ("normalize",))
        return [(i, p) for i, p in enumerate(sorted(glob.glob(f"{run_dir}/normalize/part-*.parquet")))]

    night1, night2 = contract_shards("night1", 31), contract_shards("night2", 31)  # night 2: the same texts
    one = StageLayout(str(tmp_path / "night1-dedup"))
    first = run_dedup(one, "night1", night1, config, SerialExecutor())
    assert not os.path.exists(work_dir(one)) and first["index"]["segment"] == 1
    assert os.listdir(index.uri) and not any("_work" in p for p in glob.glob(f"{index.uri}/**", recursive=True))

    # night 2 deduplicates against night 1 through the index alone (night 1's _work is gone)
    two = StageLayout(str(tmp_path / "night2-dedup"))
    second = run_dedup(two, "night2", night2, config, SerialExecutor())
    assert second["docs_in"] == 4 and second["docs_kept"] == 0 and second["dedup"]["duplicates_of_indexed"] == 4
    assert not os.path.exists(work_dir(two)) and index.segments() == [1, 2]

    # a rerun of the finished stage: answered from _stats.json and the commit marker, nothing rewritten
    stamp = tree(one.dir)
    again = run_dedup(one, "night1", night1, config, SerialExecutor())
    assert tree(one.dir) == stamp and index.segments() == [1, 2]
    assert again["shards_skipped"] == 2 and again["index"] == first["index"]
    assert {k: again[k] for k in ("docs_in", "docs_kept", "dedup")} == {
        k: first[k] for k in ("docs_in", "docs_kept", "dedup")
    }

    # stopped after its stats, before its commit: the work files are still there and the run resumes
    three = StageLayout(str(tmp_path / "night3-dedup"))
    night3 = contract_shards("night3", 41)
    stopped = run_dedup(three, "night3", night3, config, SerialExecutor(), keep_work=True)
    seg = stopped["index"]["segment"]
    os.remove(index.committed(seg))
    os.remove(DedupLayout(three.dir).indexed)
    reference = parts(three.dir)
    resumed = run_dedup(three, "night3", night3, config, SerialExecutor())
    assert resumed["index"]["segment"] == seg and index.segments() == [1, 2, seg]
    assert "night3" in index.committed_runs() and not os.path.exists(work_dir(three))
    assert parts(three.dir) == reference  # byte-identical


def test_runs_subcommands_have_help_description_and_an_example(capsys):
    for action in ("list", "show", "clean", "unlock"):
        with pytest.raises(SystemExit):
            main(["runs", action, "--help"])
        text = capsys.readouterr().out
        assert "example:\n  mixforge runs " + action in text, text
        assert text.split("\n\n")[1].strip(), text  # the description after the usage
