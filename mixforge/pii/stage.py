"""The `pii` stage: find e-mails, IPs, phones, cards and IBANs in every document, then annotate, redact or drop.

Detection is `mixforge.pii.detect` (vectorised candidates, Python checks on the matches only). Per entity:

* `annotate`: `pii_<entity>` counts it; `pii_spans` (list of {entity, start, end}) locates it in the text as
  written (after any redaction of other entities);
* `redact`: the span becomes its placeholder (`<EMAIL>`, `<IP_ADDRESS>`, `<PHONE>`, `<CREDIT_CARD>`, `<IBAN>`);
  `pii_<entity>` counts the replacements;
* `drop`: a document holding it goes to `_removed/` with drop_reason `pii.<entity>` (the first such entity
  in `detect.PRIORITY` order) and the original text, as every stage's drops do.

The stage's `_stats.json` gets a `pii` section: found and documents per entity, and per source.

Where it runs: directly after dedup (before decontaminate and rephrase). Redacting before dedup would change
the duplicate clusters: two copies of a page that differ only in an address would become exact duplicates,
and documents would be compared on placeholders. Put it earlier only knowing that.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np
import polars as pl
import pyarrow as pa

from mixforge import schema as S
from mixforge import storage
from mixforge.pii.config import PIIConfig
from mixforge.pii.detect import PLACEHOLDERS, PRIORITY, detect
from mixforge.stage import ShardContext, Stage, StageResult

SPANS = "pii_spans"
SPAN_TYPE = pa.list_(pa.struct([("entity", pa.string()), ("start", pa.int32()), ("end", pa.int32())]))


def count_column(entity: str) -> str:
    return f"pii_{entity.lower()}"


class PIIStage(Stage):
    name = "pii"
    reads = (S.TEXT,)
    writes = ("pii_*",)

    def __init__(self, config: PIIConfig | None = None) -> None:
        self.config = config or PIIConfig()
        self.modes = self.config.modes()
        ner = self.config.ner
        if ner is not None:
            self.modes.update({e: ner.mode for e in ner.entities})
        self.order = [e for e in PRIORITY if e in self.modes] + [e for e in self.modes if e not in PRIORITY]
        self._ner = None

    def setup(self) -> None:
        if self.config.ner is not None and self._ner is None:
            from mixforge.pii.presidio import PresidioBackend

            self._ner = PresidioBackend(self.config.ner)

    def drop_order(self) -> list[str]:
        return [f"pii.{e}" for e in self.order if self.modes[e] == "drop"]

    def find(self, text: pl.Series) -> pl.DataFrame:
        """Every entity found (doc, entity, start, end, value), without overlaps; regex entities first."""
        regex = [e for e in self.modes if e in PLACEHOLDERS]
        found = detect(text, regex, self.config.public_ips_only)
        if self.config.ner is None:
            return found
        self.setup()
        ner = self._ner.find(text)
        if ner.height == 0:
            return found
        # a name inside an e-mail address is the address's: regex findings win overlaps
        both = pl.concat([found.with_columns(pl.lit(0).alias("rank")), ner.with_columns(pl.lit(1).alias("rank"))])
        from mixforge.pii.detect import _without_overlaps

        return _without_overlaps(both).sort("doc", "start").drop("rank")

    def process(self, batch: pa.Table, ctx: ShardContext) -> StageResult:
        column = batch.column(S.TEXT).combine_chunks()
        text = pl.Series("text", column)
        found = self.find(text)
        n = batch.num_rows
        counts = {e: np.zeros(n, dtype=np.int32) for e in self.modes}
        if found.height:
            per = found.group_by("doc", "entity").len()
            for doc, entity, k in per.iter_rows():
                counts[entity][doc] = k
        reason = np.full(n, None, dtype=object)
        for entity in reversed(self.drop_order()):  # the first in order wins
            hit = counts[entity.removeprefix("pii.")] > 0
            reason[hit] = entity
        new_text, spans = self._rewrite(column, found)
        out = batch
        for entity in self.modes:
            out = S.set_column(out, count_column(entity), pa.array(counts[entity], pa.int32()))
        if self.config.spans:
            out = S.set_column(out, SPANS, spans)
        self._record(batch, found, counts, reason, ctx)
        dropped = np.not_equal(reason, None)
        if not dropped.any():
            return StageResult(S.set_column(out, S.TEXT, new_text))
        keep = pa.array(~dropped)
        rows = pa.array(np.flatnonzero(dropped), pa.int64())
        removed = out.filter(pa.array(dropped)).append_column(S.DROP_REASON, pa.array(reason[dropped], pa.string()))
        kept = S.set_column(out, S.TEXT, new_text).filter(keep)
        return StageResult(kept, removed, removed_rows=rows)

    def _rewrite(self, column: pa.Array, found: pl.DataFrame) -> tuple[pa.Array, pa.Array]:
        """The text with the redact-mode entities replaced, and the annotate-mode spans in that text.
        Python over the documents holding PII only; the others keep their text (same buffers)."""
        n = len(column)
        spans: list[list[dict] | None] = [[] for _ in range(n)]
        if found.height == 0:
            return column, pa.array(spans, SPAN_TYPE)
        by_doc: dict[int, list[tuple[str, int, int]]] = defaultdict(list)
        for doc, entity, start, end in found.select("doc", "entity", "start", "end").iter_rows():
            by_doc[doc].append((entity, start, end))
        docs = sorted(by_doc)
        originals = column.take(pa.array(docs, pa.int64())).to_pylist()
        edited: dict[int, str] = {}
        for doc, original in zip(docs, originals):
            pieces, at, shift, changed = [], 0, 0, False
            for entity, start, end in by_doc[doc]:  # sorted by start, no overlaps
                mode = self.modes[entity]
                if mode == "redact":
                    placeholder = PLACEHOLDERS.get(entity, f"<{entity.upper()}>")
                    pieces += [original[at:start], placeholder]
                    shift += len(placeholder) - (end - start)
                    at, changed = end, True
                elif mode == "annotate":
                    spans[doc].append({"entity": entity, "start": start + shift, "end": end + shift})
            if changed:
                edited[doc] = "".join(pieces) + original[at:]
        if not edited:
            return column, pa.array(spans, SPAN_TYPE)
        series = pl.Series("text", column).scatter(list(edited), list(edited.values()))
        return series.to_arrow().cast(column.type), pa.array(spans, SPAN_TYPE)

    def _record(self, batch: pa.Table, found: pl.DataFrame, counts: dict, reason: np.ndarray, ctx: ShardContext):
        """Counters (`pii.<entity>`: entities found) and figures: found and documents per entity and source."""
        sources = (
            batch.column(S.SOURCE).to_pylist() if S.SOURCE in batch.column_names else ["unknown"] * batch.num_rows
        )
        found_by: dict[str, Counter] = {e: Counter() for e in self.modes}
        docs_by: dict[str, Counter] = {e: Counter() for e in self.modes}
        for entity, values in counts.items():
            for doc in np.flatnonzero(values):
                source = sources[doc] or "unknown"
                found_by[entity][source] += int(values[doc])
                docs_by[entity][source] += 1
            ctx.count(f"pii.{entity}", int(values.sum()))
        ctx.add_figures(
            {
                "pii": {
                    "found": {e: dict(c) for e, c in found_by.items() if c},
                    "documents": {e: dict(c) for e, c in docs_by.items() if c},
                }
            }
        )


def report(stage: PIIStage, summary: dict) -> dict:
    """The `pii` section of the stage's `_stats.json`: per entity, its mode, what was found (entities and
    documents, in documents kept or dropped), and the same per source."""
    figures = (summary.get("figures") or {}).get("pii", {})
    found, documents = figures.get("found", {}), figures.get("documents", {})
    entities = {
        e: {
            "mode": stage.modes[e],
            "found": sum(found.get(e, {}).values()),
            "documents": sum(documents.get(e, {}).values()),
        }
        for e in stage.order
    }
    sources = sorted({s for per in (*found.values(), *documents.values()) for s in per})
    by_source = {
        s: {e: {"found": found.get(e, {}).get(s, 0), "documents": documents.get(e, {}).get(s, 0)} for e in stage.order}
        for s in sources
    }
    return {"entities": entities, "by_source": by_source, "public_ips_only": stage.config.public_ips_only}


def run_pii(run, inputs: Sequence[tuple[int, str]], config, executor) -> dict:
    """The stage over a run's shards, then its report into `_stats.json` (as classify adds its own)."""
    from mixforge.runner import run_stage
    from mixforge.stages.registry import extra_settings

    stage = PIIStage(extra_settings(config, "pii"))
    layout = run.stage("pii")
    options = config.storage.options
    summary = run_stage(stage, layout, inputs, executor, config.read, options, write_stats=False)
    summary["pii"] = report(stage, summary)
    summary.pop("figures", None)  # restated in `pii`
    summary.pop("figures_missing", None)
    storage.write_json(layout.stats, summary, options)
    return summary
