"""Ids unique across a run (mixforge.ids): an id held by several normalize shards is kept in the
lowest-index one and dropped, with reason `duplicate_id`, from the others.

The steps without Ray over real normalize outputs (run_shard), a kill at every point of the
rewrite, S3 (moto), and the real curate flow (Prefect test harness, local Ray).
"""

from __future__ import annotations

import json
import os
import shutil
import zlib

import pyarrow.parquet as pq
import pytest

from mixforge import ids
from mixforge import schema as S
from mixforge.runner import ShardJob, run_shard
from mixforge.runs import RunLayout, StageLayout
from mixforge.stages.normalize import Normalize
from tests.helpers import prose, write_shard


def rows(prefix: str, id_list: list[str]) -> list[dict]:
    return [
        # zlib.crc32, not hash(): str hashes change with every interpreter (PYTHONHASHSEED), and so would the texts
        {
            "id": i,
            "text": f"{prefix} {i}. " + prose(zlib.crc32(f"{prefix}/{i}".encode()) % 10_000, 3),
            "source": prefix,
        }
        for i in id_list
    ]


def normalized(
    root: str, shards: list[list], fs=None, storage_options=None
) -> tuple[StageLayout, list[tuple[int, str]]]:
    """Write each shard's rows as JSONL and run the real normalize stage over them (no Ray)."""
    layout = RunLayout(f"{root}/store", "r1").stage("normalize")
    inputs = []
    for i, shard_rows in enumerate(shards):
        uri = f"{root}/raw/shard-{i}.jsonl"
        write_shard(uri.removeprefix("s3://"), shard_rows, fs)
        stats = run_shard(Normalize(), ShardJob(i, uri, layout), storage_options=storage_options)
        assert not stats["quarantined"]
        inputs.append((i, uri))
    return layout, inputs


def snapshot(folder: str, fs=None) -> dict[str, bytes]:
    """Every file under `folder` (the id check's working files included), by relative path."""
    if fs is not None:
        fs.invalidate_cache()
        return {p[len(folder.removeprefix("s3://")) :]: fs.cat_file(p) for p in fs.find(folder)}
    out = {}
    for dirpath, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(dirpath, name)
            out[os.path.relpath(path, folder)] = open(path, "rb").read()
    return out


def ids_of(uri: str, storage_options=None) -> list[str]:
    from mixforge.shards import read_documents

    return [
        i
        for t in read_documents(uri, columns=[S.ID], storage_options=storage_options)
        for i in t.column(S.ID).to_pylist()
    ]


def removed_of(layout: StageLayout, shard: int) -> list[dict]:
    path = layout.removed(shard)
    return pq.read_table(path).to_pylist() if os.path.exists(path) else []


def marker(layout: StageLayout, shard: int) -> dict:
    return json.loads(open(layout.done(shard)).read())


def test_no_duplicates_rewrites_nothing(tmp_path):
    layout, inputs = normalized(str(tmp_path), [rows("a", ["1", "2"]), rows("b", ["3", "4"]), rows("c", ["5"])])
    before = snapshot(layout.dir)
    result = ids.check_unique_ids(layout, inputs)
    after = snapshot(layout.dir)
    assert {k: v for k, v in after.items() if not k.startswith("_idcheck")} == before  # not one byte changed
    assert result["duplicate_ids"] == 0 and result["docs_dropped"] == 0 and result["shards_rewritten"] == []
    assert result["rounds"] == 1 and result["partitions"] == 1 and result["shards"] == 3
    assert not any("/dropped/" in k or "/pending/" in k for k in after)
    # A second call finds the round done and reads only its markers.
    assert ids.check_unique_ids(layout, inputs)["rounds_run"] == []
    assert snapshot(layout.dir) == after


