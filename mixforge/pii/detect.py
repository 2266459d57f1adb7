"""PII detection over a batch of texts: Rust-regex candidates for the whole batch, Python only on the matches.

For each entity a candidate pattern runs over the batch in Polars (`count_matches` to find the documents
with candidates, `extract_all` for the matches); the match offsets come from the same engine, vectorised
(the text with every match replaced by a sentinel and split on it gives the gaps between matches, whose
lengths place each match). The few distinct candidate strings are then checked in Python: Luhn for cards,
mod-97 for IBANs, `ipaddress` ranges for IPs, digit counts, grouping and context words for phones.

Context the patterns capture so that a check can refuse it (Rust's regex has no look-behind): a version
keyword before an IPv4-shaped run ("version 4.4.7.1", "v1.2.3.4"), an order/invoice/ISBN/serial word
before a phone-shaped run. A refused candidate is not searched again inside.

Overlaps between entities are resolved in `PRIORITY` order (an e-mail's digits are not also a phone).
Offsets are in characters (Python string indices) of the original text.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
import polars as pl

ENTITIES = ("email", "ip_address", "phone", "credit_card", "iban")
PRIORITY = ("email", "iban", "credit_card", "ip_address", "phone")  # who keeps an overlapping span
PLACEHOLDERS = {
    "email": "<EMAIL>",
    "ip_address": "<IP_ADDRESS>",
    "phone": "<PHONE>",
    "credit_card": "<CREDIT_CARD>",
    "iban": "<IBAN>",
}

_SENTINEL, _SENTINEL_ALT = "\ufdd0", "\ufdd1"  # noncharacters: no pattern matches either

_EMAIL = (
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,63}(?-u:\b)"
)
_VERSION_WORD = r"(?i:(?-u:\b)(?:version|release|build|ver|rev|v)\.?\s*)"
# a line's start before and a full stop after: "6.2.4.3. Basic MTA operation" is a section number
_SECTION_START, _SECTION_END = r"\n[ \t]*", r"\.(?:[ \t]|$)"
_IPV4 = (
    f"(?:{_SECTION_START})?{_VERSION_WORD}?"
    r"(?-u:\b)[0-9]{1,3}(?:\.[0-9]{1,3}){3,}(?:\.[0-9]+)*(?:-[A-Za-z]\w*)?"
    f"(?:{_SECTION_END})?"
)
_IPV6 = r"(?-u:\b)[0-9A-Fa-f]{1,4}(?::{1,2}[0-9A-Fa-f]{0,4}){2,7}"
_IP = f"{_IPV4}|{_IPV6}"
# the integer part before: the digits of a decimal fraction ("1.2511263318488451") are no card
_DECIMAL_LEAD = r"[0-9]+[.,]"
_CARD = f"(?:{_DECIMAL_LEAD})?" + r"(?-u:\b)[0-9](?:[ -]?[0-9]){12,18}(?-u:\b)"
_IBAN = r"(?-u:\b)[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}(?-u:\b)"
_PHONE_WORD = (
    r"(?i:(?-u:\b)(?:isbn(?:-1[03])?|order|invoice|ref|reference|serial|ticket|tracking|account|no|number|code)"
    r"(?-u:\b)[\s.:#-]*(?:no\.?|number|code)?[\s.:#]*|#\s*)"
)
# an IBAN's first groups just before: a phone-shaped run inside a (mistyped) IBAN is not a phone
_NUMBER_LEAD = r"(?:(?-u:\b)[A-Z]{2}[0-9]{2} (?:[A-Z0-9]{4} )*)"
_PHONE_CONTEXT = f"(?:{_PHONE_WORD}|{_NUMBER_LEAD})"
_PHONE = (
    _PHONE_CONTEXT + r"?(?:"
    r"\+[0-9]{1,3}(?:[ .-]?(?:\(0\)|\([0-9]{1,4}\)|[0-9]{1,8})){1,6}"  # international
    r"|\([0-9]{2,5}\)[ .-]?[0-9]{2,5}(?:[ .-][0-9]{2,5}){0,3}"  # (area) local
    r"|(?-u:\b)0[0-9]{1,4}(?:[ .-][0-9]{2,8}){1,4}(?-u:\b)"  # national with the trunk 0
    r"|(?-u:\b)[0-9]{3}[ .-][0-9]{3}[ .-][0-9]{4}(?-u:\b)"  # North American
    r")"
)
PATTERNS = {"email": _EMAIL, "ip_address": _IP, "phone": _PHONE, "credit_card": _CARD, "iban": _IBAN}

# ----------------------------------------------------------------------------- checks on candidates
# Each takes the matched text and returns (chars to trim at the start, at the end) of the entity inside
# it, or None: not this entity.

Check = Callable[[str], "tuple[int, int] | None"]


def _python(pattern: str) -> re.Pattern:
    """A pattern above for Python's `re` (which has no `(?-u:...)`), to read what a match captured."""
    return re.compile(pattern.replace(r"(?-u:\b)", r"\b"))


