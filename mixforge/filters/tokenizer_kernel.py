"""The spaCy-tokenizer port's prefix/suffix/infix loop compiled (numba), over the code points of many chunks at once.

`tokenize_chunks(chunks)` gives the tokens of `mixforge.filters.spacy_tokenizer.tokenize_chunk` for every chunk,
with the same algorithm (spaCy's `Tokenizer.explain`): the regexes are replaced by per-codepoint class tables read
off the very patterns (each class is the pattern's own character class, matched character by character with
Python's `re`, so the tables agree with the regexes by construction) and the few multi-character rules spelt out
(runs of dots, "US$", "……", "'s", the units and currencies after a digit, the infix hyphens). What the kernel does
not decide exactly sends the chunk back to the Python port, which stays the definition:

* a special case (tokenizer exception) could apply: a visited substring whose 64-bit hash is a special case's,
  or a run of tokens whose hash is that of a special-case pattern (spaCy's special matcher);
* a rule set of another shape than the English one (`_Tables` checks it; then every chunk goes to Python).

The URL pattern (look-aheads over the whole rest of a chunk) is run in Python, on the rest of the chunks that
reach it and contain a dot (a URL has one); the kernel is then run again on those chunks with the answer. So
the kernel's tokens are the port's tokens (tests compare them on real and fuzzed text). Compiled code is cached
on disk (numba `cache=True`), as `mixforge.dedup.kernel` does; the tables are built for the code points seen.
"""

from __future__ import annotations

import re
from functools import lru_cache

import numba
import numpy as np

from mixforge.filters import spacy_tokenizer as port

# Per-codepoint flags.
PRE1 = 1 << 0  # a prefix of one character, whatever follows
SUF1 = 1 << 1  # a suffix of one character, whatever precedes
ENDMULTI = 1 << 2  # ends a suffix literal of several characters (a unit, "US$", "……", "'s")
DIGLB1 = 1 << 3  # a one-character suffix after a digit ("5%", "5$", "5+")
DOT1 = 1 << 4  # "." after it is a suffix
UP2 = 1 << 5  # "." after two of them is a suffix
ICON = 1 << 6  # an infix on its own
L_DOT, R_DOT = 1 << 7, 1 << 8  # infix "." between them
L_COMMA, R_COMMA = 1 << 9, 1 << 10  # infix ","
L_HYPHEN, R_HYPHEN = 1 << 11, 1 << 12  # infix hyphens and dashes
L_COLON, R_COLON = 1 << 13, 1 << 14  # infix ":<>=/"
DIGIT = 1 << 15  # [0-9]

_FALLBACK, _NEED_URL = 1, 2
_FNV, _PRIME, _MASK = 0xCBF29CE484222325, 0x100000001B3, (1 << 64) - 1
_EMPTY = np.zeros(0, np.uint64)


def _hash(cps) -> int:
    h = _FNV
    for c in cps:
        h = ((h ^ c) * _PRIME) & _MASK
    return h


def _hash_tokens(hashes) -> int:
    h = _FNV
    for x in hashes:
        h = ((h ^ x) * _PRIME) & _MASK
    return h


def _lookaround(alt: str) -> tuple[str | None, str, str | None]:
    """(look-behind class, body, look-ahead class) of one alternative: "(?<=[a])x(?=[b])" -> ("[a]", "x", "[b]")."""
    behind = None
    if alt.startswith("(?<="):
        group = port._top_level_group(alt)
        behind, alt = group[4:-1], alt[len(group) :]
    ahead = None
    if alt.endswith(")") and "(?=" in alt:
        k = alt.rindex("(?=")
        alt, ahead = alt[:k], alt[k + 3 : -1]
    return behind, alt, ahead


def _class_end(pattern: str, i: int) -> int:
    """Index after the character class that starts at pattern[i] ("[")."""
    assert pattern[i] == "["
    k = i + 1
    while pattern[k] != "]":
        k += 2 if pattern[k] == "\\" else 1
    return k + 1