@pytest.mark.parametrize("partitions", [1, 4])
def test_ids_in_two_and_three_shards_are_kept_by_the_lowest_index(tmp_path, partitions):
    shards = [
        rows("a", ["x", "y", "a1"]),
        rows("b", ["y", "b1", "z"]),
        rows("c", ["y", "x", "c1", "z"]) + [{"id": "c-empty", "text": "   "}],
    ]  # one normalize drop already
    layout, inputs = normalized(str(tmp_path), shards)
    before = {i: marker(layout, i) for i in range(3)}
    result = ids.check_unique_ids(layout, inputs, partitions=partitions)

    assert ids_of(layout.part(0)) == ["x", "y", "a1"]
    assert ids_of(layout.part(1)) == ["b1", "z"]  # y: kept in 0
    assert ids_of(layout.part(2)) == ["c1"]  # y, x: kept in 0; z: kept in 1
    all_ids = [i for s in range(3) for i in ids_of(layout.part(s))]
    assert len(all_ids) == len(set(all_ids))
    assert result["duplicate_ids"] == 3 and result["docs_dropped"] == 4 and result["shards_rewritten"] == [1, 2]

    assert removed_of(layout, 0) == []
    (b_y,) = removed_of(layout, 1)
    assert (b_y["id"], b_y[S.DROP_REASON]) == ("y", "duplicate_id")
    assert b_y["text"].startswith("b y.")  # the dropped row itself, whole
    assert inputs[1][1] in b_y[S.DROP_DETAIL] and "shard 1" in b_y[S.DROP_DETAIL]
    assert f"id also in shard 0 ({inputs[0][1]}), which keeps it" in b_y[S.DROP_DETAIL]
    c_removed = removed_of(layout, 2)
    assert [(r["id"], r[S.DROP_REASON]) for r in c_removed] == [  # appended after what normalize dropped
        ("c-empty", "empty_text"),
        ("y", "duplicate_id"),
        ("x", "duplicate_id"),
        ("z", "duplicate_id"),
    ]
    assert "output row 0:" in c_removed[1][S.DROP_DETAIL] and "output row 1:" in c_removed[2][S.DROP_DETAIL]
    assert f"shard 1 ({inputs[1][1]})" in c_removed[3][S.DROP_DETAIL]

    for shard, dropped in ((0, 0), (1, 1), (2, 3)):
        m = marker(layout, shard)
        assert m["docs_in"] == before[shard]["docs_in"]
        assert m["docs_kept"] == before[shard]["docs_kept"] - dropped == pq.read_metadata(layout.part(shard)).num_rows
        assert m["docs_in"] == m["docs_kept"] + sum(m["docs_dropped"].values())
        assert m["docs_dropped"].get("duplicate_id", 0) == dropped
        dup_chars = sum(len(r["text"]) for r in removed_of(layout, shard) if r[S.DROP_REASON] == "duplicate_id")
        assert m["chars_dropped"].get("duplicate_id", 0) == dup_chars
        assert m["chars_kept"] == before[shard]["chars_kept"] - dup_chars
        assert (m == before[shard]) == (dropped == 0)  # a shard that drops nothing keeps its marker as it was


def test_ids_are_compared_as_strings_not_only_by_hash(tmp_path):
    """Two different ids with the same 64-bit hash (Thue-Morse strings: a known collision of
    polynomial hashes modulo 2^64) are not duplicates."""
    import pyarrow as pa

    from mixforge.dedup.hashing import hash_strings

    thue_morse = "".join("ab"[bin(i).count("1") % 2] for i in range(1024))
    complement = thue_morse.translate(str.maketrans("ab", "ba"))
    assert thue_morse != complement and len(set(hash_strings(pa.array([thue_morse, complement])).tolist())) == 1
    layout, inputs = normalized(str(tmp_path), [rows("a", [thue_morse, "x"]), rows("b", [complement, "x"])])
    result = ids.check_unique_ids(layout, inputs)
    assert result["duplicate_ids"] == 1 and result["docs_dropped"] == 1
    assert ids_of(layout.part(1)) == [complement]


