"""Heuristic quality filters and language ID, vectorised over Arrow/Polars batches.

One module per rule set, each a `RuleSet` (see `base.py`) returning an `Evaluation`: a boolean
"fails" array per sub-rule (named `<rule_set>.<sub_rule>`), numeric feature arrays and, for C4,
edited text. The `filter` stage (`mixforge.stages.filter.Filter`) applies language ID, then the rule
sets in configured order, and turns the first failing sub-rule of a drop-mode rule set into the
document's `drop_reason`.

Which rules support which languages (words: `mixforge.filters.text`, spaCy's English tokenizer as
in datatrove, for every script: a whitespace-free run of CJK/Thai text is one word):

| rule set | Latin / Cyrillic / Greek (spaced scripts) | CJK / Thai (unspaced) |
|---|---|---|
| language ID (lid.176) | 176 languages | yes |
| gopher_quality | all sub-rules; stop words for en, de, fr, es, it, pt, nl (others pass) | a word is a run between spaces: `mean_word_length` (max 10) fails them, annotate or disable |
| gopher_repetition | yes | coarse (n-grams of space-separated runs) |
| c4 | yes (English keyword lists; ASCII terminal punctuation) | lines ending in 。！？ are removed: annotate or disable |
| fineweb_quality | yes | yes (terminal punctuation of many scripts) |
| url | language-independent | language-independent |
"""

from mixforge.filters.base import Evaluation, RuleSet
from mixforge.filters.c4 import C4Quality
from mixforge.filters.config import (
    C4Config,
    FilterConfig,
    FineWebQualityConfig,
    GopherQualityConfig,
    GopherRepetitionConfig,
    LanguageIDConfig,
    URLFilterConfig,
)
from mixforge.filters.fineweb import FineWebQuality
from mixforge.filters.gopher_quality import GopherQuality
from mixforge.filters.gopher_repetition import GopherRepetition
from mixforge.filters.language import LanguageID, default_lid_model_path
from mixforge.filters.text import TextBatch
from mixforge.filters.url import URLFilter

RULE_SETS: dict[str, type[RuleSet]] = {
    cls.name: cls for cls in (GopherQuality, GopherRepetition, C4Quality, FineWebQuality, URLFilter)
}


def build_rule_set(config, default_language: str = "en") -> RuleSet:
    """The rule set for one entry of `FilterConfig.rules`."""
    cls = RULE_SETS[config.name]
    if cls is GopherQuality:
        return cls(config, default_language=default_language)
    return cls(config)


__all__ = [
    "C4Config", "C4Quality", "Evaluation", "FilterConfig", "FineWebQuality", "FineWebQualityConfig",
    "GopherQuality", "GopherQualityConfig", "GopherRepetition", "GopherRepetitionConfig", "LanguageID",
    "LanguageIDConfig", "RULE_SETS", "RuleSet", "TextBatch", "URLFilter", "URLFilterConfig",
    "build_rule_set", "default_lid_model_path",
]