_VERSION_WORD_PY = _python(_VERSION_WORD)
_PHONE_CONTEXT_PY = _python(_PHONE_CONTEXT)
_SECTION_START_PY, _SECTION_END_PY = _python(_SECTION_START), _python(_SECTION_END + "$")
_DECIMAL_LEAD_PY = _python(_DECIMAL_LEAD)
_IMAGE_SUFFIXES = {"png", "jpg", "jpeg", "gif", "svg", "webp", "css", "js", "ico"}  # "logo@2x.png" is no address


def check_email(m: str) -> tuple[int, int] | None:
    return None if m.rsplit(".", 1)[-1].lower() in _IMAGE_SUFFIXES else (0, 0)


def _public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return ip.is_global and not ip.is_multicast


def check_ip(m: str, public_only: bool = True) -> tuple[int, int] | None:
    if "." in m and ":" not in m:
        section = _SECTION_START_PY.match(m)
        lead = section.end() if section else 0
        tail = _SECTION_END_PY.search(m)
        trail = len(m) - tail.start() if tail else 0
        if section and tail:
            return None
        m = m[lead : len(m) - trail]
        if _VERSION_WORD_PY.match(m) or "-" in m:  # a version, not an address
            return None
        parts = m.split(".")
        if len(parts) != 4 or any(len(p) > 1 and p[0] == "0" for p in parts):
            return None
        try:
            ip = ipaddress.IPv4Address(m)
        except ValueError:
            return None
        return (lead, trail) if not public_only or _public(ip) else None
    trail = 1 if m.endswith(":") and not m.endswith("::") else 0
    if sum(1 for g in m.split(":") if g) < 3:  # "B::Lint", "a::b": Perl and C++ names, not addresses
        return None
    try:
        ip6 = ipaddress.IPv6Address(m[: len(m) - trail])
    except ValueError:
        return None
    return (0, trail) if not public_only or _public(ip6) else None


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


_CARD_PREFIX = re.compile(r"4|5[1-5]|2[2-7]|3[47]|3[068]|35|6011|64[4-9]|65|62")
_CARD_GROUPS = {(4, 4, 4, 4), (4, 6, 5), (4, 6, 4), (4, 4, 4, 4, 3), (4, 4, 4, 1)}


def _card_ok(groups: Sequence[str]) -> bool:
    digits = "".join(groups)
    if not 13 <= len(digits) <= 19 or not _CARD_PREFIX.match(digits):
        return False
    if len(groups) > 1 and tuple(len(g) for g in groups) not in _CARD_GROUPS:
        return False
    return luhn_ok(digits)


