"""spaCy's rule-based English tokenizer, ported to pure Python for one whitespace-free chunk.

datatrove's `split_into_words` (used by its Gopher and FineWeb filters) runs `spacy.blank("en")`'s
tokenizer and drops whitespace tokens. To agree with it we apply the same algorithm: for each
whitespace-separated chunk, special cases (tokenizer exceptions: "don't" -> "do" "n't", "Mr.",
"e.g.", emoticons ...), then prefixes and suffixes stripped repeatedly, then URL match, then infix
splitting. This is the algorithm of spaCy's `Tokenizer.explain` (spaCy 3.8), with the prefix,
suffix, infix and URL patterns and the special cases exported from spaCy 3.8.7 into
`resources/spacy_en_tokenizer.json` (spaCy is MIT-licensed, (c) ExplosionAI GmbH). Not ported:
spaCy's second "special matcher" pass, which finds special cases containing affix characters
inside the tokens of a chunk (e.g. "Inc." in "Inc.," or the emoticon ";)" in ";))") and
re-joins them, is applied within each chunk (its matches can never span whitespace).

This port is the definition: `mixforge.filters.tokenizer_kernel` runs the same loop compiled over the
distinct chunks of a batch that are not plain letter or digit runs, and leaves to `tokenize_chunk` (cached
across batches by `mixforge.filters.text`) only the chunks where a special case could apply.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

_RESOURCE = Path(__file__).parent / "resources" / "spacy_en_tokenizer.json"


@lru_cache(maxsize=1)
def _spec() -> dict:
    return json.loads(_RESOURCE.read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def _rules():
    spec = _spec()
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
    return sorted(_spec()["sentencizer_punct_chars"])


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


def _structure(pattern: str):
    """(position, character, group depth after it) of each character of a regex outside escapes and
    character classes: the one walk that splitting alternatives and finding a group's end share."""
    depth, in_class, i = 0, False, 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
        else:
            if ch in "()":
                depth += 1 if ch == "(" else -1
            yield i, ch, depth
        i += 1


def _top_level(pattern: str) -> list[str]:
    """The alternatives of a pattern (split at the `|` outside groups and character classes)."""
    bars = [i for i, ch, depth in _structure(pattern) if ch == "|" and depth == 0]
    bounds = [-1, *bars, len(pattern)]
    return [pattern[start + 1 : end] for start, end in zip(bounds, bounds[1:])]


def _literal_end(body: str) -> str | None:
    """The last character of a literal alternative ("\\!", "……", "\\.\\.+"), checked against the pattern."""
    base = body[:-1] if body.endswith("+") and not body.endswith("\\+") else body  # "\\.\\.+": ends with "."
    text = re.sub(r"\\(.)", r"\1", base)
    try:
        return re.escape(text[-1]) if text and re.fullmatch(body, text) else None
    except re.error:
        return None


@lru_cache(maxsize=1)
def _suffix_end_check():
    """`fullmatch` of one character against what can end a suffix match (every alternative of
    spaCy's English suffix pattern is [lookbehind] + a literal, a character class or a group of
    literals + `$`), or None when the pattern has another shape (then no pre-check)."""
    atoms = []
    for alt in _top_level(_spec()["suffix"]):
        if alt.startswith("(?<="):
            alt = alt[len(_top_level_group(alt)) :]
        if not alt.endswith("$") or len(alt) < 2:
            return None
        body = alt[:-1]
        if body.startswith("[") and body.endswith("]") and body.count("[") == 1:
            atoms.append(body)
            continue
        options = body[3:-1].split("|") if body.startswith("(?:") and body.endswith(")") else [body]
        for option in options:
            end = _literal_end(option)
            if end is None:
                return None
            atoms.append(end)
    return re.compile("|".join(atoms)).fullmatch


def _top_level_group(pattern: str) -> str:
    """The group `pattern` starts with, "(...)" (brackets inside classes and escapes skipped)."""
    for i, ch, depth in _structure(pattern):
        if ch == ")" and depth == 0:
            return pattern[: i + 1]
    return pattern


_SUFFIX_END: dict[str, bool] = {}  # character -> whether a suffix match can end with it (filled lazily)
_HAS_DIGIT = re.compile("[0-9]").search
_SUFFIX_WINDOW = 16  # longer than any fixed-length suffix pattern (units, quotes, "'s" ...)


def _suffix_search(search, s: str):
    """`search(s)` for spaCy's suffix regex, all of whose alternatives end with `$`: searching the
    last characters only (lookbehinds still see the text before) finds the same leftmost match
    unless a match could start before the window (only repeated patterns such as "\\.\\.+" can be
    that long, and they then also match at the window start: fall back to the full search)."""
    n = len(s)
    if not n:
        return search(s)
    # A suffix ending in a letter is a unit after a digit ("5km") or "'s": none otherwise.
    if s[-1].isalpha() and not _HAS_DIGIT(s) and s[-2:-1] not in ("'", "’"):
        return None
    # Every match ends at the last character: none where no alternative can end with it ("2021", "a/b").
    end = _SUFFIX_END.get(s[-1])
    if end is None:
        check = _suffix_end_check()
        end = _SUFFIX_END[s[-1]] = check is None or check(s[-1]) is not None
    if not end:
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
