"""Input discovery says what it left out and why (storage.discover_inputs)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time

import pytest

from mixforge import storage
from mixforge.storage import Discovery, discover_inputs, discover_shards


def touch(path, data: bytes = b"{}\n"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def messy(tmp_path):
    """A folder as users leave them: shards in several cases and depths, links, loops, notes, outputs."""
    root = tmp_path / "crawl"
    touch(root / "a.jsonl")
    touch(root / "B.JSONL")
    touch(root / "c.Parquet")
    touch(root / "sub" / "deeper" / "d.jsonl.zst")
    touch(root / "sub" / "e.Jsonl.Gz")
    touch(root / "notes.txt")
    touch(root / "README")
    touch(root / "dump.json.bz2")
    touch(root / "_meta" / "x.parquet")  # metadata folders: outputs, never inputs
    touch(root / "_stats.json")
    touch(root / ".tmp-x.parquet")
    (root / "sub" / "loop").symlink_to("..")  # back to an ancestor
    (root / "self").symlink_to("self")  # a link to itself (ELOOP)
    (root / "gone.jsonl").symlink_to(root / "missing.jsonl")
    (root / "alias.jsonl").symlink_to(root / "a.jsonl")  # the same file twice
    os.link(root / "c.Parquet", root / "hard.parquet")
    os.mkfifo(root / "pipe.jsonl")
    outside = touch(tmp_path / "elsewhere" / "f.jsonl")
    (root / "linked").symlink_to(outside.parent)  # a folder reached through a symlink is listed
    return root


def reasons(found: Discovery) -> dict[str, str]:
    return {
        os.path.basename(s["uri"]) if "/sub/" not in s["uri"] else "sub/" + s["uri"].split("/sub/")[1]: s["reason"]
        for s in found.skipped
    }


def test_a_folder_reports_every_entry_it_leaves_out(messy):
    started = time.perf_counter()
    found = discover_inputs(str(messy))
    assert time.perf_counter() - started < 5  # loops neither hang nor crash the listing
    assert [os.path.relpath(s.uri, messy) for s in found.shards] == [
        "B.JSONL",
        "a.jsonl",
        "c.Parquet",
        "linked/f.jsonl",
        "sub/deeper/d.jsonl.zst",
        "sub/e.Jsonl.Gz",
    ]
    assert all(s.size == 3 for s in found.shards)
    got = reasons(found)
    assert got.pop("notes.txt").startswith("not a shard format (.txt; expected .parquet, .jsonl")
    assert got.pop("README").startswith("not a shard format (no extension")
    assert got.pop("dump.json.bz2").startswith("not a shard format (.json.bz2")
    assert got == {
        "sub/loop": f"symlink loop (points back to {messy})",
        "self": "symlink loop",
        "gone.jsonl": "broken symlink",
        "alias.jsonl": f"same file as {messy}/a.jsonl (read once)",
        "hard.parquet": f"same file as {messy}/c.Parquet (read once)",
        "pipe.jsonl": "not a regular file",
    }
    assert found.metadata_skipped == 3  # _meta/ (once), _stats.json, .tmp-x.parquet
    assert discover_shards(str(messy)) == found.shards
    summary = found.as_dict()
    assert summary["shards"] == 6 and summary["metadata_skipped"] == 3 and len(summary["skipped"]) == 9
    assert json.loads(json.dumps(summary)) == summary
    assert [s["uri"] for s in found.skipped] == sorted(s["uri"] for s in found.skipped)


def test_globs_report_what_they_match_and_leave_out(messy):
    found = discover_inputs(str(messy / "*"))
    assert [os.path.basename(s.uri) for s in found.shards] == ["B.JSONL", "a.jsonl", "c.Parquet"]
    got = reasons(found)
    assert got["sub"].startswith("a directory: a glob does not descend into folders")
    assert got["linked"].startswith("a directory")
    assert got["self"] == "symlink loop" and got["gone.jsonl"] == "broken symlink"
    assert got["notes.txt"].startswith("not a shard format (.txt")
    assert "loop" not in str(found.skipped).replace("symlink loop", "")  # sub/loop is beyond this glob's reach

    deep = discover_inputs(str(messy / "**" / "*.jsonl*"))
    assert [os.path.relpath(s.uri, messy) for s in deep.shards] == [
        "a.jsonl",
        "linked/f.jsonl",
        "sub/deeper/d.jsonl.zst",
    ]
    got = reasons(deep)
    assert got["sub/loop"] == f"symlink loop (points back to {messy})"
    assert got["gone.jsonl"] == "broken symlink" and got["pipe.jsonl"] == "not a regular file"
    assert got["alias.jsonl"].startswith("same file as")
    assert "notes.txt" not in got  # the pattern did not ask for it

    assert [os.path.basename(s.uri) for s in discover_inputs(str(messy / "*.JSONL")).shards] == ["B.JSONL"]


def test_missing_inputs_and_empty_globs_raise_naming_the_pattern(messy, tmp_path):
    for pattern in (str(tmp_path / "nothing-here"), str(messy / "*.avro"), str(tmp_path / "no-dir" / "*.jsonl")):
        with pytest.raises(FileNotFoundError, match="no input found at '" + pattern.replace("*", r"\*")):
            discover_inputs(pattern)


def test_a_named_file_is_checked_too(messy):
    assert [s.uri for s in discover_inputs(str(messy / "B.JSONL")).shards] == [str(messy / "B.JSONL")]
    assert discover_inputs(str(messy / "_stats.json")).skipped[0]["reason"].startswith("not a shard format (.json")
    broken = discover_inputs(str(messy / "gone.jsonl"))
    assert broken.shards == [] and broken.skipped == [{"uri": str(messy / "gone.jsonl"), "reason": "broken symlink"}]
    assert discover_inputs(str(messy / "alias.jsonl")).shards[0].size == 3  # a link named on purpose is read


def test_unreadable_entries_are_reported():
    """Modes 000 stop an unprivileged user; root reads everything, so as root a forked child drops to `nobody`."""
    base = tempfile.mkdtemp(prefix="mixforge-perm-", dir="/tmp")
    root = os.path.join(base, "in")
    try:
        os.chmod(base, 0o755)
        os.makedirs(os.path.join(root, "locked"))
        for name in ("ok.jsonl", "private.jsonl", "locked/x.jsonl"):
            with open(os.path.join(root, name), "w") as f:
                f.write("{}\n")
            os.chmod(os.path.join(root, name), 0o644)
        os.chmod(root, 0o755)
        os.chmod(os.path.join(root, "private.jsonl"), 0o000)
        os.chmod(os.path.join(root, "locked"), 0o000)
        if os.geteuid() == 0:
            found = _discover_as_nobody(root)
        else:
            discovery = discover_inputs(root)
            found = discovery.as_dict() | {"uris": [s.uri for s in discovery.shards]}
        assert found["uris"] == [f"{root}/ok.jsonl"]
        assert found["skipped"] == [
            {"uri": f"{root}/locked", "reason": "unreadable: permission denied"},
            {"uri": f"{root}/private.jsonl", "reason": "unreadable: permission denied"},
        ]
    finally:
        os.chmod(os.path.join(root, "locked"), 0o755)
        shutil.rmtree(base)


def _discover_as_nobody(root: str) -> dict:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no Python-level cleanup, only os calls and one write
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            found = discover_inputs(root)
            os.write(write, json.dumps(found.as_dict() | {"uris": [s.uri for s in found.shards]}).encode())
        except BaseException as e:  # noqa: BLE001 - report anything to the parent
            os.write(write, json.dumps({"error": repr(e)}).encode())
        finally:
            os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 1 << 16):
        chunks.append(chunk)
    os.close(read)
    os.waitpid(pid, 0)
    result = json.loads(b"".join(chunks))
    assert "error" not in result, result
    return result


def test_s3_prefix_finds_upper_case_extensions_and_reports_the_rest(s3_bucket):
    import s3fs

    root, opts = s3_bucket
    fs = s3fs.S3FileSystem(**opts)
    bucket = root.removeprefix("s3://")
    for key in ("in/A.JSONL", "in/b.jsonl.zst", "in/deep/C.PARQUET", "in/notes.txt", "in/_done/0.json", "in/.keep"):
        fs.pipe_file(f"{bucket}/{key}", b"{}\n")
    found = discover_inputs(f"{root}/in/", opts)
    assert [s.uri for s in found.shards] == [
        f"{root}/in/A.JSONL",
        f"{root}/in/b.jsonl.zst",
        f"{root}/in/deep/C.PARQUET",
    ]
    assert [s.size for s in found.shards] == [3, 3, 3]
    assert found.skipped == [
        {
            "uri": f"{root}/in/notes.txt",
            "reason": "not a shard format (.txt; expected .parquet, .jsonl, .jsonl.gz, .jsonl.zst)",
        }
    ]
    assert found.metadata_skipped == 2
    glob = discover_inputs(f"{root}/in/*", opts)
    assert [s.uri for s in glob.shards] == [f"{root}/in/A.JSONL", f"{root}/in/b.jsonl.zst"]
    assert {s["uri"]: s["reason"][:12] for s in glob.skipped} == {
        f"{root}/in/deep": "a directory:",
        f"{root}/in/notes.txt": "not a shard ",
    }
    assert [s.uri for s in discover_inputs(f"{root}/in/A.JSONL", opts).shards] == [f"{root}/in/A.JSONL"]
    with pytest.raises(FileNotFoundError, match="no input found at"):
        discover_inputs(f"{root}/missing/", opts)
    with pytest.raises(FileNotFoundError, match="the glob matches nothing"):
        discover_inputs(f"{root}/in/*.avro", opts)


def test_is_shard_ignores_case():
    assert storage.is_shard("x.JSONL") and storage.is_shard("x.Parquet") and storage.is_shard("x.jsonl.ZST")
    assert not storage.is_shard("x.txt") and not storage.is_shard("x.json")