def check_card(m: str) -> tuple[int, int] | None:
    if _DECIMAL_LEAD_PY.match(m):
        return None
    seps = set(re.findall(r"[ -]", m))
    if len(seps) > 1:
        return None
    groups = re.split(r"[ -]", m)
    if _card_ok(groups):
        return (0, 0)
    # a card run on into a number before or after it ("12 4111 1111 1111 1111"): the groups that are one
    for a in range(len(groups)):
        for b in range(len(groups), a + 1, -1):
            if _card_ok(groups[a:b]):
                lead = sum(len(g) + 1 for g in groups[:a])
                trail = sum(len(g) + 1 for g in groups[b:])
                return (lead, trail)
    return None


# IBAN lengths (SWIFT IBAN registry), for the countries mixforge checks the length of; others: 15-34.
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24,
    "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21,
    "HU": 28, "IE": 22, "IL": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LI": 21,
    "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30,
    "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TN": 24, "TR": 26, "UA": 29, "VG": 24, "XK": 20,
}  # fmt: skip


def iban_ok(compact: str) -> bool:
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1


def check_iban(m: str) -> tuple[int, int] | None:
    compact = m.replace(" ", "")
    want = IBAN_LENGTHS.get(m[:2])
    if want is None:
        return (0, 0) if 15 <= len(compact) <= 34 and iban_ok(compact) else None
    if len(compact) < want or not iban_ok(compact[:want]):
        return None
    # the IBAN ends after its `want`-th character; what follows (a word in capitals) is not part of it
    seen = end = 0
    while seen < want:
        seen += m[end] != " "
        end += 1
    return (0, len(m) - end)


def check_phone(m: str) -> tuple[int, int] | None:
    word = _PHONE_CONTEXT_PY.match(m)
    if word and word.end():  # "order no. ...", "ISBN ...", "DE32 2052 ...": a number with a name, not a phone
        return None
    digits = re.sub(r"\D", "", m)
    groups = re.findall(r"\d+", m)
    if m.startswith("+"):
        if not 8 <= len(digits) <= 15:
            return None
        rest = [g for g in groups[1:] if g != "0"]  # after the country code; "(0)" is the trunk
        if any(len(g) < 2 for g in rest[1:]):
            return None
        return (0, 0)
    if not 10 <= len(digits) <= 11 or digits.startswith("00"):
        return None
    if any(len(g) < 2 for g in groups) or sum(len(g) == 4 for g in groups) >= 3:  # ISBN-, IBAN-, card-like
        return None
    return (0, 0)


def checks(public_ips_only: bool = True) -> dict[str, Check]:
    return {
        "email": check_email,
        "ip_address": lambda m: check_ip(m, public_ips_only),
        "phone": check_phone,
        "credit_card": check_card,
        "iban": check_iban,
    }


# ----------------------------------------------------------------------------- candidates over the batch


def candidates(text: pl.Series, pattern: str) -> pl.DataFrame:
    """Every match of `pattern` in `text`: columns doc (row), start, end (characters), match. Vectorised:
    Rust regex throughout, offsets from the lengths of the gaps between matches."""
    counts = text.str.count_matches(pattern).to_numpy()
    rows = np.flatnonzero(counts)
    empty = pl.DataFrame(schema={"doc": pl.Int64, "start": pl.Int64, "end": pl.Int64, "match": pl.String})
    if len(rows) == 0:
        return empty
    sub = text.gather(rows)
    if sub.str.contains(_SENTINEL, literal=True).any():
        sub = sub.str.replace_all(_SENTINEL, _SENTINEL_ALT, literal=True)  # same length, matches nothing
    matches = sub.str.extract_all(pattern)
    gaps = sub.str.replace_all(pattern, _SENTINEL).str.split(_SENTINEL)
    n = matches.list.len().to_numpy().astype(np.int64)
    if not np.array_equal(gaps.list.len().to_numpy(), n + 1):
        raise AssertionError(f"pattern {pattern!r}: matches and gaps disagree")
    # the gap before each match: every gap but each document's last
    all_gaps = gaps.explode().str.len_chars().to_numpy()
    last = np.cumsum(n + 1) - 1
    gap_len = np.delete(all_gaps, last)
    flat = matches.explode()
    match_len = flat.str.len_chars().to_numpy()
    steps = (gap_len + match_len).astype(np.int64)
    doc = np.repeat(rows, n)
    ends = np.cumsum(steps)
    first = np.concatenate([[0], np.cumsum(n)[:-1]]).astype(np.int64)  # each document's first match
    before = np.repeat(ends[first] - steps[first], n)  # the running total at the start of each document
    end = ends - before
    return pl.DataFrame({"doc": doc.astype(np.int64), "start": end - match_len, "end": end, "match": flat})


