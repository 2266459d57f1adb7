"""Rebuild mixforge/demo_corpus/ from the public-domain sources of ../shared/corpus.

Only public-domain texts are used (Jane Austen, the King James Bible, the Jargon File,
Project Gutenberg). Shards come in every supported format, and one hand-made shard holds
the kinds of bad rows a real crawl has, so the demo shows the audit trail.

    python examples/build_demo_corpus.py [--corpus ../shared/corpus]
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

OUT = os.path.join(os.path.dirname(__file__), "..", "mixforge", "demo_corpus")


def read(corpus: str, name: str) -> list[dict]:
    with open(os.path.join(corpus, f"{name}.jsonl.zst"), "rb") as f:
        data = zstandard.ZstdDecompressor().stream_reader(f).read()
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()]


def jsonl(rows: list[dict]) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "corpus"))
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)

    austen = read(args.corpus, "janeaustenr")
    half = len(austen) // 2
    for i, part in enumerate((austen[:half], austen[half:])):
        with open(os.path.join(OUT, f"austen-{i}.jsonl.zst"), "wb") as f:
            f.write(zstandard.ZstdCompressor(level=19).compress(jsonl(part)))

    bible = read(args.corpus, "kjv-bible")
    with gzip.open(os.path.join(OUT, "kjv-bible.jsonl.gz"), "wb", compresslevel=9) as f:
        f.write(jsonl(bible))

    jargon = read(args.corpus, "jargon-file")
    pq.write_table(pa.Table.from_pylist(jargon), os.path.join(OUT, "jargon-file.parquet"), compression="zstd")

    # Two editions of the same books: natural near-duplicates for dedup.
    books = [r for r in read(args.corpus, "gitenberg") if len(r["text"]) < 400_000][:4]
    with open(os.path.join(OUT, "gutenberg.jsonl.zst"), "wb") as f:
        f.write(zstandard.ZstdCompressor(level=19).compress(jsonl(books)))

    # What crawls really contain: the reader and normalize must cope with each of these.
    messy = io.BytesIO()
    messy.write(
        jsonl(
            [
                {"text": "Windows line endings\r\nand a NUL\x00 byte and a bell\x07.", "source": "messy"},
                {
                    "text": "Mojibake: the cafÃ© served crÃ¨me brÃ»lÃ©e â€” twice.",
                    "source": "messy",
                    "url": "https://example.org/cafe",
                },
                {
                    "text": "Decomposed accents: Cafe\u0301 and nai\u0308ve.",
                    "source": "messy",
                    "tags": ["unicode", "nfc"],
                },
                {"text": "   \n\t  ", "source": "messy"},
                {"text": 12345, "source": "messy"},
                {"body": "the text field is missing", "source": "messy"},
            ]
        )
    )
    messy.write(b"{this line is not json}\n")
    messy.write(b'{"text": "invalid UTF-8 here: \xff\xfe", "source": "messy"}\n')
    with open(os.path.join(OUT, "messy.jsonl"), "wb") as f:
        f.write(messy.getvalue())
    for name in sorted(os.listdir(OUT)):
        print(f"{name:30} {os.path.getsize(os.path.join(OUT, name)):>10,} bytes")


if __name__ == "__main__":
    main()