class _Tables:
    """The English rule set's patterns as per-codepoint flags (filled in for the code points seen) and the hashes
    of the special cases. `ok` is False when the patterns do not have the English shape."""

    def __init__(self) -> None:
        spec = port._spec()
        self.flags = np.zeros(0x110000, np.uint16)
        self.known = np.zeros(0x110000, bool)
        self.ok = True
        self.prefix = re.compile(spec["prefix"]).search
        self.suffix = re.compile(spec["suffix"]).search
        try:
            self._read_infix(spec["infix"])
            self._read_suffix(spec["suffix"])
        except (AssertionError, ValueError, IndexError, TypeError, re.error):
            self.ok = False
        special = port._rules()[5]
        self.special = np.unique(np.array([_hash(map(ord, k)) for k in special], np.uint64))
        patterns, self.longest, first = port._special_patterns()
        self.first = np.unique(np.array([_hash(map(ord, t)) for t in first], np.uint64)) if first else _EMPTY
        self.patterns = (
            np.unique(np.array([_hash_tokens(_hash(map(ord, t)) for t in p) for p in patterns], np.uint64))
            if patterns
            else _EMPTY
        )
        self.digits = np.arange(ord("0"), ord("9") + 1)
        self.flags[self.digits] |= DIGIT

    def _read_infix(self, infix: str) -> None:
        alts = port._top_level(infix)
        assert alts[0] == "\\.\\.+" and alts[1] == "…" and alts[3] == "(?<=[0-9])[+\\-\\*^](?=[0-9-])"
        assert len(alts) == 8
        self.icon = re.compile(alts[2]).fullmatch
        parts = [_lookaround(a) for a in alts[4:]]
        bodies = [p[1] for p in parts]
        assert bodies == ["\\.", ",", "(?:-|–|—|--|---|——|~)", "[:<>=/]"], bodies
        self.infix_sides = [(re.compile(b).fullmatch, re.compile(a).fullmatch) for b, _, a in parts]

    def _read_suffix(self, suffix: str) -> None:
        """Every alternative: a one-character class or literal, a literal of several characters, or a literal after
        a digit, plus the dot rules (runs, after °F, after one class, after two of another)."""
        self.end_multi: set[str] = set()
        self.after_digit: set[str] = set()
        digit_literals: list[str] = []
        self.up2 = None
        for alt in port._top_level(suffix):
            assert alt.endswith("$")
            behind, body, _ = _lookaround(alt[:-1])
            if body == "\\.\\.+":
                continue
            if body == "\\.":
                if behind == "°[FfCcKk]":
                    continue
                end = _class_end(behind, 0)
                if end < len(behind):  # two classes, the same: "[A][A]"
                    assert behind[:end] == behind[end:]
                    self.up2 = re.compile(behind[:end]).fullmatch
                continue  # one class: read off the pattern itself by probing (DOT1)
            if body.startswith("[") and body.endswith("]") and behind is None:
                continue  # one character of a class: SUF1, by probing
            options = body[3:-1].split("|") if body.startswith("(?:") else [body]
            for option in options:
                text = re.sub(r"\\(.)", r"\1", option)
                assert text and re.fullmatch(option, text), option
                if behind == "[0-9]":
                    digit_literals.append(text)
                if len(text) > 1:
                    assert behind == "[0-9]" or text in ("……", "'s", "'S", "’s", "’S"), alt  # spelt out in the kernel
                    self.end_multi.add(text[-1])
                elif behind == "[0-9]":
                    self.after_digit.add(text)
                else:
                    assert behind is None, alt
        assert self.up2 is not None
        self.literals = np.array([ord(c) for t in digit_literals for c in t], np.int64)
        self.literal_off = np.cumsum([0] + [len(t) for t in digit_literals]).astype(np.int64)

    def _flag(self, ch: str) -> int:
        f = 0
        if ch not in ".+UCA":
            m = self.prefix(ch + "\x00")
            f |= PRE1 if m and m.end() == 1 else 0
        m = self.suffix("\x00" + ch)
        f |= SUF1 if m and m.start() == 1 else 0
        f |= ENDMULTI if ch in self.end_multi else 0
        f |= DIGLB1 if ch in self.after_digit else 0
        m = self.suffix("\x00" + ch + ".")
        f |= DOT1 if ch != "." and m and m.start() == 2 else 0
        f |= UP2 if self.up2(ch) else 0
        f |= ICON if self.icon(ch) else 0
        for k, (left, right) in enumerate(self.infix_sides):
            f |= (L_DOT << 2 * k) if left(ch) else 0
            f |= (R_DOT << 2 * k) if right(ch) else 0
        return f

    def cover(self, cps: np.ndarray) -> None:
        new = np.unique(cps[~self.known[cps]])
        for cp in new.tolist():
            self.flags[cp] |= self._flag(chr(cp))
        self.known[new] = True