def detect(text: pl.Series, entities: Sequence[str] = ENTITIES, public_ips_only: bool = True) -> pl.DataFrame:
    """The PII found in each document: columns doc, entity, start, end, value; sorted by doc and start,
    without overlaps (`PRIORITY` decides)."""
    check_of = checks(public_ips_only)
    frames = []
    for entity in entities:
        if entity == "ip_address":  # a line break first: a section number opening the text starts a line too
            lined = pl.DataFrame({"t": text}).select(pl.concat_str(pl.lit("\n"), pl.col("t"))).to_series()
            found = candidates(lined, PATTERNS[entity]).with_columns(pl.col("start") - 1, pl.col("end") - 1)
        else:
            found = candidates(text, PATTERNS[entity])
        if found.height == 0:
            continue
        check = _cached(check_of[entity], entity, public_ips_only)
        unique = found["match"].unique()
        verdicts = [check(m) for m in unique.to_list()]
        table = pl.DataFrame(
            {
                "match": unique,
                "lead": [v[0] if v else None for v in verdicts],
                "trail": [v[1] if v else None for v in verdicts],
            },
            schema={"match": pl.String, "lead": pl.Int64, "trail": pl.Int64},
        )
        ok = found.join(table, on="match").filter(pl.col("lead").is_not_null())
        frames.append(
            ok.select(
                "doc",
                pl.lit(entity).alias("entity"),
                (pl.col("start") + pl.col("lead")).alias("start"),
                (pl.col("end") - pl.col("trail")).alias("end"),
                pl.col("match")
                .str.slice(pl.col("lead"), pl.col("match").str.len_chars() - pl.col("lead") - pl.col("trail"))
                .alias("value"),
            )
        )
    if not frames:
        return pl.DataFrame(
            schema={"doc": pl.Int64, "entity": pl.String, "start": pl.Int64, "end": pl.Int64, "value": pl.String}
        )
    found = pl.concat(frames)
    rank = {e: i for i, e in enumerate(PRIORITY)}
    found = found.with_columns(pl.col("entity").replace_strict(rank, return_dtype=pl.Int64).alias("rank"))
    return _without_overlaps(found).sort("doc", "start").drop("rank")


def _without_overlaps(found: pl.DataFrame) -> pl.DataFrame:
    """Keep, of overlapping spans, the one of the entity first in PRIORITY (then the earlier, longer one)."""
    if found.height < 2:
        return found
    keep = np.ones(found.height, dtype=bool)
    order = found.with_row_index("i").sort(
        "doc", "rank", "start", pl.col("end"), descending=[False, False, False, True]
    )
    taken: dict[int, list[tuple[int, int]]] = {}
    for i, doc, start, end in order.select("i", "doc", "start", "end").iter_rows():
        spans = taken.setdefault(doc, [])
        if any(start < e and s < end for s, e in spans):
            keep[i] = False
        else:
            spans.append((start, end))
    return found.filter(pl.Series(keep))


_CHECK_CACHE: dict[tuple[str, bool], Check] = {}


def _cached(check: Check, entity: str, public_ips_only: bool) -> Check:
    """The check, memoised per process (the same strings recur across batches)."""
    key = (entity, public_ips_only)
    if key not in _CHECK_CACHE:
        _CHECK_CACHE[key] = lru_cache(maxsize=1 << 16)(check)
    return _CHECK_CACHE[key]
