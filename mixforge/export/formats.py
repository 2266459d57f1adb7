"""Token file formats of an export. A format is one class: a subclass of ExportFormat with a `name`
registers itself in FORMATS.

- `megatron`: megatron-core's indexed dataset, `<stem>.bin` (the raw tokens) and `<stem>.idx`
  (MMIDIDX version 1, one sequence per document), as `megatron.core.datasets.indexed_dataset` reads it.
- `npy`: a flat token memmap with no header, `<stem>.npy` (as OLMo-core and dolma read them: the reader
  is told the dtype), and `<stem>.idx.npy`, a real .npy of int64 document start offsets (n + 1).
"""

from __future__ import annotations

import hashlib
import io
import struct
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from mixforge import storage
from mixforge.config_errors import ConfigError

FORMATS: dict[str, ExportFormat] = {}

_CHUNK_BYTES = 16 << 20


class ExportFormat:
    name: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            FORMATS[cls.name] = cls()

    def dtype(self, vocab_size: int) -> np.dtype:
        raise NotImplementedError

    def suffixes(self) -> tuple[str, ...]:
        """The files of one part; the data file is the first."""
        raise NotImplementedError

    def write(
        self,
        stem: str,
        tokens: np.ndarray,
        doc_lengths: np.ndarray,
        storage_options: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Write every file of the part `stem` (a URI without suffix), each atomically: `tokens` in
        self.dtype(), one document per entry of `doc_lengths`. Returns {uri, bytes, sha256} per file."""
        raise NotImplementedError

    def read(self, stem: str, storage_options: Mapping[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, int64 document lengths) of the part `stem`."""
        raise NotImplementedError


def get_format(name: str) -> ExportFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise ConfigError(f"unknown export format {name!r} (available: {', '.join(sorted(FORMATS))})") from None


# ----------------------------------------------------------------------------- shared helpers


class _HashingWriter:
    """Passes writes through to `f`, counting and hashing them (so the file is never read back)."""

    def __init__(self, f: Any) -> None:
        self.f, self.bytes, self.sha = f, 0, hashlib.sha256()

    def write(self, data: Any) -> None:
        view = memoryview(data).cast("B")
        self.sha.update(view)
        self.f.write(view)
        self.bytes += len(view)


def _write_file(
    uri: str, parts: list[bytes | np.ndarray], storage_options: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Write `parts` atomically to `uri`, arrays in chunks of their own memory (no copy)."""
    with storage.atomic_open(uri, storage_options) as f:
        out = _HashingWriter(f)
        for part in parts:
            if isinstance(part, np.ndarray):
                raw = np.ascontiguousarray(part).reshape(-1).view(np.uint8)
                for start in range(0, len(raw), _CHUNK_BYTES):
                    out.write(raw[start : start + _CHUNK_BYTES])
            else:
                out.write(part)
    return {"uri": uri, "bytes": out.bytes, "sha256": out.sha.hexdigest()}


def _check_part(tokens: np.ndarray, doc_lengths: np.ndarray, dtypes: tuple[np.dtype, ...], fmt: str) -> np.ndarray:
    if tokens.ndim != 1 or tokens.dtype not in dtypes:
        raise ValueError(
            f"{fmt}: tokens must be a flat array of {' or '.join(map(str, dtypes))}, not {tokens.dtype} {tokens.shape}"
        )
    lengths = np.asarray(doc_lengths)
    if lengths.ndim != 1 or (len(lengths) and lengths.min() < 0):
        raise ValueError(f"{fmt}: doc_lengths must be a flat array of non-negative lengths")
    lengths = lengths.astype(np.int64, copy=False)
    if int(lengths.sum()) != len(tokens):
        raise ValueError(f"{fmt}: doc_lengths sum to {int(lengths.sum())}, but there are {len(tokens)} tokens")
    return lengths


def _read_array(uri: str, dtype: np.dtype, storage_options: Mapping[str, Any] | None) -> np.ndarray:
    """The whole file as `dtype`: memory-mapped when local, read once when remote."""
    fs, path = storage.filesystem(uri, storage_options)
    if storage.is_local(fs):
        return np.memmap(path, dtype=dtype, mode="r") if fs.size(path) else np.zeros(0, dtype)
    return np.frombuffer(storage.read_bytes(uri, storage_options), dtype=dtype)


# ----------------------------------------------------------------------------- megatron

MEGATRON_MAGIC = b"MMIDIDX\x00\x00"
MEGATRON_VERSION = 1
# megatron.core.datasets.indexed_dataset.DType: the dtype code in the .idx header
MEGATRON_DTYPE_CODES = {
    np.dtype(np.uint8): 1,
    np.dtype(np.int8): 2,
    np.dtype(np.int16): 3,
    np.dtype(np.int32): 4,
    np.dtype(np.int64): 5,
    np.dtype(np.float64): 6,
    np.dtype(np.float32): 7,
    np.dtype(np.uint16): 8,
}
_MEGATRON_HEADER = struct.Struct("<9sQBQQ")  # magic, version, dtype code, sequence count, document count


class MegatronFormat(ExportFormat):
    name = "megatron"

    def dtype(self, vocab_size: int) -> np.dtype:
        # megatron-core's DType.optimal_dtype
        return np.dtype(np.uint16 if vocab_size < 65500 else np.int32)

    def suffixes(self) -> tuple[str, ...]:
        return (".bin", ".idx")

    def write(self, stem, tokens, doc_lengths, storage_options=None):
        lengths = _check_part(tokens, doc_lengths, (np.dtype(np.uint16), np.dtype(np.int32)), self.name)
        if len(lengths) and lengths.max() > np.iinfo(np.int32).max:
            raise ValueError(f"{self.name}: a document of {lengths.max()} tokens overflows the int32 sequence length")
        n = len(lengths)
        header = _MEGATRON_HEADER.pack(MEGATRON_MAGIC, MEGATRON_VERSION, MEGATRON_DTYPE_CODES[tokens.dtype], n, n + 1)
        pointers = np.zeros(n, np.int64)  # byte offset of each sequence in the .bin
        np.cumsum(lengths[:-1] * tokens.dtype.itemsize, out=pointers[1:])
        # one sequence per document: document i is sequences [i, i + 1)
        index = [header, lengths.astype(np.int32), pointers, np.arange(n + 1, dtype=np.int64)]
        return [
            _write_file(f"{stem}.bin", [tokens], storage_options),
            _write_file(f"{stem}.idx", index, storage_options),
        ]

    def read(self, stem, storage_options=None):
        idx = storage.read_bytes(f"{stem}.idx", storage_options)
        if len(idx) < _MEGATRON_HEADER.size:
            raise ValueError(f"{stem}.idx: too short for a megatron index")
        magic, version, code, n_seq, n_doc = _MEGATRON_HEADER.unpack_from(idx)
        if magic != MEGATRON_MAGIC or version != MEGATRON_VERSION:
            raise ValueError(f"{stem}.idx: not a megatron MMIDIDX version 1 index")
        dtype = next((d for d, c in MEGATRON_DTYPE_CODES.items() if c == code), None)
        if dtype is None:
            raise ValueError(f"{stem}.idx: unknown dtype code {code}")
        offset = _MEGATRON_HEADER.size
        seq_lengths = np.frombuffer(idx, np.int32, n_seq, offset).astype(np.int64)
        pointers = np.frombuffer(idx, np.int64, n_seq, offset + 4 * n_seq)
        doc_index = np.frombuffer(idx, np.int64, n_doc, offset + 12 * n_seq)
        seq_starts = np.concatenate([[0], np.cumsum(seq_lengths)])
        if not np.array_equal(pointers, seq_starts[:-1] * dtype.itemsize):
            raise ValueError(f"{stem}.idx: sequences are not contiguous in the .bin")
        tokens = _read_array(f"{stem}.bin", dtype, storage_options)
        if len(tokens) != seq_starts[-1]:
            raise ValueError(f"{stem}.bin: {len(tokens)} tokens, the index says {seq_starts[-1]}")
        return tokens, np.diff(seq_starts[doc_index])


# ----------------------------------------------------------------------------- npy


class NpyFormat(ExportFormat):
    name = "npy"

    def dtype(self, vocab_size: int) -> np.dtype:
        return np.dtype(np.uint16 if vocab_size < 65536 else np.uint32)

    def suffixes(self) -> tuple[str, ...]:
        return (".npy", ".idx.npy")

    def write(self, stem, tokens, doc_lengths, storage_options=None):
        lengths = _check_part(tokens, doc_lengths, (np.dtype(np.uint16), np.dtype(np.uint32)), self.name)
        offsets = np.zeros(len(lengths) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        index = io.BytesIO()
        np.save(index, offsets, allow_pickle=False)
        return [
            _write_file(f"{stem}.npy", [tokens], storage_options),
            _write_file(f"{stem}.idx.npy", [index.getvalue()], storage_options),
        ]

    def read(self, stem, storage_options=None):
        offsets = np.load(io.BytesIO(storage.read_bytes(f"{stem}.idx.npy", storage_options)), allow_pickle=False)
        n_tokens = int(offsets[-1])
        fs, path = storage.filesystem(f"{stem}.npy", storage_options)
        size = fs.size(path)
        # The token file has no header: its dtype is its size over the token count.
        itemsize = size // n_tokens if n_tokens else 2
        if itemsize not in (2, 4) or itemsize * n_tokens != size:
            raise ValueError(f"{stem}.npy: {size} bytes do not hold {n_tokens} uint16 or uint32 tokens")
        tokens = _read_array(f"{stem}.npy", np.dtype(np.uint16 if itemsize == 2 else np.uint32), storage_options)
        return tokens, np.diff(offsets)