def test_summary_is_restated_from_the_updated_markers(tmp_path):
    from mixforge.runner import summarize_stage

    layout, inputs = normalized(
        str(tmp_path), [rows("a", ["x", "y"]), rows("b", ["x", "b1"]) + [{"id": "e", "text": ""}]]
    )
    shard_stats = [marker(layout, i) for i in range(2)]
    summary = summarize_stage("normalize", layout.dir, shard_stats, 1.5)
    summary["shard_results"] = [
        {k: s.get(k) for k in ("index", "input", "quarantined", "docs_in", "docs_kept", "skipped")}
        for s in shard_stats
    ]
    summary["extra"] = "kept as it was"
    ids.check_unique_ids(layout, inputs)
    restated = ids.restate_summary(summary, layout)
    assert restated["docs_in"] == summary["docs_in"] == 5
    assert restated["docs_kept"] == 3 and restated["docs_dropped"] == {"duplicate_id": 1, "empty_text": 1}
    assert sorted((f["reason"], f["docs"]) for f in restated["funnel"]) == [("duplicate_id", 1), ("empty_text", 1)]
    assert restated["funnel"][-1]["docs_remaining"] == 3
    assert restated["counters"]["duplicate_ids_across_shards"] == 1
    assert [r["docs_kept"] for r in restated["shard_results"]] == [2, 1]
    assert restated["extra"] == "kept as it was" and restated["seconds"] == 1.5


def test_a_shard_joining_on_a_later_round_drops_what_the_run_already_holds(tmp_path):
    """Shard 1 was quarantined when the run was first checked; on a rerun it joins. It has the
    lowest index among the holders of `x`, yet drops it: checked shards never change."""
    layout, inputs = normalized(
        str(tmp_path), [rows("a", ["a1", "y"]), rows("b", ["x", "y", "b1"]), rows("c", ["x", "c1"])]
    )
    first = [inputs[0], inputs[2]]
    ids.check_unique_ids(layout, first)
    checked = {
        k: v
        for k, v in snapshot(layout.dir).items()
        if not k.startswith("_idcheck") and ("00000" in k or "00002" in k)
    }
    result = ids.check_unique_ids(layout, inputs)
    assert result["rounds"] == 2 and result["rounds_run"] == [2] and result["shards"] == 3
    assert ids_of(layout.part(1)) == ["b1"]
    details = {r["id"]: r[S.DROP_DETAIL] for r in removed_of(layout, 1)}
    assert "shard 2" in details["x"] and "shard 0" in details["y"]
    assert {k: v for k, v in snapshot(layout.dir).items() if k in checked} == checked


def _kill_states():
    """A kill during step 3 of shard `s`: which of its files already hold their new bytes."""
    return {
        "before the dropped rows": {
            "dropped": False,
            "pending": False,
            "part": False,
            "removed": False,
            "done": False,
        },
        "after the dropped rows": {"dropped": True, "pending": False, "part": False, "removed": False, "done": False},
        "after pending": {"dropped": True, "pending": True, "part": False, "removed": False, "done": False},
        "after the kept rows": {"dropped": True, "pending": True, "part": True, "removed": False, "done": False},
        "after _removed": {"dropped": True, "pending": True, "part": True, "removed": True, "done": False},
        "before its marker": {"dropped": True, "pending": True, "part": True, "removed": True, "done": True},
    }


@pytest.mark.parametrize("state", list(_kill_states()))
def test_kill_anywhere_in_the_rewrite_then_rerun_gives_the_same_bytes(tmp_path, state):
    layout, inputs = normalized(
        str(tmp_path),
        [rows("a", ["x", "y"]), rows("b", ["y", "b1"]) + [{"id": "e", "text": ""}], rows("c", ["x", "y", "c1"])],
    )
    original = snapshot(layout.dir)
    ids.check_unique_ids(layout, inputs)
    finished = snapshot(layout.dir)

    # Rebuild the store as a kill would leave it: step 3 of shard 2 part-way, its round unfinished.
    work = ids.IdCheckLayout(layout.dir)
    new_files = {
        "dropped": work.dropped(1, 2),
        "pending": work.pending(1, 2),
        "part": layout.part(2),
        "removed": layout.removed(2),
        "done": layout.done(2),
    }
    for what, written in _kill_states()[state].items():
        path = new_files[what]
        rel = os.path.relpath(path, layout.dir)
        if not written:
            if rel in original:
                open(path, "wb").write(original[rel])
            else:
                os.remove(path)
    os.remove(work.applied(1, 2))
    os.remove(work.round_done(1))

    result = ids.check_unique_ids(layout, inputs)
    assert result["rounds_run"] == [1]
    assert snapshot(layout.dir) == finished


