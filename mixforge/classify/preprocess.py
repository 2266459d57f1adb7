"""The one text preparation used both to train fastText classifiers and to apply them.

DCLM-style, vectorised with Arrow kernels (no per-document Python):
1. keep the first `max_chars` characters (bounds the cost of huge documents);
2. lowercase (Unicode-aware);
3. put spaces around every character that is not a letter, digit, mark or whitespace, so "end."
   and "end" share the word "end" and punctuation stays a feature (junk is often punctuation);
4. collapse every run of whitespace (newlines, tabs, Unicode spaces) to one space, trim.

The result has no newline (fastText predicts one line at a time). A model card records the
`PreprocessConfig` it was trained with and the stage applies exactly that, so training and
inference cannot drift apart.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from mixforge.classify.config import PreprocessConfig

_PUNCT = r"[^\p{L}\p{N}\p{M}\s]"
# Step 4 collapses runs of [\s\p{Z}] (RE2: \t \n \f \r and Unicode Z). Most matches after step 3
# are a lone " " that would be replaced by itself, so only runs of two or more and single
# characters other than " " are matched: the same output at about a third of the cost.
_OTHER_SPACE = r"[\t\n\f\r\p{Zl}\p{Zp}]|[^\P{Zs} ]"  # one character of [\s\p{Z}], but not " "
_SPACES = rf"[\s\p{{Z}}]{{2,}}|{_OTHER_SPACE}"


def preprocess(text: pa.Array | pa.ChunkedArray, config: PreprocessConfig = PreprocessConfig()) -> pa.Array:
    """Prepared text for fastText; nulls become empty strings."""
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    if not pa.types.is_string(text.type):
        text = text.cast(pa.string())
    if text.null_count:  # each of these steps copies the text: skip the ones with nothing to do
        text = pc.fill_null(text, "")
    if config.max_chars is not None and (pc.max(pc.binary_length(text)).as_py() or 0) > config.max_chars:
        text = pc.utf8_slice_codeunits(text, 0, config.max_chars)  # (bytes <= max_chars: no text is longer)
    if config.lowercase:
        text = pc.utf8_lower(text)
    if config.split_punctuation:
        text = pc.replace_substring_regex(text, _PUNCT, r" \0 ")
    text = pc.replace_substring_regex(text, _SPACES, " ")
    return pc.utf8_trim_whitespace(text)


def preprocess_one(text: str, config: PreprocessConfig = PreprocessConfig()) -> str:
    return preprocess(pa.array([text], pa.string()), config)[0].as_py()
