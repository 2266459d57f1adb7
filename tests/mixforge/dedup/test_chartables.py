"""The kernel's per-codepoint tables come from a disk cache only when it holds what this Arrow gives."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from mixforge.dedup import chartables as C


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    C.char_tables.cache_clear()
    yield tmp_path
    C.char_tables.cache_clear()


def test_tables_cached_on_disk_equal_a_fresh_build(cache_dir):
    built = C.build_tables()
    lower, flags = C.char_tables()  # builds and writes the cache
    (path,) = cache_dir.glob("chartables-*.npz")
    assert path.name == f"chartables-{C.cache_key()}.npz"
    C.char_tables.cache_clear()
    loaded = C.char_tables()  # a new process's view: read from disk
    for got in ((lower, flags), loaded):
        assert np.array_equal(got[0], built[0]) and np.array_equal(got[1], built[1])
    assert loaded[0].dtype == np.int32 and loaded[1].dtype == np.uint8
    assert loaded[0][ord("Ⱥ")] == ord("ⱥ") and loaded[1][0xA0] & C.WS and loaded[1][0x663] & C.DIGIT


def test_a_stale_or_broken_cache_is_rebuilt(cache_dir):
    lower, flags = C.build_tables()
    path = cache_dir / f"chartables-{C.cache_key()}.npz"
    # Another Arrow's tables under this name: a case mapping or a punctuation flag missing (in the densely
    # checked range), a mapping or a flag this Arrow does not have (anywhere: every one of those is checked).
    lower_missing, lower_extra, flags_missing, flags_extra = lower.copy(), lower.copy(), flags.copy(), flags.copy()
    lower_missing[ord("Ⱥ")] = ord("Ⱥ")
    lower_extra[0x1F600] = 0x1F601
    flags_missing[ord("«")] = 0
    flags_extra[0x1F600] = C.PUNCT
    for bad_lower, bad_flags in (
        (lower_missing, flags),
        (lower_extra, flags),
        (lower, flags_missing),
        (lower, flags_extra),
    ):
        np.savez(path, lower=bad_lower, flags=bad_flags)
        assert not C.agrees_with_arrow(bad_lower, bad_flags)
        C.char_tables.cache_clear()
        got = C.char_tables()
        assert np.array_equal(got[0], lower) and np.array_equal(got[1], flags)
        with np.load(path) as z:  # rewritten with the right tables
            assert np.array_equal(z["lower"], lower) and np.array_equal(z["flags"], flags)
    path.write_bytes(b"not an npz file")
    C.char_tables.cache_clear()
    assert np.array_equal(C.char_tables()[1], flags)
    np.savez(path, lower=lower.astype(np.int64), flags=flags)  # wrong dtype: not used as it is
    C.char_tables.cache_clear()
    assert C.char_tables()[0].dtype == np.int32


def test_the_cache_is_named_by_the_arrow_it_was_read_from(monkeypatch):
    key = C.cache_key()
    monkeypatch.setattr(pa, "__version__", pa.__version__ + ".post1")
    assert C.cache_key() != key
    monkeypatch.undo()
    monkeypatch.setattr(C, "TABLES_VERSION", C.TABLES_VERSION + 1)
    assert C.cache_key() != key
