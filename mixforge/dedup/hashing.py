"""Stable, vectorised 64-bit hashing of Arrow strings.

Hashes are persisted (incremental dedup index), so they depend on nothing but the bytes:
not on Python's `hash()` (salted per process), not on polars' or Arrow's hash kernels (which
may change between releases), not on numpy's random streams. The whole definition is here:

    poly(s)  = sum_j (s[j] + 1) * P^(len(s) - j)            mod 2^64   (s: UTF-8 bytes)
    hash(s)  = mix64(poly(s) + len(s) * LEN_K + seed * SEED_K + BASE)   (mix64: splitmix64 finaliser)
    hash(null) = NULL_HASH

`poly` is evaluated for all strings at once from Arrow's offsets and data buffers: with
Q = P^-1 mod 2^64 and the wrapping prefix sum S[k] = sum_{j<k} (b[j] + 1) * Q^j over the
concatenated bytes, poly(b[start:end]) = P^end * (S[end] - S[start]). `hash_string_reference`
is the slow, obviously-correct definition the tests compare against.

Limitation: a polynomial hash modulo 2^64 has known adversarial collisions (Thue-Morse
strings); the finaliser does not remove them. For dedup of natural text that is immaterial.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mixforge.dedup.config import ExactConfig

MASK64 = (1 << 64) - 1
P = 0x9E3779B97F4A7C15  # odd
Q = pow(P, -1, 1 << 64)
LEN_K = 0xC2B2AE3D27D4EB4F
SEED_K = 0x165667B19E3779F9
BASE = 0x27D4EB2F165667C5  # so that hash('') != 0
NULL_HASH = 0x6E756C6C6E756C6C  # "nullnull"; returned for null strings, whatever the seed

_CHUNK_BYTES = 1 << 21  # bytes hashed per numpy pass: bounds temporary memory to ~100 MB
_pow_cache: dict[int, np.ndarray] = {}


def mix64_int(z: int) -> int:
    """splitmix64 finaliser on a Python int (reference for `mix64`)."""
    z &= MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, element-wise, in place on `z` (uint64); returns `z`."""
    with np.errstate(over="ignore"):
        z ^= z >> np.uint64(30)
        z *= np.uint64(0xBF58476D1CE4E5B9)
        z ^= z >> np.uint64(27)
        z *= np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return z


def splitmix64_stream(seed: int, n: int) -> list[int]:
    """n pseudo-random 64-bit ints from splitmix64 seeded with `seed`: a generator defined
    here, so derived constants (permutations) never change with library versions."""
    out, state = [], seed & MASK64
    for _ in range(n):
        state = (state + 0x9E3779B97F4A7C15) & MASK64
        out.append(mix64_int(state))
    return out


def _powers(base: int, n: int) -> np.ndarray:
    """base^0 .. base^(n-1) mod 2^64 (cached prefix for the usual sizes)."""
    cached = _pow_cache.get(base)
    if cached is not None and len(cached) >= n:
        return cached[:n]
    size = max(n, _CHUNK_BYTES + 2)
    out = np.full(size, base, dtype=np.uint64)
    out[0] = 1
    np.cumprod(out, out=out)  # integer array ops wrap silently mod 2^64
    if size <= _CHUNK_BYTES + 2:
        _pow_cache[base] = out
    return out[:n]


def _string_buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(offsets int64 rebased to 0, data uint8, validity bool or None) of a string/binary array."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    t = arr.type
    if pa.types.is_string_view(t) or pa.types.is_binary_view(t):
        arr = arr.cast(pa.large_binary())
        t = arr.type
    if pa.types.is_large_string(t) or pa.types.is_large_binary(t):
        off_dtype = np.int64
    elif pa.types.is_string(t) or pa.types.is_binary(t):
        off_dtype = np.int32
    else:
        raise TypeError(f"hash_strings needs a string or binary array, got {t}")
    n = len(arr)
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=off_dtype, count=arr.offset + n + 1)[arr.offset :].astype(np.int64)
    start, end = int(offsets[0]), int(offsets[-1])
    if bufs[2] is not None and end > start:
        data = np.frombuffer(bufs[2], dtype=np.uint8, count=end)[start:]
    else:
        data = np.zeros(0, np.uint8)
    offsets -= start
    valid = None
    if arr.null_count:
        valid = np.asarray(arr.is_valid())
    return offsets, data, valid