@lru_cache(maxsize=1)
def _tables() -> _Tables:
    return _Tables()


@numba.njit(inline="always")
def _in(sorted_hashes, h):
    k = np.searchsorted(sorted_hashes, h)
    return k < len(sorted_hashes) and sorted_hashes[k] == h


@numba.njit(inline="always")
def _span_hash(s, a, b):
    h = np.uint64(0xCBF29CE484222325)
    for i in range(a, b):
        h = (h ^ np.uint64(s[i])) * np.uint64(0x100000001B3)
    return h


@numba.njit(inline="always")
def _prefix_len(s, a, b, fl):
    """Length of the prefix match on s[a:b] (0: none)."""
    if a >= b:
        return 0
    c = s[a]
    if c == 46:  # "." : only a run of dots
        if b - a >= 2 and s[a + 1] == 46:
            k = a + 1
            while k < b and s[k] == 46:
                k += 1
            return k - a
        return 0
    if c == 43:  # "+" not before a digit
        if b - a >= 2 and (fl[s[a + 1]] & DIGIT) != 0:
            return 0
        return 1
    if c == 85:  # "US$"
        return 3 if b - a >= 3 and s[a + 1] == 83 and s[a + 2] == 36 else 0
    if c == 67 or c == 65:  # "C$", "A$"
        return 2 if b - a >= 2 and s[a + 1] == 36 else 0
    return 1 if (fl[c] & PRE1) != 0 else 0


@numba.njit(inline="always")
def _suffix_start(s, a, b, fl, lits, lit_off):
    """Start of the suffix match on s[a:b] (-1: none): the leftmost of the alternatives that match at the end."""
    if a >= b:
        return -1
    c = s[b - 1]
    n = b - a
    if c == 46:  # "."
        if n < 2:
            return -1
        p = s[b - 2]
        if p == 46:  # a run of dots
            k = b - 2
            while k > a and s[k - 1] == 46:
                k -= 1
            return k
        if (fl[p] & DOT1) != 0:
            return b - 1
        if n >= 3 and (fl[p] & UP2) != 0 and (fl[s[b - 3]] & UP2) != 0:
            return b - 1
        if n >= 3 and s[b - 3] == 176 and (p == 70 or p == 102 or p == 67 or p == 99 or p == 75 or p == 107):
            return b - 1
        return -1
    if (c == 115 or c == 83) and n >= 2 and (s[b - 2] == 39 or s[b - 2] == 8217):  # 's 'S ’s ’S
        return b - 2
    if c == 8230:  # "…" or "……"
        return b - 2 if n >= 2 and s[b - 2] == 8230 else b - 1
    if (fl[c] & ENDMULTI) != 0:  # units and currencies after a digit ("5km", "5US$"), the longest first
        best = b - 1 if (fl[c] & SUF1) != 0 else b
        for j in range(len(lit_off) - 1):
            m = lit_off[j + 1] - lit_off[j]
            st = b - m
            if st - 1 < a or st >= best or (fl[s[st - 1]] & DIGIT) == 0:
                continue
            same = True
            for q in range(m):
                if s[st + q] != lits[lit_off[j] + q]:
                    same = False
                    break
            if same:
                best = st
        return best if best < b else -1
    if (fl[c] & SUF1) != 0:
        return b - 1
    if (fl[c] & DIGLB1) != 0 and n >= 2 and (fl[s[b - 2]] & DIGIT) != 0:
        return b - 1
    return -1


