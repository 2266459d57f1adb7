"""URL block-lists, vectorised (semantics of datatrove's `URLFilter` with its lists supplied by you).

Lists are files (local path or any fsspec URI) with one entry per line; blank lines and lines
starting with '#' are ignored. Sub-rules, in order (drop_reason `url.<sub_rule>`): `domain` (the
URL's host, or any parent domain of it, is listed: blocking `example.com` blocks
`www.example.com`), `url` (the full URL is listed), `banned_word` (a listed word is a token of the
URL split on non-alphanumerics, case-sensitive as in datatrove), `soft_banned_words` (at least
`soft_word_threshold` listed soft words are tokens), `banned_subword` (a listed string occurs in the
URL lowercased with non-alphanumerics removed). Documents without a URL pass every sub-rule.

Difference from datatrove: datatrove matches a domain entry against the registered domain (public
suffix list via tldextract) and the full host only; we match the host and all its parent domains,
which needs no suffix list and also blocks deeper subdomains of a listed subdomain.
"""

from __future__ import annotations

import re

import fsspec
import numpy as np
import polars as pl

from mixforge.filters.base import Evaluation, Measure, RuleSet
from mixforge.filters.config import URLFilterConfig
from mixforge.filters.text import TextBatch

_HOST = r"^(?:[A-Za-z][A-Za-z0-9+.\-]*://)?(?:[^@/?#]*@)?([^:/?#\s]+)"
_NORMALIZER = re.compile(r"[^a-zA-Z0-9]+")


def load_list(uri: str | None, normalize: bool = False) -> list[str]:
    """Entries of a list file; `normalize`: lowercase alphanumerics only (datatrove's word lists)."""
    if not uri:
        return []
    with fsspec.open(uri, "rt", encoding="utf-8") as f:
        entries = [line.strip() for line in f]
    entries = [e for e in entries if e and not e.startswith("#")]
    if normalize:
        entries = [_NORMALIZER.sub("", e).lower() for e in entries]
    return sorted({e for e in entries if e})


class URLFilter(RuleSet):
    name = "url"
    config_class = URLFilterConfig

    def __init__(self, config: URLFilterConfig | None = None) -> None:
        super().__init__(config)
        self._loaded = False

    def setup(self) -> None:
        c = self.config
        self.domains = [d.lower().rstrip(".") for d in load_list(c.blocked_domains)]
        self.urls = load_list(c.blocked_urls)
        self.banned_words = load_list(c.banned_words, normalize=True)
        self.banned_subwords = load_list(c.banned_subwords, normalize=True)
        self.soft_words = load_list(c.soft_banned_words, normalize=True)
        self._loaded = True

    def evaluate_batch(self, batch: TextBatch) -> Evaluation:
        if not self._loaded:
            self.setup()
        n, name = batch.n_docs, self.name
        ev = Evaluation(n)
        url = batch.url if batch.url is not None else pl.Series("url", [None] * n, dtype=pl.String)
        has_url = (url.is_not_null() & (url.str.len_bytes() > 0)).fill_null(False).to_numpy()
        url = url.fill_null("")

        domain = np.zeros(n, dtype=bool)
        if self.domains:
            host = url.str.extract(_HOST, 1).fill_null("").str.to_lowercase().str.strip_chars_end(".")
            for _ in range(16):  # host, then each parent domain
                domain |= host.is_in(self.domains).to_numpy()
                if not host.str.contains(".", literal=True).any():
                    break
                host = host.str.replace(r"^[^.]*\.", "")
        ev.add_rule(f"{name}.domain", domain & has_url)
        ev.add_rule(f"{name}.url", url.is_in(self.urls).to_numpy() & has_url if self.urls else np.zeros(n, bool))

        banned = np.zeros(n, dtype=bool)
        soft = np.zeros(n, dtype=bool)
        soft_count = np.zeros(n, dtype=np.int64)
        if self.banned_words or self.soft_words:
            tokens = url.str.extract_all(r"[a-zA-Z0-9]+")
            counts = tokens.list.len().fill_null(0).to_numpy()
            flat = tokens.explode(empty_as_null=False, keep_nulls=False)
            doc = np.repeat(np.arange(n), counts)
            if self.banned_words:
                banned = np.bincount(doc[flat.is_in(self.banned_words).to_numpy()], minlength=n) > 0
            if self.soft_words:
                hit = flat.is_in(self.soft_words).to_numpy()
                distinct = pl.DataFrame({"d": doc[hit], "w": flat.filter(pl.Series(hit))}).unique()["d"].to_numpy()
                soft_count = np.bincount(distinct, minlength=n)
                soft = soft_count >= self.config.soft_word_threshold
        ev.add_rule(f"{name}.banned_word", banned & has_url)
        soft_measure = (
            Measure(soft_count, above=self.config.soft_word_threshold, above_op=">=") if self.soft_words else None
        )
        ev.add_rule(f"{name}.soft_banned_words", soft & has_url, soft_measure)
        if self.banned_subwords:
            normalized = url.str.replace_all(r"[^a-zA-Z0-9]+", "").str.to_lowercase()
            sub = normalized.str.contains_any(self.banned_subwords).fill_null(False).to_numpy()
        else:
            sub = np.zeros(n, dtype=bool)
        ev.add_rule(f"{name}.banned_subword", sub & has_url)
        return ev
