"""The uniform rule-set interface.

A rule set scores a batch of documents: for every configured sub-rule it returns a boolean
"fails" array (True = the document fails this sub-rule), plus numeric feature columns, and,
for rule sets that edit documents (C4 line removal), the edited text and per-document counts of
what was removed. It never drops anything itself: the Filter stage decides, per rule set mode,
whether the first failing sub-rule drops the document or is only written as columns.

Adding a rule set is one short class::

    class NoDigits(RuleSet):
        name = "no_digits"
        def evaluate_batch(self, batch: TextBatch) -> Evaluation:
            ev = Evaluation(batch.n_docs)
            has = batch.text.str.contains(r"\\d").to_numpy()
            ev.add_rule(f"{self.name}.has_digits", has)
            return ev
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pyarrow as pa

from mixforge.filters.text import TextBatch


@dataclass
class Evaluation:
    """What one rule set found about each document of a batch."""

    n_docs: int
    fails: dict[str, np.ndarray] = field(default_factory=dict)  # "<ruleset>.<sub_rule>" -> bool[n_docs], in check order
    features: dict[str, np.ndarray] = field(default_factory=dict)  # "<ruleset>.<feature>" -> values[n_docs]
    text: pa.Array | None = None  # edited text (same length), or None when the rule set does not edit
    lines_removed: np.ndarray | None = None  # int[n_docs], for editing rule sets
    chars_removed: np.ndarray | None = None  # int[n_docs], for editing rule sets

    def add_rule(self, name: str, fails) -> None:
        arr = np.asarray(fails, dtype=bool)
        assert arr.shape == (self.n_docs,), (name, arr.shape, self.n_docs)
        self.fails[name] = arr

    def add_feature(self, name: str, values) -> None:
        arr = np.asarray(values)
        assert arr.shape == (self.n_docs,), (name, arr.shape, self.n_docs)
        self.features[name] = arr

    def any_fail(self) -> np.ndarray:
        out = np.zeros(self.n_docs, dtype=bool)
        for f in self.fails.values():
            out |= f
        return out

    def first_failure(self) -> np.ndarray:
        """Per document, the name of the first failing sub-rule (in check order), or None."""
        reason = np.full(self.n_docs, None, dtype=object)
        for name, f in self.fails.items():
            reason[f & (reason == None)] = name  # noqa: E711 (elementwise)
        return reason


class RuleSet:
    """Base class: subclasses set `name` and implement `evaluate_batch`."""

    name: ClassVar[str]
    needs_lang: ClassVar[bool] = False
    needs_url: ClassVar[bool] = False

    def setup(self) -> None:
        """Load heavy state (models, lists) once per worker."""

    def evaluate_batch(self, batch: TextBatch) -> Evaluation:
        raise NotImplementedError

    def evaluate(self, text, lang=None, url=None) -> Evaluation:
        """Convenience: evaluate a string column (pa.Array, pl.Series or list of str)."""
        return self.evaluate_batch(TextBatch(text, lang=lang, url=url))


def safe_div(num, den) -> np.ndarray:
    """num / den with 0 where den == 0 (datatrove would raise ZeroDivisionError there)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape)
    np.divide(num, den, out=out, where=den != 0)
    return out
