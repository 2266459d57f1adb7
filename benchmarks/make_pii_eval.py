"""Build the frozen PII evaluation set: tests/mixforge/pii/pii_eval.jsonl (committed; tests never rebuild it).

Real sentences from the public-domain sources of ../shared/corpus (janeaustenr, kjv-bible, jargon-file: the
corpus README lets these be copied into the project), without digits or "@" so that they hold no unlabelled
entity, with generated entities and hard negatives inserted between them through short templates. Each line:

    {"id", "source", "text",
     "entities":  [{"type", "start", "end", "value"}],   # what a detector must find (character offsets)
     "negatives": [{"kind", "start", "end", "value"}]}   # what it must not find

Entity types: email, ip_address (public IPv4 and IPv6 only), phone (US, UK, DE, FR, IN, JP, AU formats),
credit_card (Luhn-valid Visa, Mastercard, Amex, Discover; grouped or not), iban (valid mod-97: DE, GB, FR,
NL, ES, IT). Negative kinds: private_ip (private, loopback, link-local, documentation ranges: PII only with
`public_only: false`), version, date, time, order_number, isbn, luhn_invalid (card-shaped digit runs failing
Luhn), long_digits, iban_invalid (a wrong check), decimal, handle.

Deterministic (seeded, sources read in a fixed order): rerunning it rewrites the same bytes.

    python -m benchmarks.make_pii_eval [--corpus-dir ../shared/corpus] [--out tests/mixforge/pii/pii_eval.jsonl]
"""

from __future__ import annotations

import argparse
import io
import ipaddress
import json
import random
import re
import string
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "tests" / "mixforge" / "pii" / "pii_eval.jsonl"
SOURCES = ("janeaustenr", "kjv-bible", "jargon-file")  # public domain (corpus README)
N_RECORDS = 600
SEED = 19

FIRST = ["anna", "ben", "chloe", "david", "elif", "farid", "grace", "hiro", "ines", "jonas", "kemal", "lena"]
LAST = ["smith", "mueller", "dubois", "tanaka", "kowalski", "garcia", "okafor", "larsen", "rossi", "singh"]
DOMAINS = [
    "gmail.com",
    "outlook.de",
    "mail.example-corp.co.uk",
    "uni-heidelberg.de",
    "post.harvard.edu",
    "yahoo.fr",
    "firma.ch",
    "startup.io",
]


def sentences(corpus_dir: Path) -> list[tuple[str, str]]:
    """(source, sentence) pairs: 40-300 characters, no digits, no "@", whitespace collapsed."""
    import zstandard

    out: list[tuple[str, str]] = []
    for source in SOURCES:
        with open(corpus_dir / f"{source}.jsonl.zst", "rb") as f:
            text = io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(f), encoding="utf-8")
            for line in text:
                doc = json.loads(line)
                for s in re.split(r"(?<=[.!?])\s+", re.sub(r"\s+", " ", doc["text"])):
                    s = s.strip()
                    if 40 <= len(s) <= 300 and not re.search(r"[\d@{}\[\]|]", s) and s[0].isupper():
                        out.append((source, s))
    return out


# ----------------------------------------------------------------------------- entities


def luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:  # doubled: the digit next to the check digit, then every other one
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str((10 - total % 10) % 10)


def card(rng: random.Random, valid: bool) -> str:
    prefix, length, groups = rng.choice(
        [
            ("4", 16, (4, 4, 4, 4)),
            ("5" + rng.choice("12345"), 16, (4, 4, 4, 4)),
            ("3" + rng.choice("47"), 15, (4, 6, 5)),
        ]
        + [("6011", 16, (4, 4, 4, 4))]
    )
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    check = luhn_digit(body)
    if not valid:
        check = str((int(check) + rng.randint(1, 9)) % 10)
    digits = body + check
    sep = rng.choice(["", " ", "-", " "])
    if not sep:
        return digits
    parts, at = [], 0
    for g in groups:
        parts.append(digits[at : at + g])
        at += g
    return sep.join(parts)


