"""storage.atomic_open on local disk: whole files or nothing, and writeback started while writing."""

from __future__ import annotations

import os
import sys

import pytest

from mixforge import storage


def test_large_write_starts_writeback_as_it_goes_and_lands_whole(tmp_path, monkeypatch):
    started: list[int] = []
    real = storage._start_writeback
    monkeypatch.setattr(storage, "_start_writeback", lambda fd: started.append(os.fstat(fd).st_size))
    chunk = os.urandom(1 << 20)
    target = tmp_path / "out.bin"
    with storage.atomic_open(str(target)) as f:
        for _ in range(20):
            f.write(chunk)
        assert not target.exists()  # nothing visible before the file is complete
    assert target.read_bytes() == chunk * 20
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]  # no temp file left
    # every WRITEBACK_BYTES written hands the kernel what it already has (20 MiB / 8 MiB: twice)
    assert len(started) == 20 * (1 << 20) // storage.WRITEBACK_BYTES
    assert started == sorted(started) and started[0] >= storage.WRITEBACK_BYTES - (1 << 20)
    if real is not None:
        with open(target, "rb+") as f:
            assert real(f.fileno()) == 0  # the real sync_file_range accepts a regular file


def test_small_write_never_starts_writeback(tmp_path, monkeypatch):
    started: list[int] = []
    monkeypatch.setattr(storage, "_start_writeback", lambda fd: started.append(fd))
    storage.write_bytes(str(tmp_path / "small.json"), b"{}")
    assert (tmp_path / "small.json").read_bytes() == b"{}" and started == []


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), storage.atomic_open(str(target)) as f:
        f.write(b"x" * (9 << 20))
        raise RuntimeError("writer failed")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range is Linux's")
def test_sync_file_range_is_found_on_linux():
    assert storage._load_sync_file_range() is not None
