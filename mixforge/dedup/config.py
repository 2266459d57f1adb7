"""Config models of the dedup stage: exact, MinHash (fuzzy), keep rule, boilerplate lines.

Everything that changes which documents are grouped together is here, so a run id (a hash of
the config) changes whenever a result could. Hashes are stable across library versions
(`mixforge.dedup.hashing`), so signatures computed under one config can be persisted in an
incremental index and compared with later ones computed under the same config.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mixforge.strict import StrictModel


class ExactConfig(StrictModel):
    """Exact duplicates: documents whose normalised text hashes equal."""

    enabled: bool = Field(True, description="Run exact dedup (a hash of the normalised text).")
    lowercase: bool = Field(True, description="Lowercase the text before hashing.")
    collapse_whitespace: bool = Field(
        True, description="Trim the text and collapse every run of (Unicode) whitespace to one space."
    )
    strip_punctuation: bool = Field(False, description="Delete Unicode punctuation (category P) before hashing.")
    normalize_digits: bool = Field(
        False, description="Replace every decimal digit with 0, so documents differing only in numbers collide."
    )


class MinHashConfig(StrictModel):
    """Fuzzy duplicates: MinHash signatures over shingles, LSH banding, optional verification.

    Short documents (fewer than `short_doc_words` words) are where word 5-gram MinHash loses
    recall: one replaced word kills up to `n` of few shingles. By default they are shingled
    into byte `short_char_n`-grams of their normalised text instead, whose Jaccard drops far
    less per edited word (see `mixforge.dedup.minhash`).
    """

    enabled: bool = Field(True, description="Run MinHash fuzzy dedup.")
    shingle: Literal["word", "char"] = Field(
        "word",
        description="Shingles of documents that are not short: word n-grams, "
        "or byte n-grams of the normalised text ('char').",
    )
    n: int = Field(
        5, ge=1, le=32, description="Shingle size: words per shingle ('word') or bytes per shingle ('char')."
    )
    bands: int = Field(
        14, ge=1, le=255, description="LSH bands; a pair becomes a candidate when all rows of at least one band agree."
    )
    rows: int = Field(8, ge=1, le=64, description="Signature rows per band; num_perm = bands * rows.")
    seed: int = Field(
        1,
        ge=0,
        lt=2**63,
        description="Seed of the permutation family; signatures are "
        "only comparable under the same seed and shingling.",
    )
    threshold: float = Field(
        0.8,
        gt=0.0,
        le=1.0,
        description="Verification: the Jaccard similarity from which a candidate pair is a duplicate.",
    )
    verify: bool = Field(
        True, description="Verify candidate pairs by estimated Jaccard before clustering (drops LSH false positives)."
    )
    verify_margin: float = Field(
        2.5,
        ge=0.0,
        le=10.0,
        description="Verification allows for the noise of the signature estimate: a pair passes when its estimated "
        "Jaccard is at least threshold - verify_margin * sqrt(threshold * (1 - threshold) / num_perm), the "
        "estimate's standard error at the threshold (0.8 - 2.5 * 0.038 = 0.705 with 112 permutations). 0 compares "
        "with the bare threshold, which drops about half of the pairs whose true Jaccard is exactly the threshold.",
    )
    lowercase: bool = Field(True, description="Lowercase the text before shingling.")
    strip_punctuation: bool = Field(True, description="Delete Unicode punctuation (category P) before shingling.")
    short_doc_words: int = Field(
        200,
        ge=0,
        description="Documents with fewer words than this (after normalisation) "
        "follow `short_doc_strategy`; 0 disables it.",
    )
    short_doc_strategy: Literal["char", "smaller_n", "none"] = Field(
        "char",
        description="Short documents: 'char' shingles their normalised text (words joined by single spaces) "
        "into byte short_char_n-grams; 'smaller_n' uses word short_n-grams; 'none' keeps the normal "
        "shingling. Any document shorter than one shingle becomes a single shingle of all of it.",
    )
    short_char_n: int = Field(
        5,
        ge=1,
        le=32,
        description="Bytes per shingle for short documents under the 'char' "
        "strategy (with shingle='char': under any strategy but 'none').",
    )
    short_n: int = Field(
        2, ge=1, le=32, description="Words per shingle for short documents under the 'smaller_n' strategy."
    )

    @property
    def num_perm(self) -> int:
        """Signature length: bands * rows."""
        return self.bands * self.rows

    @property
    def verify_threshold(self) -> float:
        """What an estimated Jaccard is compared with when verifying (see `verify_margin`)."""
        t = self.threshold
        return max(0.0, t - self.verify_margin * (t * (1.0 - t) / self.num_perm) ** 0.5)

    @model_validator(mode="after")
    def _check(self) -> MinHashConfig:
        if self.bands * self.rows > 4096:
            raise ValueError(f"bands * rows = {self.bands * self.rows} exceeds 4096 permutations")
        return self


class KeepConfig(StrictModel):
    """Which document of a duplicate cluster is kept. Ties are broken by smallest `id`, then
    smallest document key, never by worker or input order."""

    rule: Literal["highest", "longest", "earliest", "smallest_id"] = Field(
        "smallest_id",
        description="'highest': largest value of `column` (e.g. a quality score); 'longest': most characters "
        "of text; 'earliest': smallest value of `column` (e.g. a timestamp); 'smallest_id': "
        "smallest id. Documents with a null value are never preferred over ones with a value.",
    )
    column: str | None = Field(None, description="Column read by the 'highest' and 'earliest' rules.")

    @model_validator(mode="after")
    def _check(self) -> KeepConfig:
        if self.rule in ("highest", "earliest") and not self.column:
            raise ValueError(f"keep rule {self.rule!r} needs `column`")
        return self


class BoilerplateConfig(StrictModel):
    """Lines repeated across many documents (navigation, licence footers) are removed from them."""

    enabled: bool = Field(False, description="Remove boilerplate lines.")
    min_docs: int = Field(
        1000, ge=2, description="A line is boilerplate when it occurs in at least this many distinct documents."
    )
    min_chars: int = Field(
        20, ge=1, description="Lines shorter than this (after trimming) are never counted or removed."
    )
    lowercase: bool = Field(False, description="Lowercase lines before hashing them.")


class DedupConfig(StrictModel):
    """The dedup stage: exact, then fuzzy, clusters resolved by the keep rule."""

    exact: ExactConfig = Field(default_factory=ExactConfig, description="Exact duplicates.")
    minhash: MinHashConfig = Field(default_factory=MinHashConfig, description="Fuzzy (MinHash LSH) duplicates.")
    keep: KeepConfig = Field(default_factory=KeepConfig, description="Which document of each cluster is kept.")
    partitions: int | None = Field(
        None,
        ge=1,
        le=65536,
        description="Partitions of the band-bucket shuffle (bucket = band_hash % partitions). "
        "Default (null): the index's setting when `index` exists, else one per 64 MiB of input shards "
        "(1 to 4096; 16 to 4096 when the run creates the index, which keeps its count). "
        "Changes speed and memory per task, never the result.",
    )
    boilerplate: BoilerplateConfig = Field(default_factory=BoilerplateConfig, description="Boilerplate line removal.")
    index: str | None = Field(
        None,
        description="URI of the pool's persistent dedup index (e.g. s3://pool/dedup-index). When set, "
        "new documents are deduplicated against every document already indexed (those always win), "
        "without recomputing them, and this run's kept documents are appended to it.",
    )
    update_index: bool = Field(True, description="Append this run's kept documents to `index` once the run is done.")
