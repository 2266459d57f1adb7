"""Export token formats (mixforge.export.formats): round trips, dtype rules, the exact megatron index
layout, S3, and megatron-core's own reader (in its test-only venv, tests/megatron_env.sh)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

import numpy as np
import pytest

from mixforge import storage
from mixforge.config_errors import ConfigError
from mixforge.export import formats
from mixforge.export.formats import FORMATS, ExportFormat, get_format
from tests.helpers import REPO

MEGATRON_VENV = REPO / ".venv-megatron"


def part(vocab_size: int, fmt: ExportFormat, n_docs: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Tokens over the whole vocabulary (the largest id included) and document lengths, one of them 0."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 200, n_docs).astype(np.int64)
    lengths[n_docs // 2] = 0
    tokens = rng.integers(0, vocab_size, int(lengths.sum())).astype(fmt.dtype(vocab_size))
    tokens[-1] = vocab_size - 1
    return tokens, lengths


@pytest.mark.parametrize(
    "name, vocab_size, dtype",
    [
        ("megatron", 65499, np.uint16),
        ("megatron", 65500, np.int32),
        ("megatron", 65536, np.int32),
        ("npy", 65499, np.uint16),
        ("npy", 65500, np.uint16),
        ("npy", 65536, np.uint32),
    ],
)
def test_round_trip_and_dtype_rule(tmp_path, name, vocab_size, dtype):
    fmt = get_format(name)
    assert fmt.dtype(vocab_size) == np.dtype(dtype)
    tokens, lengths = part(vocab_size, fmt)
    stem = str(tmp_path / "main" / "part-00000")
    files = fmt.write(stem, tokens, lengths)
    assert [f["uri"] for f in files] == [stem + s for s in fmt.suffixes()]
    for f in files:
        data = open(f["uri"], "rb").read()
        assert (f["bytes"], f["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
    assert sorted(os.listdir(tmp_path / "main")) == sorted(f"part-00000{s}" for s in fmt.suffixes())  # no temp files
    assert os.path.getsize(files[0]["uri"]) == tokens.nbytes  # the data file is the bare tokens
    got_tokens, got_lengths = fmt.read(stem)
    assert got_tokens.dtype == np.dtype(dtype) and np.array_equal(got_tokens, tokens)
    assert got_lengths.dtype == np.int64 and np.array_equal(got_lengths, lengths)


def test_megatron_index_layout(tmp_path):
    """The .idx byte for byte as megatron-core's _IndexWriter lays it out (little-endian): magic, version 1,
    dtype code, sequence count, document count (n + 1), int32 lengths, int64 byte pointers, int64 doc indices."""
    stem = str(tmp_path / "p")
    get_format("megatron").write(stem, np.array([5, 6, 7, 8, 9], np.uint16), np.array([3, 0, 2]))
    expected = (
        b"MMIDIDX\x00\x00"
        + (1).to_bytes(8, "little")
        + bytes([8])  # uint16
        + (3).to_bytes(8, "little")
        + (4).to_bytes(8, "little")
        + np.array([3, 0, 2], "<i4").tobytes()
        + np.array([0, 6, 6], "<i8").tobytes()
        + np.array([0, 1, 2, 3], "<i8").tobytes()
    )
    assert open(stem + ".idx", "rb").read() == expected
    assert open(stem + ".bin", "rb").read() == np.array([5, 6, 7, 8, 9], "<u2").tobytes()
    get_format("megatron").write(stem, np.array([1, 2], np.int32), np.array([2]))
    assert open(stem + ".idx", "rb").read()[17] == 4  # int32's code


def test_npy_files_are_what_olmo_reads(tmp_path):
    tokens, lengths = part(100_000, get_format("npy"), n_docs=10)
    stem = str(tmp_path / "p")
    get_format("npy").write(stem, tokens, lengths)
    # OLMo-core / dolma: np.memmap of the token file with a known dtype, no header.
    assert np.array_equal(np.memmap(stem + ".npy", dtype=np.uint32, mode="r"), tokens)
    offsets = np.load(stem + ".idx.npy")
    assert offsets.dtype == np.int64 and np.array_equal(offsets, np.concatenate([[0], np.cumsum(lengths)]))


def test_bad_parts_and_unknown_format(tmp_path):
    npy, megatron = get_format("npy"), get_format("megatron")
    with pytest.raises(ValueError, match="sum to 3, but there are 2 tokens"):
        npy.write(str(tmp_path / "a"), np.array([1, 2], np.uint16), np.array([1, 2]))
    with pytest.raises(ValueError, match="uint16 or int32"):
        megatron.write(str(tmp_path / "b"), np.array([1, 2], np.uint32), np.array([2]))
    with pytest.raises(ValueError, match="uint16 or uint32"):
        npy.write(str(tmp_path / "c"), np.array([1, 2], np.int64), np.array([2]))
    assert not os.listdir(tmp_path)
    with pytest.raises(ConfigError, match=r"unknown export format 'bin' \(available: megatron, npy"):
        get_format("bin")
    (tmp_path / "d.idx").write_bytes(b"NOTMEGATRON" + bytes(40))
    with pytest.raises(ValueError, match="not a megatron MMIDIDX version 1 index"):
        megatron.read(str(tmp_path / "d"))


def test_a_format_is_one_class(tmp_path):
    class Raw32(ExportFormat):
        name = "raw32-test"

        def dtype(self, vocab_size):
            return np.dtype(np.uint32)

        def suffixes(self):
            return (".raw",)

    try:
        assert isinstance(get_format("raw32-test"), Raw32)
    finally:
        del FORMATS["raw32-test"]


@pytest.mark.parametrize("name", ["megatron", "npy"])
def test_round_trip_on_s3(s3_bucket, name, monkeypatch):
    monkeypatch.setattr(formats, "_CHUNK_BYTES", 1000)  # several writes per file: the upload streams
    root, opts = s3_bucket
    fmt = get_format(name)
    tokens, lengths = part(50_000, fmt, n_docs=20)
    stem = f"{root}/export/main/part-00003"
    files = fmt.write(stem, tokens, lengths, opts)
    for f in files:
        data = storage.read_bytes(f["uri"], opts)
        assert (f["bytes"], f["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
    got_tokens, got_lengths = fmt.read(stem, opts)
    assert np.array_equal(got_tokens, tokens) and np.array_equal(got_lengths, lengths)


# ----------------------------------------------------------------------------- megatron-core's own reader

READER = """
import json, sys
import numpy as np
from megatron.core.datasets.indexed_dataset import IndexedDataset
from megatron.core.package_info import __version__

