"""Heuristic quality filters and language ID, vectorised over Arrow/Polars batches.

One module per rule set, each a `RuleSet` (see `base.py`: defining one with its config class
registers it, nothing else to edit) returning an `Evaluation`: a boolean
"fails" array per sub-rule (named `<rule_set>.<sub_rule>`), numeric feature arrays and, for C4,
edited text. The `filter` stage (`mixforge.stages.filter.Filter`) applies language ID, then the rule
sets in configured order, and turns the first failing sub-rule of a drop-mode rule set into the
document's `drop_reason`.

Which rules support which languages (words: `mixforge.filters.text`, spaCy's English tokenizer as
in datatrove; in documents whose `lang` is an unspaced-script language (zh, ja, th, ko, yue, wuu,
lo, km, my: `TextBatch.unspaced_languages`) each Han / Hiragana / Katakana / Thai / Lao / Khmer /
Myanmar character, and each CJK / fullwidth punctuation mark, is a word of its own, the runs of
other characters in between keep the English tokenization; without a `lang`, a whitespace-free
CJK/Thai run is one word, as in datatrove):

| rule set | Latin / Cyrillic / Greek (spaced scripts) | CJK / Thai / Lao / Khmer / Myanmar (unspaced, `lang` set) |
|---|---|---|
| language ID (lid.176) | 176 languages | yes |
| gopher_quality | all sub-rules; stop words for en, de, fr, es, it, pt, nl (others pass) | per-character words: `word_count`, `symbol_word_ratio`, `bullet_lines`, `ellipsis_lines`, `alpha_words`, `stop_words` (no list: pass) work; `mean_word_length` (English 3..10 bounds) is not applied to them |
| gopher_repetition | yes | coarse (character n-grams, English thresholds) |
| c4 | yes (English keyword lists; ASCII terminal punctuation) | lines ending in 。！？ or without spaces are removed: annotate or disable |
| fineweb_quality | yes | yes (terminal punctuation of many scripts; `list_ratio` counts per-character words); Thai, written without sentence-final punctuation, can fail `line_punct_ratio` |
| url | language-independent | language-independent |
"""  # noqa: E501 - markdown table rows in the docstring cannot be wrapped

from mixforge.filters.base import (
    RULE_SETS,
    Evaluation,
    Failures,
    Measure,
    RuleSet,
    RuleSetConfig,
    RuleSetConfigBase,
    build_rule_set,
    safe_div,
    zero_is_off,
)
from mixforge.filters.config import (
    C4Config,
    FilterConfig,
    FineWebQualityConfig,
    GopherQualityConfig,
    GopherRepetitionConfig,
    LanguageIDConfig,
    URLFilterConfig,
)

# Defining a rule set registers it; the built-in ones are imported (registered) in this order, which
# is the order of the rule-set choices in the config schema (the flows' Prefect form).
# isort: off
from mixforge.filters.gopher_repetition import GopherRepetition
from mixforge.filters.gopher_quality import GopherQuality
from mixforge.filters.c4 import C4Quality
from mixforge.filters.fineweb import FineWebQuality
from mixforge.filters.url import URLFilter
from mixforge.filters.c4_paragraph import C4Paragraph  # noqa: F401 - registers the c4_paragraph rule set

# isort: on
from mixforge.filters.language import LanguageID, default_lid_model_path
from mixforge.filters.text import TextBatch

__all__ = [
    "C4Config",
    "C4Quality",
    "Evaluation",
    "Failures",
    "FilterConfig",
    "FineWebQuality",
    "FineWebQualityConfig",
    "GopherQuality",
    "GopherQualityConfig",
    "GopherRepetition",
    "GopherRepetitionConfig",
    "LanguageID",
    "LanguageIDConfig",
    "Measure",
    "RULE_SETS",
    "RuleSet",
    "RuleSetConfig",
    "RuleSetConfigBase",
    "TextBatch",
    "URLFilter",
    "URLFilterConfig",
    "build_rule_set",
    "default_lid_model_path",
    "safe_div",
    "zero_is_off",
]