IBAN_SPECS = {  # country: BBAN made of (kind, length) runs: n digits, a upper letters, c alphanumerics
    "DE": [("n", 18)],
    "GB": [("a", 4), ("n", 14)],
    "FR": [("n", 10), ("c", 11), ("n", 2)],
    "NL": [("a", 4), ("n", 10)],
    "ES": [("n", 20)],
    "IT": [("a", 1), ("n", 10), ("c", 12)],
}


def iban_check(country: str, bban: str) -> str:
    moved = bban + country + "00"
    number = int("".join(str(int(ch, 36)) for ch in moved))
    return f"{98 - number % 97:02d}"


def iban(rng: random.Random, valid: bool) -> str:
    country = rng.choice(sorted(IBAN_SPECS))
    pools = {"n": string.digits, "a": string.ascii_uppercase, "c": string.digits + string.ascii_uppercase}
    bban = "".join(rng.choice(pools[k]) for k, n in IBAN_SPECS[country] for _ in range(n))
    check = iban_check(country, bban)
    if not valid:
        check = f"{(int(check) + rng.randint(1, 96)) % 97 + 2:02d}"
        if check == iban_check(country, bban):
            check = f"{(int(check) + 1) % 97 + 2:02d}"
    value = country + check + bban
    if rng.random() < 0.6:  # the printed form: groups of four
        value = " ".join(value[i : i + 4] for i in range(0, len(value), 4))
    return value


def email(rng: random.Random) -> str:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    local = rng.choice(
        [f"{first}.{last}", f"{first[0]}{last}", f"{first}_{last}{rng.randint(1, 99)}", f"{first}+news", first]
    )
    return f"{local}@{rng.choice(DOMAINS)}"


def public_ipv4(rng: random.Random) -> str:
    while True:
        ip = ipaddress.IPv4Address(rng.getrandbits(32))
        if ip.is_global and not ip.is_multicast:
            return str(ip)


def public_ipv6(rng: random.Random) -> str:
    while True:
        ip = ipaddress.IPv6Address((0x2 << 124) | rng.getrandbits(124) if rng.random() < 0.5 else rng.getrandbits(128))
        if ip.is_global and not ip.is_multicast and ip.ipv4_mapped is None:
            if rng.random() < 0.5:  # sparse addresses, as servers have: compressible zero runs
                words = ip.exploded.split(":")
                for i in rng.sample(range(3, 7), 3):
                    words[i] = "0000"
                ip = ipaddress.IPv6Address(":".join(words))
                if not ip.is_global:
                    continue
            return ip.compressed if rng.random() < 0.8 else ip.exploded


def private_ip(rng: random.Random) -> str:
    return rng.choice(
        [
            f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
            f"192.168.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
            f"172.{rng.randint(16, 31)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
            f"127.0.0.{rng.randint(1, 9)}",
            f"169.254.{rng.randint(1, 254)}.{rng.randint(1, 254)}",
            f"192.0.2.{rng.randint(1, 254)}",
            "::1",
            f"fe80::{rng.getrandbits(16):x}:{rng.getrandbits(16):x}",
            f"fd{rng.getrandbits(8):02x}:{rng.getrandbits(16):x}::{rng.getrandbits(16):x}",
            f"2001:db8::{rng.getrandbits(16):x}",
        ]
    )


