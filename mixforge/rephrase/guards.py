"""Checks on generated text; each failing output is dropped with its reason and counted."""

from __future__ import annotations

import re

from mixforge.rephrase.config import GuardConfig

EMPTY, TRUNCATED, ECHO = "rephrase_empty", "rephrase_truncated", "rephrase_echo"
GUARD_ORDER = (EMPTY, TRUNCATED, ECHO)

_WORD = re.compile(r"\w+", re.UNICODE)


def _ngrams(text: str, n: int) -> list[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    if len(words) < n:
        return [tuple(words)] if words else []
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def echo_share(output: str, source: str, n: int) -> float:
    """Share of the output's word n-grams that also occur in `source` (0 for an empty output)."""
    grams = _ngrams(output, n)
    if not grams:
        return 0.0
    seen = set(_ngrams(source, n))
    return sum(g in seen for g in grams) / len(grams)


def check(output: str, finish_reason: str | None, prompt_text: str, guards: GuardConfig) -> str | None:
    """The first guard `output` fails, or None. `prompt_text`: the chunk and the instructions sent."""
    if guards.drop_empty and len(output.strip()) < guards.min_chars:
        return EMPTY
    if guards.drop_truncated and finish_reason == "length":
        return TRUNCATED
    if guards.drop_echo and echo_share(output, prompt_text, guards.echo_ngram) >= guards.echo_threshold:
        return ECHO
    return None