@numba.njit(inline="always")
def _infix_len(s, a, b, i, fl):
    """Length of the infix match at s[i] within s[a:b] (0: none), the alternatives in the pattern's order."""
    c = s[i]
    nxt = s[i + 1] if i + 1 < b else 0
    prv = s[i - 1] if i > a else 0
    has_prv = i > a
    has_nxt = i + 1 < b
    if c == 46:  # "\.\.+", then "." between a lower-case character and an upper-case one
        if nxt == 46 and has_nxt:
            k = i + 1
            while k < b and s[k] == 46:
                k += 1
            return k - i
        if has_prv and has_nxt and (fl[prv] & L_DOT) != 0 and (fl[nxt] & R_DOT) != 0:
            return 1
        return 0
    if c == 8230:  # "…"
        return 1
    if (fl[c] & ICON) != 0:
        return 1
    if c == 43 or c == 45 or c == 42 or c == 94:  # [+\-*^] between digits (or before "-")
        if has_prv and has_nxt and (fl[prv] & DIGIT) != 0 and ((fl[nxt] & DIGIT) != 0 or nxt == 45):
            return 1
        if c != 45:
            return 0
    if c == 44:  # ","
        return 1 if has_prv and has_nxt and (fl[prv] & L_COMMA) != 0 and (fl[nxt] & R_COMMA) != 0 else 0
    if c == 45 or c == 8211 or c == 8212 or c == 126:  # -|–|—|--|---|——|~ between letters
        if not has_prv or (fl[prv] & L_HYPHEN) == 0:
            return 0
        if has_nxt and (fl[nxt] & R_HYPHEN) != 0:
            return 1
        if c == 45 or c == 8212:
            if has_nxt and nxt == c and i + 2 < b and (fl[s[i + 2]] & R_HYPHEN) != 0:
                return 2
            if c == 45 and has_nxt and nxt == 45 and i + 2 < b and s[i + 2] == 45:
                if i + 3 < b and (fl[s[i + 3]] & R_HYPHEN) != 0:
                    return 3
        return 0
    if c == 58 or c == 60 or c == 62 or c == 61 or c == 47:  # [:<>=/]
        return 1 if has_prv and has_nxt and (fl[prv] & L_COLON) != 0 and (fl[nxt] & R_COLON) != 0 else 0
    return 0


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _tokenize(
    s, off, which, url, fl, lits, lit_off, special, first, patterns, longest, tok_a, tok_b, n_tok, status, core
):  # noqa: C901
    """Tokens of the chunks `which` (code points s[off[k]:off[k + 1]]): spans written at tok_a/tok_b[off[k]:],
    their number n_tok[k]; status[k] 0 (done), 1 (ask the Python port) or 2 (the rest core[k] needs the URL
    answer url[k]: -1 unknown, 0 no, 1 yes)."""
    suf_a = np.empty(64, np.int64)
    suf_b = np.empty(64, np.int64)
    for w in range(len(which)):
        k = which[w]
        a = off[k]
        b = off[k + 1]
        out = off[k]
        nt = 0
        ns = 0
        st = 0
        while a < b and st == 0:
            if _in(special, _span_hash(s, a, b)):
                st = 1
                break
            pre = _prefix_len(s, a, b, fl)
            suf = _suffix_start(s, a, b, fl, lits, lit_off)
            while pre > 0 or suf >= 0:
                if _in(special, _span_hash(s, a, b)):
                    st = 1
                    break
                if pre > 0:
                    tok_a[out + nt] = a
                    tok_b[out + nt] = a + pre
                    nt += 1
                    a += pre
                    if _in(special, _span_hash(s, a, b)):
                        st = 1
                        break
                    suf = _suffix_start(s, a, b, fl, lits, lit_off)
                if suf >= 0:
                    if suf == b:
                        break
                    if ns == len(suf_a):
                        st = 1
                        break
                    suf_a[ns] = suf
                    suf_b[ns] = b
                    ns += 1
                    b = suf
                pre = _prefix_len(s, a, b, fl)
                suf = _suffix_start(s, a, b, fl, lits, lit_off)
            if st != 0 or a >= b:
                break
            # the rest: a URL, a special case, or split at infixes
            has_dot = False
            for i in range(a, b):
                if s[i] == 46:
                    has_dot = True
                    break
            if has_dot and url[k] < 0:
                st = 2
                core[k, 0] = a - off[k]
                core[k, 1] = b - off[k]
                break
            if has_dot and url[k] == 1:
                tok_a[out + nt] = a
                tok_b[out + nt] = b
                nt += 1
                a = b
                break
            if _in(special, _span_hash(s, a, b)):
                st = 1
                break
            pos = a
            last = a
            for i in range(a, b):
                if i < pos:
                    continue
                m = _infix_len(s, a, b, i, fl)
                if m == 0:
                    continue
                pos = i + m
                if last == a and i == a:
                    continue
                if i > last:
                    tok_a[out + nt] = last
                    tok_b[out + nt] = i
                    nt += 1
                tok_a[out + nt] = i
                tok_b[out + nt] = i + m
                nt += 1
                last = pos
            if b > last:
                tok_a[out + nt] = last
                tok_b[out + nt] = b
                nt += 1
            a = b
        if st == 0:
            for j in range(ns - 1, -1, -1):
                tok_a[out + nt] = suf_a[j]
                tok_b[out + nt] = suf_b[j]
                nt += 1
            # spaCy's special matcher: a run of tokens that is a special case's pattern
            if nt >= 2 and len(first) > 0:
                for i in range(nt):
                    if not _in(first, _span_hash(s, tok_a[out + i], tok_b[out + i])):
                        continue
                    h = np.uint64(0xCBF29CE484222325)
                    for j in range(i, min(nt, i + longest)):
                        h = (h ^ _span_hash(s, tok_a[out + j], tok_b[out + j])) * np.uint64(0x100000001B3)
                        if j >= i + 1 and _in(patterns, h):
                            st = 1
                            break
                    if st != 0:
                        break
        status[k] = st
        n_tok[k] = nt if st == 0 else 0


