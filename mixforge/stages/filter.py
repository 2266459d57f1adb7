"""filter: language ID, then the heuristic rule sets, in configured order.

The rule sets are those of `FilterConfig.rules`, any registered `mixforge.filters.RuleSet` (a new
one is a class, see `mixforge.filters.base`); each gets the same `TextBatch` of the documents still
alive (text, `lang`, `url`, `default_language`).

Score, then select. Every rule set evaluates the documents still alive when its turn comes and
records its verdict; for a rule set in `drop` mode, the first failing sub-rule drops the document
with `drop_reason` = that sub-rule's name (`lang`, `gopher_quality.word_count`, `c4.curly_bracket`,
... see `mixforge.filters`); an `annotate` rule set only writes columns. The shard runner counts
documents and characters dropped per reason, which in rule order is the funnel.

Columns written (stable names):
- `lang` (string), `lang_score` (float64): when language ID is enabled.
- `fail_lang`, `fail_<rule_set>` (string): the first failing sub-rule of that rule set (or of
  language ID), null when it passed or was not evaluated (document dropped before it). Written for
  annotate-mode rule sets only (for drop mode the verdict is the `drop_reason`).
- `<rule_set>_<feature>` (float64), e.g. `gopher_quality_mean_word_length`,
  `gopher_repetition_dup_5_gram`, `c4_n_sentences`, `fineweb_quality_list_ratio`: the measured
  values, when `write_features`; null where the rule set did not evaluate the document.

A dropped document's `_removed/` row says why (schema.DROP_FIELDS): `drop_rule` (the first failing
sub-rule, as `drop_reason`; `lang.not_in_keep_list` for a language outside the keep-list),
`drop_value`, `drop_op` and `drop_threshold` where the sub-rule compared a measure with a limit, and
`drop_detail` "<shard> row <n>: gopher_quality.alpha_words: 0.42 < 0.8".

C4 in drop mode edits the text of the documents it keeps (removed lines), and later rule sets see
the edited text, as in datatrove's pipeline. Counters: `c4.lines_removed`, `c4.chars_removed`
(over kept documents; blank lines are not counted).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mixforge import schema as S
from mixforge.filters import FilterConfig, LanguageID, TextBatch, build_rule_set
from mixforge.filters.text import as_string_array
from mixforge.schema import LANG, LANG_SCORE
from mixforge.stage import ShardContext, Stage, StageResult, split_by_reason


class Filter(Stage):
    name = "filter"
    reads = (S.TEXT,)  # and the url where there is one (the url rule set passes documents without)
    writes = (S.TEXT, LANG, LANG_SCORE)

    def __init__(self, config: FilterConfig | None = None, write_features: bool = True) -> None:
        self.config = config or FilterConfig()
        self.write_features = write_features
        self.language_id = LanguageID(self.config.language_id) if self.config.language_id.enabled else None
        self.rule_sets = [build_rule_set(rc) for rc in self.config.rules]
        # the columns documented above: the verdicts of annotate-mode rule sets, the measured features
        self.writes = (
            *Filter.writes,
            *(f"fail_{rs.name}" for rs in self.rule_sets),
            *((f"{rs.name.replace('.', '_')}_*" for rs in self.rule_sets) if write_features else ()),
        )
        self._ready = False
        self._order: list[str] = (
            ["lang"] if self.language_id is not None and self.config.language_id.mode == "drop" else []
        )

    def drop_order(self) -> list[str]:
        return list(self._order)

    def setup(self) -> None:
        if self.language_id is not None:
            self.language_id.setup()
        for rs in self.rule_sets:
            rs.setup()
        self._ready = True

    def process(self, batch: pa.Table, ctx: ShardContext) -> StageResult:
        if not self._ready:
            self.setup()
        n = batch.num_rows
        original_text = batch.column(S.TEXT).combine_chunks() if n else pa.array([], pa.string())
        text = as_string_array(original_text)
        url = batch.column(S.URL) if S.URL in batch.column_names else None
        # The first failing sub-rule of each dropped document and what it measured (drop details).
        reason = np.full(n, None, dtype=object)
        rule = np.full(n, None, dtype=object)
        op = np.full(n, None, dtype=object)
        value = np.full(n, np.nan)
        threshold = np.full(n, np.nan)
        alive = np.ones(n, dtype=bool)
        edited = np.zeros(n, dtype=bool)
        new_columns: dict[str, pa.Array] = {}

        lang = None
        if self.language_id is not None:
            ev = self.language_id.evaluate_batch(TextBatch(text))
            lang = pa.array(ev.features["lang"].tolist(), pa.string())
            new_columns[LANG] = lang
            new_columns[LANG_SCORE] = pa.array(ev.features["lang_score"], pa.float64())
            fails = ev.fails["lang"]
            if self.config.language_id.mode == "drop":
                found = ev.failures()
                reason[fails], rule[fails], op[fails] = found.reason[fails], found.rule[fails], found.op[fails]
                value[fails], threshold[fails] = found.value[fails], found.threshold[fails]
                alive &= ~fails
            else:
                new_columns["fail_lang"] = pa.array(np.where(fails, "lang", None).tolist(), pa.string())
        elif LANG in batch.column_names:
            lang = batch.column(LANG).combine_chunks()

        # One TextBatch for every rule set: words, lines, ... are computed once and cut down to the
        # documents still alive by index (TextBatch.take); C4's edits re-segment the edited documents only.
        whole = TextBatch(text, lang=lang, url=url, default_language=self.config.default_language)
        for rs, rc in zip(self.rule_sets, self.config.rules):
            idx = np.flatnonzero(alive)
            ev = rs.evaluate_batch(whole.take(idx))
            if rc.mode == "drop":
                self._order.extend(name for name in ev.fails if name not in self._order)
                found = ev.failures()
                first = found.reason
                failing = first != None  # noqa: E711 (elementwise)
                at = idx[failing]
                reason[at], rule[at], op[at] = first[failing], found.rule[failing], found.op[failing]
                value[at], threshold[at] = found.value[failing], found.threshold[failing]
                alive[at] = False
                if ev.text is not None:  # an editing rule set (C4 with remove_lines)
                    text, changed = self._apply_edits(text, idx, ~failing, ev, ctx, rs.name)
                    edited[changed] = True
                    whole = whole.replace(changed, text.take(pa.array(changed)))
            else:
                first = ev.first_failure()
                col = np.full(n, None, dtype=object)
                col[idx] = first
                new_columns[f"fail_{rs.name}"] = pa.array(col.tolist(), pa.string())
            if self.write_features:
                for key, values in ev.features.items():
                    full = np.zeros(n, dtype=np.float64)
                    full[idx] = values
                    mask = np.ones(n, dtype=bool)
                    mask[idx] = False
                    new_columns[key.replace(".", "_")] = pa.array(full, pa.float64(), mask=mask)

        if edited.any():
            out_text = pc.if_else(pa.array(edited), text.cast(original_text.type), original_text)
            batch = batch.set_column(batch.column_names.index(S.TEXT), S.TEXT, out_text)
        for name, values in new_columns.items():
            batch = S.set_column(batch, name, values)
        return split_by_reason(
            batch,
            pa.array(reason, pa.string()),
            rule=pa.array(rule, pa.string()),
            value=pa.array(value, pa.float64(), from_pandas=True),  # NaN: nothing measured (null)
            op=pa.array(op, pa.string()),
            threshold=pa.array(threshold, pa.float64(), from_pandas=True),
        )

    @staticmethod
    def _apply_edits(text: pa.Array, idx: np.ndarray, kept_local: np.ndarray, ev, ctx: ShardContext, name: str):
        rows = idx[kept_local]
        changed_local = kept_local & (ev.chars_removed != 0)
        ctx.count(f"{name}.lines_removed", int(ev.lines_removed[kept_local].sum()))
        ctx.count(f"{name}.chars_removed", int(ev.chars_removed[kept_local].sum()))
        if not changed_local.any():
            return text, rows[:0]
        changed_rows = idx[changed_local]
        mask = np.zeros(len(text), dtype=bool)
        mask[changed_rows] = True
        replacement = ev.text.filter(pa.array(changed_local))
        return pc.replace_with_mask(text, pa.array(mask), replacement), changed_rows