def test_rerun_after_losing_the_last_markers_gives_the_same_bytes(tmp_path):
    layout, inputs = normalized(str(tmp_path), [rows("a", ["x", "y"]), rows("b", ["y"]), rows("c", ["x", "c1"])])
    ids.check_unique_ids(layout, inputs, partitions=3)
    finished = snapshot(layout.dir)
    work = ids.IdCheckLayout(layout.dir)
    os.remove(work.round_done(1))
    for shard in (1, 2):
        os.remove(work.applied(1, shard))
    for p in range(3):
        os.remove(work.drops_done(1, p))
    assert ids.check_unique_ids(layout, inputs)["rounds_run"] == [1]
    assert snapshot(layout.dir) == finished
    # Losing the whole working folder after the rewrite: the ids are unique now, so nothing changes.
    shutil.rmtree(os.path.join(layout.dir, "_idcheck"))
    again = ids.check_unique_ids(layout, inputs)
    assert again["docs_dropped"] == 0
    assert {k: v for k, v in snapshot(layout.dir).items() if not k.startswith("_idcheck")} == {
        k: v for k, v in finished.items() if not k.startswith("_idcheck")
    }


def test_partitions_follow_the_id_bytes(tmp_path):
    layout, inputs = normalized(str(tmp_path), [rows("a", ["x", "y"]), rows("b", ["z"])])
    assert ids.estimate_partitions(layout, [0, 1]) == 1
    assert ids.estimate_partitions(layout, [0, 1], docs={0: 2, 1: 1}) == 1
    huge = ids.estimate_partitions(layout, [0, 1], docs={0: 40_000_000, 1: 40_000_000})  # GiBs of id rows
    assert 4 < huge < 64
    assert abs(ids.estimate_partitions(layout, [0, 1], docs={0: 80_000_000, 1: 80_000_000}) - 2 * huge) <= 1
    assert ids.estimate_partitions(layout, [0, 1], docs={0: 10**13, 1: 0}) == ids.MAX_PARTITIONS
    assert ids.estimate_partitions(layout, []) == 1


def test_on_s3(s3_bucket):
    import s3fs

    root, opts = s3_bucket
    fs = s3fs.S3FileSystem(**opts)
    layout, inputs = normalized(
        root, [rows("a", ["x", "y"]), rows("b", ["y", "b1"]), rows("c", ["x"])], fs=fs, storage_options=opts
    )
    original = snapshot(layout.dir, fs)
    result = ids.check_unique_ids(layout, inputs, opts, partitions=2)
    assert result["docs_dropped"] == 2 and result["shards_rewritten"] == [1, 2]
    assert (
        ids_of(layout.part(0), opts) == ["x", "y"]
        and ids_of(layout.part(1), opts) == ["b1"]
        and ids_of(layout.part(2), opts) == []
    )
    with fs.open(layout.removed(1)) as f:
        (row,) = pq.read_table(f).to_pylist()
    assert row["drop_reason"] == "duplicate_id" and inputs[0][1] in row["drop_detail"]
    finished = snapshot(layout.dir, fs)
    # A kill after shard 1's kept rows were rewritten: its _removed and _done as before, no markers.
    work = ids.IdCheckLayout(layout.dir)
    fs.rm([work.applied(1, 1), work.round_done(1), layout.removed(1)])
    fs.pipe_file(layout.done(1), original["/_done/part-00001.json"])
    ids.check_unique_ids(layout, inputs, opts)
    assert snapshot(layout.dir, fs) == finished


# ---------------------------------------------------------------------------- the curate flow


def flow_inputs(raw) -> None:
    """Three JSONL shards whose explicit ids repeat across shards (texts differ), plus one
    exact text copy under its own id (dedup's business, not the id check's)."""
    raw.mkdir()
    a = rows("a", [f"a-{i}" for i in range(10)] + ["shared-1", "shared-2"])
    b = rows("b", [f"b-{i}" for i in range(10)] + ["shared-1"])
    c = rows("c", [f"c-{i}" for i in range(10)] + ["shared-1", "shared-2"]) + [
        {"id": "c-empty", "text": " "},
        {"id": "c-copy", "text": a[0]["text"]},
    ]
    for name, shard in (("a", a), ("b", b), ("c", c)):
        write_shard(str(raw / f"{name}.jsonl"), shard)