for stem in sys.argv[1:]:
    ds = IndexedDataset(stem)
    print(json.dumps({
        "version": __version__,
        "sequences": len(ds),
        "document_indices": ds.document_indices.tolist(),
        "sequence_lengths": ds.sequence_lengths.tolist(),
        "dtype": np.dtype(ds.index.dtype).name,
        "documents": [ds[i].tolist() for i in range(len(ds))],
        "slice": ds.get(len(ds) - 1, offset=1, length=2).tolist(),
    }))
"""


def megatron_python() -> str:
    python = MEGATRON_VENV / "bin" / "python"
    if not python.exists():
        message = f"megatron-core's test venv is missing: build it with `bash tests/megatron_env.sh` ({python})"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI builds it; a missing one there is a broken CI, not a skip
        pytest.skip(message)
    return str(python)


def test_megatron_core_reads_the_export(tmp_path):
    python = megatron_python()
    fmt = get_format("megatron")
    parts = {}
    for vocab_size in (50_257, 100_277):  # uint16 and int32 tokens; one reader process (torch imports slowly)
        tokens, lengths = part(vocab_size, fmt, n_docs=30, seed=vocab_size)
        parts[str(tmp_path / f"part-{vocab_size}")] = (vocab_size, tokens, lengths)
        fmt.write(str(tmp_path / f"part-{vocab_size}"), tokens, lengths)
    out = subprocess.run([python, "-c", READER, *parts], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    seen_all = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(seen_all) == len(parts)
    for seen, (vocab_size, tokens, lengths) in zip(seen_all, parts.values()):
        assert seen["version"] == "0.16.1"
        assert seen["sequences"] == len(lengths) == 30
        assert seen["document_indices"] == list(range(31))
        assert seen["sequence_lengths"] == lengths.tolist()
        assert seen["dtype"] == fmt.dtype(vocab_size).name
        starts = np.concatenate([[0], np.cumsum(lengths)])
        assert seen["documents"] == [tokens[starts[i] : starts[i + 1]].tolist() for i in range(30)]
        assert seen["slice"] == tokens[starts[-2] + 1 : starts[-2] + 3].tolist()