def poly_hash_bytes(data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """`poly` of each segment data[offsets[i]:offsets[i+1]] (offsets int64, offsets[0] == 0),
    without the finaliser. Processes ~2 MB of bytes per pass."""
    n = len(offsets) - 1
    out = np.empty(n, dtype=np.uint64)
    i = 0
    with np.errstate(over="ignore"):
        while i < n:
            # largest j with offsets[j] - offsets[i] <= _CHUNK_BYTES, at least one string
            j = int(np.searchsorted(offsets, offsets[i] + _CHUNK_BYTES, side="right")) - 1
            j = min(max(j, i + 1), n)
            base = int(offsets[i])
            offs = offsets[i : j + 1] - base
            m = int(offs[-1])
            t = data[base : base + m].astype(np.uint64)
            t += np.uint64(1)
            t *= _powers(Q, m)
            s = np.empty(m + 1, dtype=np.uint64)
            s[0] = 0
            np.cumsum(t, out=s[1:])
            seg = s[offs[1:]]
            seg -= s[offs[:-1]]
            seg *= _powers(P, m + 1)[offs[1:]]
            out[i:j] = seg
            i = j
    return out


def hash_strings(arr: pa.Array | pa.ChunkedArray, seed: int = 0) -> np.ndarray:
    """Stable 64-bit hash (uint64) of every string of `arr` (string, large_string, binary, views).

    Null entries hash to `NULL_HASH`. `seed` selects an independent hash function (0: the
    default); equal strings always hash equally under one seed, across processes and versions.
    """
    offsets, data, valid = _string_buffers(arr)
    h = poly_hash_bytes(data, offsets)
    with np.errstate(over="ignore"):
        lengths = np.diff(offsets).astype(np.uint64)
        h += lengths * np.uint64(LEN_K)
        h += np.uint64((seed * SEED_K + BASE) & MASK64)
    mix64(h)
    if valid is not None:
        h[~valid] = np.uint64(NULL_HASH)
    return h


def hash_string_reference(s: str | bytes | None, seed: int = 0) -> int:
    """The definition of `hash_strings`, one string at a time in pure Python (for tests)."""
    if s is None:
        return NULL_HASH
    b = s.encode("utf-8") if isinstance(s, str) else s
    h = 0
    for c in b:
        h = ((h + c + 1) * P) & MASK64
    return mix64_int(h + len(b) * LEN_K + seed * SEED_K + BASE)


# RE2 (Arrow's regex engine) patterns.
PUNCTUATION_RE = r"\p{P}+"
DIGIT_RE = r"\p{Nd}"


def normalize_text(
    text: pa.Array | pa.ChunkedArray,
    *,
    lowercase: bool,
    strip_punctuation: bool,
    normalize_digits: bool = False,
    collapse_whitespace: bool = True,
) -> pa.Array:
    """Vectorised text normalisation (Arrow kernels), in this order: lowercase, delete
    punctuation, digits -> '0', trim and collapse whitespace runs to one space. Nulls stay null."""
    out = text
    if lowercase:
        out = pc.utf8_lower(out)
    if strip_punctuation:
        out = pc.replace_substring_regex(out, PUNCTUATION_RE, "")
    if normalize_digits:
        out = pc.replace_substring_regex(out, DIGIT_RE, "0")
    if collapse_whitespace:  # split on Unicode whitespace, join with one space (faster than a regex)
        words = pc.utf8_split_whitespace(pc.utf8_trim_whitespace(out))
        out = pc.binary_join(words, pa.scalar(" ", words.type.value_type))
    if isinstance(out, pa.ChunkedArray):
        out = out.combine_chunks()
    return out


def exact_hashes(text: pa.Array | pa.ChunkedArray, cfg: ExactConfig = ExactConfig()) -> np.ndarray:
    """Hash (uint64) of each document's text normalised per `cfg`; equal hash = exact duplicate.

    Null text hashes to `NULL_HASH`; empty text (after normalisation) to hash_strings(['']).
    Callers should not treat documents with null/empty text as duplicates of each other.
    """
    norm = normalize_text(
        text,
        lowercase=cfg.lowercase,
        strip_punctuation=cfg.strip_punctuation,
        normalize_digits=cfg.normalize_digits,
        collapse_whitespace=cfg.collapse_whitespace,
    )
    return hash_strings(norm)