def pool_ids(folder) -> list[str]:
    return [
        i
        for p in sorted(folder.glob("part-*.parquet"))
        for i in pq.read_table(p, columns=["id"]).column("id").to_pylist()
    ]


@pytest.mark.usefixtures("ray_local", "prefect_harness")
def test_curate_normalize_drops_ids_repeated_across_shards(tmp_path):
    from flows.curate import curate
    from mixforge.config import CurateConfig

    flow_inputs(tmp_path / "raw")
    config = CurateConfig(stages=["normalize"])
    summary = curate(input=str(tmp_path / "raw"), output=str(tmp_path / "store"), config=config)
    (stage,) = summary["stages"]
    assert stage["docs_in"] == 37
    assert stage["docs_dropped"] == {"duplicate_id": 3, "empty_text": 1}
    assert stage["docs_kept"] == 33 == stage["docs_in"] - sum(stage["docs_dropped"].values())
    assert stage["id_check"]["duplicate_ids"] == 2 and stage["id_check"]["shards_rewritten"] == [1, 2]
    assert {f["reason"]: f["docs"] for f in stage["funnel"]} == {"duplicate_id": 3, "empty_text": 1}
    assert stage["funnel"][-1]["docs_remaining"] == 33

    out = tmp_path / "store" / "runs" / summary["run_id"] / "normalize"
    kept = pool_ids(out)
    assert len(kept) == len(set(kept)) == 33 and {"shared-1", "shared-2"} <= set(kept)
    stats = json.loads((out / "_stats.json").read_text())
    assert (
        stats["docs_kept"] == 33
        and stats["docs_dropped"] == stage["docs_dropped"]
        and stats["id_check"]["docs_dropped"] == 3
    )
    removed = [r for p in sorted((out / "_removed").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    dups = sorted(
        (r["id"], r[S.DROP_DETAIL].split(" (shard ")[1][0]) for r in removed if r[S.DROP_REASON] == "duplicate_id"
    )
    assert dups == [("shared-1", "1"), ("shared-1", "2"), ("shared-2", "2")]
    for shard in range(3):  # every shard reconciles
        m = json.loads((out / "_done" / f"part-{shard:05d}.json").read_text())
        assert m["docs_in"] == m["docs_kept"] + sum(m["docs_dropped"].values())

    # Resuming the run changes nothing, and reports the same counts.
    files = snapshot(str(out))
    again = curate(input=str(tmp_path / "raw"), output=str(tmp_path / "store"), config=config)
    (stage2,) = again["stages"]
    assert again["run_id"] == summary["run_id"] and again["resumed"]
    assert {k: stage2[k] for k in ("docs_in", "docs_kept", "docs_dropped", "funnel")} == {
        k: stage[k] for k in ("docs_in", "docs_kept", "docs_dropped", "funnel")
    }
    assert stage2["id_check"]["rounds_run"] == []
    assert {k: v for k, v in snapshot(str(out)).items() if k != "_stats.json"} == {
        k: v for k, v in files.items() if k != "_stats.json"
    }


@pytest.mark.usefixtures("ray_local", "prefect_harness")
def test_curate_normalize_then_dedup_pool_has_unique_ids(tmp_path):
    from flows.curate import curate
    from mixforge.config import CurateConfig

    flow_inputs(tmp_path / "raw")
    summary = curate(
        input=str(tmp_path / "raw"),
        output=str(tmp_path / "store"),
        config=CurateConfig(stages=["normalize", "dedup"], dedup={"exact": {"enabled": True}}),
    )
    normalize, dedup = summary["stages"]
    assert normalize["docs_kept"] == 33 and normalize["docs_dropped"]["duplicate_id"] == 3
    assert dedup["docs_in"] == normalize["docs_kept"]  # counts reconcile from stage to stage
    assert dedup["docs_in"] == dedup["docs_kept"] + sum(dedup["docs_dropped"].values())
    assert dedup["docs_dropped"].get("exact_duplicate") == 1  # the text copy still reached dedup
    pool = pool_ids(tmp_path / "store" / "runs" / summary["run_id"] / "dedup")
    assert len(pool) == len(set(pool)) == dedup["docs_kept"] == 32
