"""Settings of the `decontaminate` stage (`extra_stages.decontaminate` in the curate config).

extra_stages:
  decontaminate:
    mode: drop                      # annotate | drop | cut
    benchmarks:
      - {name: mmlu, uri: s3://evals/mmlu/test.parquet, fields: [question, choices, answer]}
      - {name: gsm8k, uri: ./evals/gsm8k.jsonl, fields: [question, answer]}
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mixforge.names import name_field
from mixforge.strict import StrictModel

MAX_BENCHMARKS = 64  # each n-gram records its benchmarks as one uint64 bit mask


class BenchmarkSet(StrictModel):
    """One benchmark's items: Parquet or JSONL files (plain, .gz, .zst), local or on a store. Each row is one
    item; its text is the named fields joined by a newline (a list field, e.g. `choices`, by newlines too)."""

    name: name_field("benchmark name") = Field(description="Its name in reasons, columns and the report.")
    uri: str = Field(description="A file, a glob or a prefix (folder) of Parquet/JSONL files.")
    fields: tuple[str, ...] = Field(("text",), min_length=1, description="Fields of a row that make its text.")


class CutConfig(StrictModel):
    """GPT-3's rule (Brown et al. 2020, appendix C): remove each matching span with a margin on both sides,
    split the document there, drop pieces too short to keep and documents split too often."""

    margin_chars: int = Field(200, ge=0, description="Characters removed on each side of a matching n-gram.")
    min_piece_chars: int = Field(200, ge=1, description="Pieces shorter than this (stripped) are dropped.")
    max_splits: int = Field(10, ge=0, description="A document split more than this many times is dropped whole.")


class DecontamConfig(StrictModel):
    """Benchmark decontamination by word n-gram overlap (see mixforge.decontam)."""

    benchmarks: tuple[BenchmarkSet, ...] = Field(min_length=1, description="The benchmark sets to decontaminate.")
    mode: Literal["annotate", "drop", "cut"] = Field(
        "drop",
        description="annotate: add contaminated / contamination_benchmarks / contamination_ngrams; drop: "
        "contaminated documents go to _removed/; cut: matching spans are cut out (GPT-3 rule), pieces kept.",
    )
    ngram: int = Field(13, ge=1, le=64, description="Words per n-gram (GPT-3: 13; datatrove: 12).")
    normalize_numbers: bool = Field(
        True,
        description="Every number becomes 0 before n-grams are taken (as datatrove): '2009-2011' matches '2010-2013'.",
    )
    min_matches: int = Field(1, ge=1, description="A document is contaminated when this many of its n-grams match.")
    max_benchmark_items: int | None = Field(
        10,
        ge=1,
        description="Frequent n-grams: an n-gram found in more than this many benchmark items (all sets) is left "
        "out of the index, as boilerplate ('which of the following is true'); null: keep all.",
    )
    stop_ngrams: tuple[str, ...] = Field(
        (), description="N-grams (texts, normalised like the documents) never counted as a match."
    )
    index: str | None = Field(
        None,
        description="Folder of the stored indexes; default <store>/index/decontam. Each index is the subfolder "
        "named by the sha256 of the benchmark files' contents and these settings, built once and reused.",
    )
    index_partitions: int = Field(8, ge=1, le=4096, description="Hash partitions the index is merged in.")
    cut: CutConfig = Field(default_factory=CutConfig)
    examples: int = Field(5, ge=0, le=100, description="Example documents per benchmark in the report.")

    @field_validator("benchmarks")
    @classmethod
    def _distinct(cls, sets: tuple[BenchmarkSet, ...]) -> tuple[BenchmarkSet, ...]:
        names = [b.name for b in sets]
        if len(set(names)) != len(names):
            raise ValueError(f"benchmark names must be distinct (got {names})")
        if len(sets) > MAX_BENCHMARKS:
            raise ValueError(f"at most {MAX_BENCHMARKS} benchmark sets (got {len(sets)})")
        return sets

    @model_validator(mode="after")
    def _stop_ngrams_are_ngrams(self) -> DecontamConfig:
        from mixforge.decontam.ngrams import normalized_words

        short = [s for s in self.stop_ngrams if len(normalized_words(s, self.normalize_numbers)) != self.ngram]
        if short:
            raise ValueError(f"stop_ngrams must be {self.ngram} words each after normalisation: {short[:3]}")
        return self

    def fingerprint(self) -> dict[str, Any]:
        """What goes into the run id: everything but where the index is stored."""
        return self.model_dump(mode="json", exclude={"index"})