def tokenize_chunks(chunks: list[str]) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Kernel tokens of `chunks` as code-point spans: (chunks left to the Python port, token count per chunk,
    token chunk index, token start, token end) for the others, in chunk order."""
    n = len(chunks)
    t = _tables()
    if not t.ok or n == 0:
        return list(range(n)), np.zeros(n, np.int64), *(np.zeros(0, np.int64),) * 3
    lens = np.fromiter(map(len, chunks), np.int64, n)
    off = np.zeros(n + 1, np.int64)
    np.cumsum(lens, out=off[1:])
    s = np.frombuffer("".join(chunks).encode("utf-32-le"), np.uint32).astype(np.int64)
    t.cover(s)
    total = int(off[-1])
    tok_a = np.empty(total, np.int64)
    tok_b = np.empty(total, np.int64)
    n_tok = np.zeros(n, np.int64)
    status = np.zeros(n, np.int64)
    core = np.zeros((n, 2), np.int64)
    url = np.full(n, -1, np.int64)
    args = (
        t.flags,
        t.literals,
        t.literal_off,
        t.special,
        t.first,
        t.patterns,
        t.longest,
        tok_a,
        tok_b,
        n_tok,
        status,
        core,
    )
    _tokenize(s, off, np.arange(n, dtype=np.int64), url, *args)
    ask = np.flatnonzero(status == _NEED_URL)
    if len(ask):
        url_match = port._rules()[4]
        url[ask] = [url_match(chunks[k][core[k, 0] : core[k, 1]]) is not None for k in ask.tolist()]
        _tokenize(s, off, ask, url, *args)
    done = status == 0
    counts = np.where(done, n_tok, 0)
    # compact: token j of chunk k sits at off[k] + j
    chunk = np.repeat(np.arange(n, dtype=np.int64), counts)
    first_slot = np.repeat(off[:-1], counts)
    cum = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=cum[1:])
    slot = first_slot + np.arange(len(chunk), dtype=np.int64) - np.repeat(cum[:-1], counts)
    return (
        np.flatnonzero(~done).tolist(),
        counts,
        chunk,
        tok_a[slot] - first_slot,
        tok_b[slot] - first_slot,
    )


def warm_up() -> None:
    """Load the compiled loop (from numba's disk cache, or compile it) and the pattern tables: once per worker,
    in a rule set's `setup`, not in its first batch."""
    tokenize_chunks(["(a-b)", "e.g.", "5km"])
