"""Configuration of the filter stage: language ID and an ordered list of rule sets.

Defaults are the published thresholds, as implemented by datatrove 0.10.1
(`GopherQualityFilter`, `GopherRepetitionFilter`, `C4QualityFilter`, `FineWebQualityFilter`,
`URLFilter`, `LanguageFilter`). A threshold set to null disables that sub-rule; as in datatrove,
the Gopher rule sets also treat 0 as off, and C4 any negative number.

Every rule set has `mode`: `drop` (the first failing sub-rule, in order, drops the document with
that sub-rule's name as `drop_reason`) or `annotate` (only the columns are written: score, then
select later).

`rules` accepts the config of every registered rule set (`mixforge.filters.base.RULE_SETS`): the
built-in ones below, and any `RuleSet` subclass defined elsewhere with its `RuleSetConfigBase`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mixforge.filters.base import MODE_FIELD as _MODE
from mixforge.filters.base import Mode, RuleSetConfig, RuleSetConfigBase
from mixforge.forms import as_any_of, keyed_list
from mixforge.strict import StrictModel

DEFAULT_STOP_WORDS: dict[str, tuple[str, ...]] = {
    # datatrove's/Gopher's English list.
    "en": ("the", "be", "to", "of", "and", "that", "have", "with"),
    # Same idea for other languages: 8 very frequent function words, lowercase.
    "de": ("der", "die", "und", "in", "den", "von", "zu", "das"),
    "fr": ("de", "la", "le", "et", "les", "des", "en", "un"),
    "es": ("de", "la", "que", "el", "en", "y", "los", "del"),
    "it": ("di", "e", "il", "la", "che", "in", "per", "un"),
    "pt": ("de", "a", "o", "que", "e", "do", "da", "em"),
    "nl": ("de", "en", "van", "het", "een", "in", "is", "dat"),
}


# Mappings written `{de: 0.5}` in YAML, typed lists of entries in the Prefect form (mixforge.forms).
LanguageThresholds = keyed_list(
    "LanguageThreshold",
    "The minimum language-ID score of one language.",
    ("language", str, "Language code as the model predicts it."),
    ("min_score", float, "Minimum top-1 score (strictly greater) to keep it."),
    {"language": "de", "min_score": 0.5},
)
StopWordLists = keyed_list(
    "StopWordList",
    "The stop words of one language.",
    ("language", str, "Language code (as language ID writes it in `lang`)."),
    ("words", tuple[str, ...], "Its stop words (case-sensitive)."),
    {"language": "en", "words": list(DEFAULT_STOP_WORDS["en"])},
)
TopNGramLimits = keyed_list(
    "TopNGramLimit",
    "The limit on the most frequent word n-gram of one length.",
    ("n", int, "n-gram length in words."),
    ("max_fraction", float, "Max characters of the most frequent n-gram (times its count) / document characters."),
    {"n": 2, "max_fraction": 0.2},
)
DupNGramLimits = keyed_list(
    "DupNGramLimit",
    "The limit on repeated word n-grams of one length.",
    ("n", int, "n-gram length in words."),
    ("max_fraction", float, "Max characters covered by repeated n-grams / document characters."),
    {"n": 5, "max_fraction": 0.15},
)


class LanguageIDConfig(StrictModel):
    enabled: bool = Field(True, description="Run fastText language identification (writes `lang`, `lang_score`).")
    model: str | None = Field(
        None, description="Path or fsspec URI of a fastText LID model; null: the bundled lid.176.ftz (CC BY-SA 3.0)."
    )
    keep: tuple[str, ...] | None = Field(
        None,
        description="Languages to keep (ISO 639 codes as the model "
        "predicts them, e.g. en, de, zh); null: any language.",
    )
    threshold: float = Field(
        0.65, ge=0.0, le=1.0, description="Minimum top-1 score (strictly greater) for a document to be kept."
    )
    thresholds: LanguageThresholds = Field(
        default_factory=dict,
        description="Per-language minimum score, overriding `threshold` for that language "
        "(YAML: a mapping, e.g. {de: 0.5}, or a list of {language, min_score}).",
    )
    mode: Mode = _MODE


class GopherQualityConfig(RuleSetConfigBase):
    name: Literal["gopher_quality"] = Field(
        "gopher_quality", description="Rule set: Gopher quality heuristics (Rae et al. 2021, table A1)."
    )
    min_doc_words: int | None = Field(50, description="Fail if fewer non-symbol words (`word_count`).")
    max_doc_words: int | None = Field(100_000, description="Fail if more non-symbol words (`word_count`).")
    min_avg_word_length: float | None = Field(
        3, description="Fail if the mean non-symbol word length is below (`mean_word_length`)."
    )
    max_avg_word_length: float | None = Field(
        10, description="Fail if the mean non-symbol word length is above (`mean_word_length`)."
    )
    max_symbol_word_ratio: float | None = Field(
        0.1, description="Fail if '#' per word, or ('...' + '…') per word, is above (`symbol_word_ratio`)."
    )
    max_bullet_lines_ratio: float | None = Field(
        0.9, description="Fail if the fraction of lines starting with '•' or '-' is above (`bullet_lines`)."
    )
    max_ellipsis_lines_ratio: float | None = Field(
        0.3, description="Fail if the fraction of lines ending with '...' or '…' is above (`ellipsis_lines`)."
    )
    min_alpha_words_ratio: float | None = Field(
        0.8,
        description="Fail if the fraction of words with a letter is below "
        "(`alpha_words`; datatrove: max_non_alpha_words_ratio).",
    )
    min_stop_words: int | None = Field(
        2, description="Fail if fewer distinct stop words of the document's language occur (`stop_words`)."
    )
    stop_words: StopWordLists = Field(
        default_factory=lambda: dict(DEFAULT_STOP_WORDS),
        description="Stop words per language (case-sensitive, as in datatrove); languages without a list pass "
        "`stop_words` (YAML: a mapping, e.g. {en: [the, be, ...]}, or a list of {language, words}).",
    )


class GopherRepetitionConfig(RuleSetConfigBase):
    name: Literal["gopher_repetition"] = Field(
        "gopher_repetition", description="Rule set: Gopher repetition heuristics (Rae et al. 2021, table A1)."
    )
    dup_para_frac: float | None = Field(
        0.3, description="Max fraction of paragraphs (split on 2+ newlines) repeating an earlier one."
    )
    dup_para_char_frac: float | None = Field(
        0.2, description="Max characters in repeated paragraphs / document characters."
    )
    dup_line_frac: float | None = Field(
        0.3, description="Max fraction of lines (split on newlines) repeating an earlier one."
    )
    dup_line_char_frac: float | None = Field(
        0.2, description="Max characters in repeated lines / document characters."
    )
    top_n_grams: TopNGramLimits = Field(
        default_factory=lambda: {2: 0.2, 3: 0.18, 4: 0.16},
        description="n -> max characters of the most frequent word n-gram (times its count) / document characters "
        "(YAML: a mapping, e.g. {2: 0.2}, or a list of {n, max_fraction}).",
    )
    dup_n_grams: DupNGramLimits = Field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10},
        description="n -> max characters covered by repeated word n-grams (greedy, as datatrove) / document "
        "characters (YAML: a mapping, e.g. {5: 0.15}, or a list of {n, max_fraction}).",
    )
    exact_dup_n_gram_features: bool = Field(
        False,
        description="Compute the exact duplicated-n-gram fractions for every document. Default: exact only "
        "where a cheap upper bound exceeds the threshold (verdicts are exact either way).",
    )


class C4Config(RuleSetConfigBase):
    name: Literal["c4"] = Field(
        "c4", description="Rule set: C4 quality heuristics (Raffel et al. 2020), line removal plus document rules."
    )
    remove_lines: bool = Field(
        True,
        description="In drop mode, kept documents get the failing lines "
        "removed (text edited); annotate mode never edits.",
    )
    remove_citations: bool = Field(
        True, description="Remove Wikipedia-style citations ([1], [edit], [citation needed]) from lines."
    )
    filter_no_terminal_punct: bool = Field(
        True, description="Remove lines not ending in . ? ! \" ' (or ending in '...')."
    )
    min_words_per_line: int | None = Field(3, description="Remove lines with fewer whitespace-separated words.")
    max_word_length: int | None = Field(1000, description="Remove lines with a word longer than this.")
    min_num_sentences: int | None = Field(
        5, description="Fail if the kept lines hold fewer sentences (`too_few_sentences`)."
    )
    filter_lorem_ipsum: bool = Field(
        True, description="Fail documents with a kept line containing 'lorem ipsum' (`lorem_ipsum`)."
    )
    filter_javascript: bool = Field(True, description="Remove lines mentioning 'javascript'.")
    filter_curly_bracket: bool = Field(
        True, description="Fail documents with a kept line containing '{' (`curly_bracket`)."
    )
    filter_policy: bool = Field(True, description="Remove lines with terms-of-use/privacy/cookie phrases.")


class FineWebQualityConfig(RuleSetConfigBase):
    name: Literal["fineweb_quality"] = Field(
        "fineweb_quality", description="Rule set: FineWeb quality heuristics (Penedo et al. 2024)."
    )
    line_punct_thr: float | None = Field(
        0.12,
        description="Fail if the fraction of non-blank lines ending in "
        "terminal punctuation is below (`line_punct_ratio`).",
    )
    line_punct_exclude_zero: bool = Field(False, description="Do not fail documents where that fraction is exactly 0.")
    short_line_thr: float | None = Field(
        0.67,
        description="Fail if the fraction of non-blank lines of at most "
        "`short_line_length` characters is above (`short_line_ratio`).",
    )
    short_line_length: int = Field(30, description="Characters at or below which a line is short.")
    char_duplicates_ratio: float | None = Field(
        0.01, description="Fail if characters in repeated lines / non-newline characters is above (`char_dup_ratio`)."
    )
    new_line_ratio: float | None = Field(0.3, description="Fail if newlines per word is above (`list_ratio`).")


class URLFilterConfig(RuleSetConfigBase):
    name: Literal["url"] = Field("url", description="Rule set: URL block-lists. Documents without a URL pass.")
    blocked_domains: str | None = Field(
        None,
        description="Path or fsspec URI of a file with one domain per line ('#' comments); "
        "a URL fails if its host or any parent domain is listed (`domain`).",
    )
    blocked_urls: str | None = Field(
        None, description="Path or fsspec URI of a file with one full URL per line (`url`)."
    )
    banned_words: str | None = Field(
        None,
        description="Path or fsspec URI of words; fail if any is a token of "
        "the URL split on non-alphanumerics (`banned_word`).",
    )
    banned_subwords: str | None = Field(
        None,
        description="Path or fsspec URI of substrings; fail if any occurs in the "
        "lowercased alphanumerics of the URL (`banned_subword`).",
    )
    soft_banned_words: str | None = Field(
        None,
        description="Path or fsspec URI of words; fail if at least `soft_word_threshold` "
        "of them are URL tokens (`soft_banned_words`).",
    )
    soft_word_threshold: int = Field(2, ge=1, description="See `soft_banned_words`.")


def _default_rules() -> tuple:
    # FineWeb's order: repetition, quality, C4, FineWeb quality.
    return (GopherRepetitionConfig(), GopherQualityConfig(), C4Config(), FineWebQualityConfig())


class FilterConfig(StrictModel):
    """The `filter` stage: language ID, then the rule sets in order."""

    language_id: LanguageIDConfig = Field(
        default_factory=LanguageIDConfig, description="Language identification, applied first."
    )
    rules: tuple[RuleSetConfig, ...] = Field(
        default_factory=_default_rules,
        json_schema_extra=as_any_of,
        description="Rule sets, applied in this order; each has `name` and its thresholds.",
    )
    default_language: str = Field(
        "en",
        description="Language assumed for language-dependent rules (stop "
        "words) when language ID is off or gives no label.",
    )