def d(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def phone(rng: random.Random) -> str:
    n = lambda k: str(rng.randint(1, 9)) + d(rng, k - 1)  # noqa: E731 - a group that does not start with 0
    return rng.choice(
        [
            f"({n(3)}) {n(3)}-{d(rng, 4)}",  # US
            f"{n(3)}-{n(3)}-{d(rng, 4)}",
            f"+1 {n(3)} {n(3)} {d(rng, 4)}",
            f"+1-{n(3)}-{n(3)}-{d(rng, 4)}",
            f"+44 20 {n(4)} {d(rng, 4)}",  # UK
            f"020 {n(4)} {d(rng, 4)}",
            f"+44 7{d(rng, 3)} {d(rng, 6)}",
            f"+49 30 {n(8)}",  # DE
            f"030 {n(4)} {d(rng, 4)}",
            f"+49 (0)89 {n(4)} {d(rng, 3)}",
            f"+33 {rng.randint(1, 9)} {d(rng, 2)} {d(rng, 2)} {d(rng, 2)} {d(rng, 2)}",  # FR
            f"0{rng.randint(1, 9)} {d(rng, 2)} {d(rng, 2)} {d(rng, 2)} {d(rng, 2)}",
            f"+91 {rng.randint(7, 9)}{d(rng, 4)} {d(rng, 5)}",  # IN
            f"+81 3-{n(4)}-{d(rng, 4)}",  # JP
            f"03-{n(4)}-{d(rng, 4)}",
            f"+61 2 {n(4)} {d(rng, 4)}",  # AU
            f"(02) {n(4)} {d(rng, 4)}",
            f"+{rng.choice(['1', '44', '49', '33'])}{n(10)}",  # E.164, no separators
        ]
    )


def isbn(rng: random.Random) -> str:
    if rng.random() < 0.5:
        body = "978" + d(rng, 9)
        check = (10 - sum(int(c) * (1 if i % 2 == 0 else 3) for i, c in enumerate(body)) % 10) % 10
        return f"{body[:3]}-{body[3]}-{body[4:6]}-{body[6:12]}-{check}"
    body = d(rng, 9)
    check = sum(int(c) * (10 - i) for i, c in enumerate(body))
    check = (11 - check % 11) % 11
    return f"{body[0]}-{body[1:4]}-{body[4:9]}-{'X' if check == 10 else check}"


def negative(rng: random.Random) -> tuple[str, str]:
    """(kind, value) of a hard negative."""
    kind = rng.choice(
        ["private_ip", "version", "version", "date", "time", "order_number", "order_number", "isbn"]
        + ["luhn_invalid", "luhn_invalid", "long_digits", "iban_invalid", "decimal", "handle"]
    )
    if kind == "private_ip":
        return kind, private_ip(rng)
    if kind == "version":
        parts = rng.randint(3, 4)
        return kind, ".".join(str(rng.randint(0, 20)) for _ in range(parts))
    if kind == "date":
        y, m, day = rng.randint(1950, 2030), rng.randint(1, 12), rng.randint(1, 28)
        return kind, rng.choice([f"{y}-{m:02d}-{day:02d}", f"{day:02d}/{m:02d}/{y}", f"{day:02d}.{m:02d}.{y}"])
    if kind == "time":
        return kind, f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
    if kind == "order_number":
        return kind, rng.choice([f"{d(rng, 5)}-{d(rng, 5)}", f"{d(rng, 4)}-{d(rng, 6)}-{d(rng, 2)}", d(rng, 10)])
    if kind == "isbn":
        return kind, isbn(rng)
    if kind == "luhn_invalid":
        return kind, card(rng, valid=False)
    if kind == "long_digits":
        while True:
            value = d(rng, rng.choice([13, 16, 19, 22]))
            if luhn_digit(value[:-1]) != value[-1]:
                return kind, value
    if kind == "iban_invalid":
        return kind, iban(rng, valid=False)
    if kind == "decimal":
        return kind, rng.choice(
            [f"{rng.randint(1, 999)},{d(rng, 3)},{d(rng, 3)}", f"{rng.randint(0, 99)}.{d(rng, 6)}"]
        )
    return kind, f"@{rng.choice(FIRST)}_{rng.choice(LAST)}"


# Templates: `{}` is where the value goes. Kinds with context words that make them negatives.
ENTITY_TEMPLATES = {
    "email": [
        "Write to {} for details.",
        "Contact: {}",
        "Send the draft to <{}> before Friday.",
        "(reply to {})",
        "My address is {}.",
        "mailto:{}",
    ],
    "ip_address": [
        "The request came from {}.",
        "Server {} stopped responding.",
        "Connect to {} on port 22.",
        "Logged in from [{}] yesterday.",
        "host={} status=ok",
    ],
    "phone": ["Call {} after six.", "Phone: {}", "Tel. {}.", "You can reach the office at {} or by post."],
    "credit_card": ["Card number {} was charged.", "Pay with {}, expiry next year.", "CC: {}"],
    "iban": ["Transfer the rent to IBAN {}.", "Bank account: {}", "IBAN: {} (the landlord's)."],
}
NEGATIVE_TEMPLATES = {
    "private_ip": ["The router answers on {}.", "Bind the service to {} only."],
    "version": ["Upgrade to version {} first.", "It needs release {} or later.", "Built with v{} of the library."],
    "date": ["Dated {}.", "The meeting on {} was cancelled."],
    "time": ["It started at {} sharp.", "Logged at {}."],
    "order_number": ["Your order #{} has shipped.", "Order no. {} was cancelled.", "Invoice number {} is due."],
    "isbn": ["See ISBN {} for the edition.", "ISBN {}"],
    "luhn_invalid": ["Reference {} in all letters.", "Serial {} is printed on the back."],
    "long_digits": ["Tracking code {} was issued.", "Ticket {} is open."],
    "iban_invalid": ["The form showed {} by mistake.", "Account {} was rejected."],
    "decimal": ["The total came to {} units.", "Ratio: {}"],
    "handle": ["Follow {} for updates.", "Thanks to {} for the fix."],
}
VALUE = {
    "email": email,
    "ip_address": lambda rng: public_ipv6(rng) if rng.random() < 0.3 else public_ipv4(rng),
    "phone": phone,
    "credit_card": lambda rng: card(rng, valid=True),
    "iban": lambda rng: iban(rng, valid=True),
}


def record(i: int, pool: list[tuple[str, str]], rng: random.Random) -> dict:
    source = rng.choice(pool)[0]  # the record's sentences come from one source
    same = [s for src, s in pool if src == source]
    pieces: list[tuple[str, str | None, str | None]] = []  # (text, label kind "e:<type>" / "n:<kind>", value)
    for _ in range(rng.randint(1, 4)):
        pieces.append((rng.choice(same), None, None))
    for _ in range(rng.randint(0, 3)):
        if rng.random() < 0.55:
            kind = rng.choice(sorted(ENTITY_TEMPLATES))
            pieces.append((rng.choice(ENTITY_TEMPLATES[kind]), f"e:{kind}", VALUE[kind](rng)))
        else:
            kind, value = negative(rng)
            pieces.append((rng.choice(NEGATIVE_TEMPLATES[kind]), f"n:{kind}", value))
    head, rest = pieces[0], pieces[1:]
    rng.shuffle(rest)
    text, entities, negatives = "", [], []
    for template, label, value in [head, *rest]:
        if text:
            text += rng.choice([" ", " ", "\n", "\n\n"])
        if label is None:
            text += template
            continue
        before, after = template.split("{}")
        start = len(text) + len(before)
        text += before + value + after
        kind = label[2:]
        entry = {"start": start, "end": start + len(value), "value": value}
        (entities if label.startswith("e:") else negatives).append(
            {"type": kind, **entry} if label.startswith("e:") else {"kind": kind, **entry}
        )
    for e in entities + negatives:
        assert text[e["start"] : e["end"]] == e["value"]
    return {"id": f"pii-eval-{i:04d}", "source": source, "text": text, "entities": entities, "negatives": negatives}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus-dir", default=str(REPO.parent / "shared" / "corpus"))
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    rng = random.Random(SEED)
    pool = sentences(Path(args.corpus_dir))
    rows = [record(i, pool, rng) for i in range(N_RECORDS)]
    with open(args.out, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    n_ent = sum(len(r["entities"]) for r in rows)
    n_neg = sum(len(r["negatives"]) for r in rows)
    print(f"{args.out}: {len(rows)} records, {n_ent} entities, {n_neg} hard negatives")


if __name__ == "__main__":
    main()
