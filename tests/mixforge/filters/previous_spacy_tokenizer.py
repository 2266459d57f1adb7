"""The spaCy tokenizer port before issue #20 (frozen copy, commit 63e0530): the reference that the suffix
pre-check is compared with in test_shared_words.py. Not used by the library."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

_RESOURCE = Path(__file__).resolve().parents[3] / "mixforge" / "filters" / "resources" / "spacy_en_tokenizer.json"


@lru_cache(maxsize=1)
def _rules():
    spec = json.loads(_RESOURCE.read_text(encoding="utf-8"))
    never = re.compile("a^").match
    return (
        re.compile(spec["prefix"]).search,
        re.compile(spec["suffix"]).search,
        re.compile(spec["infix"]).finditer,
        re.compile(spec["token_match"]).match if spec.get("token_match") else never,
        re.compile(spec["url"]).match if spec.get("url") else never,
        {k: tuple(v) for k, v in spec["special_cases"].items()},
        _infix_precheck(spec["infix"]),
    )


def _infix_precheck(infix: str):
    """A cheap search that finds something wherever the infix pattern could match: every English
    infix alternative contains one of a few punctuation characters or an icon (spaCy's LIST_ICONS,
    the one character class listed on its own). Falls back to the infix pattern itself if the
    pattern does not have that shape."""
    alternatives = infix.split("|")
    icons = [a for a in alternatives if a.startswith("[") and a.endswith("]") and "\\u00A6" in a]
    if len(icons) != 1:
        return re.compile(infix).search
    return re.compile("[.…+\\-*^,–—~:<>=/]|" + icons[0]).search


@lru_cache(maxsize=1)
def sentencizer_punct_chars() -> list[str]:
    """spaCy's `Sentencizer.default_punct_chars` (datatrove's `split_into_sentences`)."""
    return sorted(json.loads(_RESOURCE.read_text(encoding="utf-8"))["sentencizer_punct_chars"])


def special_case_keys() -> frozenset[str]:
    return frozenset(_rules()[5])


@lru_cache(maxsize=1)
def _special_patterns() -> tuple[dict[tuple[str, ...], str], int, frozenset[str]]:
    """spaCy's special matcher: special cases containing affix characters, keyed by their
    tokenization without special cases."""
    prefix_search, suffix_search, infix_finditer, _, _, special, _ = _rules()
    patterns = {}
    for key in special:
        if prefix_search(key) or suffix_search(key) or any(True for _ in infix_finditer(key)) or " " in key:
            patterns[tuple(_tokenize_chunk(key, False))] = key
    return patterns, max((len(k) for k in patterns), default=0), frozenset(k[0] for k in patterns)


def tokenize_chunk(substring: str) -> list[str]:
    """spaCy English tokens of one chunk without whitespace."""
    tokens = _tokenize_chunk(substring, True)
    if len(tokens) < 2:
        return tokens
    patterns, longest, first = _special_patterns()
    spans = []
    for i in range(len(tokens)):
        if tokens[i] not in first:
            continue
        for j in range(i + 2, min(len(tokens), i + longest) + 1):
            key = patterns.get(tuple(tokens[i:j]))
            if key is not None:
                spans.append((j - i, i, key))
    if not spans:
        return tokens
    # spaCy's _filter_special_spans: longest first (ties: earliest start first); a span is taken
    # when neither its first nor its last token is covered by a span taken before.
    seen: set[int] = set()
    chosen = {}
    for length, start, key in sorted(spans, key=lambda s: (-s[0], s[1])):
        if start not in seen and start + length - 1 not in seen:
            chosen[start] = (length, key)
        seen.update(range(start, start + length))
    special = _rules()[5]
    out: list[str] = []
    i = 0
    while i < len(tokens):
        if i in chosen:
            length, key = chosen[i]
            out.extend(special[key])
            i += length
        else:
            out.append(tokens[i])
            i += 1
    return out


_HAS_DIGIT = re.compile("[0-9]").search
_SUFFIX_WINDOW = 16  # longer than any fixed-length suffix pattern (units, quotes, "'s" ...)


def _suffix_search(search, s: str):
    """`search(s)` for spaCy's suffix regex, all of whose alternatives end with `$`: searching the
    last characters only (lookbehinds still see the text before) finds the same leftmost match
    unless a match could start before the window (only repeated patterns such as "\\.\\.+" can be
    that long, and they then also match at the window start: fall back to the full search)."""
    n = len(s)
    # A suffix ending in a letter is a unit after a digit ("5km") or "'s": none otherwise.
    if n and s[-1].isalpha() and not _HAS_DIGIT(s) and s[-2:-1] not in ("'", "’"):
        return None
    if n <= _SUFFIX_WINDOW:
        return search(s)
    pos = n - _SUFFIX_WINDOW
    m = search(s, pos)
    if m is not None and m.start() == pos:
        return search(s)
    return m


def _tokenize_chunk(substring: str, with_special_cases: bool) -> list[str]:
    prefix_search, suffix_search, infix_finditer, token_match, url_match, special, infix_possible = _rules()
    if not with_special_cases:
        special = {}
    tokens: list[str] = []
    suffixes: list[str] = []
    while substring:
        if substring in special:
            tokens.extend(special[substring])
            substring = ""
            continue
        pre = prefix_search(substring)
        suf = _suffix_search(suffix_search, substring)
        while pre or suf:
            if token_match(substring):
                tokens.append(substring)
                substring = ""
                break
            if substring in special:
                tokens.extend(special[substring])
                substring = ""
                break
            if pre:
                split = pre.end()
                if split == 0:
                    break
                tokens.append(substring[:split])
                substring = substring[split:]
                if substring in special:
                    pre = prefix_search(substring)
                    suf = _suffix_search(suffix_search, substring)
                    continue
                suf = _suffix_search(suffix_search, substring)
            if suf:
                split = suf.start()
                if split == len(substring):
                    break
                suffixes.append(substring[split:])
                substring = substring[:split]
            pre = prefix_search(substring)
            suf = _suffix_search(suffix_search, substring)
        if not substring:
            continue
        if token_match(substring) or url_match(substring):
            tokens.append(substring)
        elif substring in special:
            tokens.extend(special[substring])
        elif not infix_possible(substring):
            tokens.append(substring)
        else:
            offset = 0
            for match in infix_finditer(substring):
                if offset == 0 and match.start() == 0:
                    continue
                if substring[offset : match.start()]:
                    tokens.append(substring[offset : match.start()])
                if match.end() > match.start():
                    tokens.append(substring[match.start() : match.end()])
                offset = match.end()
            if substring[offset:]:
                tokens.append(substring[offset:])
        substring = ""
    tokens.extend(reversed(suffixes))
    return tokens


def tokenize(text: str) -> list[str]:
    """Reference (slow) version for tests: datatrove's `split_into_words` for English."""
    out: list[str] = []
    for chunk in text.split():
        out.extend(t for t in (s.strip() for s in tokenize_chunk(chunk)) if t)
    return out
