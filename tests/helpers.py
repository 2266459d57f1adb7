"""Small fixtures written by the tests themselves (tests never read ../shared)."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

# The repository root: tests sit in folders that mirror the source tree, at different depths.
REPO = Path(__file__).resolve().parents[1]

PROSE = [
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
    "must be in want of a wife.",
    "In the beginning God created the heaven and the earth. And the earth was without form, and void.",
    "Call me Ishmael. Some years ago, never mind how long precisely, having little or no money in my purse.",
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of foolishness.",
    "Happy families are all alike; every unhappy family is unhappy in its own way.",
]


_ADJ = (
    "quiet bright ancient gentle narrow sudden distant careful hollow silver broken patient golden bitter steady"
).split()
_NOUN = (
    "river garden village letter window harbour mountain teacher market evening winter candle forest "
    "bridge sailor kitchen meadow lantern journey orchard"
).split()
_VERB = "crossed remembered followed described carried watched opened painted visited answered borrowed".split()
_ADV = "slowly quietly early again together carefully often".split()


def prose(seed: int, sentences: int = 12) -> str:
    """Varied English-like prose (no repeated n-grams to speak of) that passes the quality filters."""
    import random

    rnd = random.Random(seed)
    content = _ADJ + _NOUN + _VERB + _ADV
    function = "the of and to that with have be in a".split()
    out = []
    for _ in range(sentences):
        words = [
            rnd.choice(function) if rnd.random() < 0.4 else rnd.choice(content) for _ in range(rnd.randint(9, 16))
        ]
        out.append(" ".join(words).capitalize() + ".")
    return " ".join(out)


def prose_docs(n: int, prefix: str = "p", sentences: int = 12) -> list[dict]:
    return [
        {
            "id": f"{prefix}-{i}",
            "text": prose(i * 7919 + sum(map(ord, prefix)), sentences),
            "source": "fixture",
            "url": f"https://example.org/{prefix}/{i}",
        }
        for i in range(n)
    ]


def docs(n: int, prefix: str = "d", words: int = 40) -> list[dict]:
    out = []
    for i in range(n):
        body = " ".join(PROSE[(i + k) % len(PROSE)] for k in range(max(1, words // 20)))
        out.append(
            {
                "id": f"{prefix}-{i}",
                "text": f"Document {prefix} {i}. {body}",
                "source": "fixture",
                "url": f"https://example.org/{prefix}/{i}",
            }
        )
    return out


def jsonl_bytes(rows: list) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


def write_shard(path: str, rows: list, fs=None) -> str:
    """Write rows (dicts, or raw bytes lines for JSONL) in the format the path's suffix names."""
    if path.endswith(".parquet"):
        buf = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pylist(rows), buf, compression="zstd")
        data = buf.getvalue().to_pybytes()
    else:
        data = jsonl_bytes(rows)
        if path.endswith(".gz"):
            data = gzip.compress(data)
        elif path.endswith(".zst"):
            data = zstandard.ZstdCompressor().compress(data)
    if fs is None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    else:
        fs.pipe_file(path, data)
    return path
