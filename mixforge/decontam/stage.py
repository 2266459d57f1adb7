"""The decontaminate stage over curated shards: each document's word n-grams looked up in the index.

Vectorised per batch: the words of every document (Arrow kernels, mixforge.decontam.ngrams), their
n-gram hashes (numpy), one `searchsorted` against the sorted index. Python runs only per contaminated
document (the example n-gram, and in cut mode its spans).

Modes:
- annotate: `contaminated` (bool), `contamination_benchmarks` (list of names, empty when clean),
  `contamination_ngrams` (int32: n-gram positions of the document found in the index);
- drop: a contaminated document goes to `_removed/` with reason `decontaminate.<benchmark>` (its first
  matching benchmark in config order), the matches counted in drop_value and all benchmarks and an
  example n-gram in drop_detail;
- cut (GPT-3): every matching n-gram's span, widened by `cut.margin_chars` on each side, is removed and
  the document split there; a document with more than `cut.max_splits` spans removed is dropped
  (`decontaminate.too_many_splits`), pieces shorter than `cut.min_piece_chars` are dropped, and the
  remaining pieces become rows `<id>#cut<k>` with `parent_id` = the original id. The original goes to
  `_removed/` (`decontaminate.cut`, or `decontaminate.no_piece_left`). Counted as a generating stage:
  docs_in = used (clean documents, passed through) + dropped (every contaminated one); docs_kept = the
  clean documents + the pieces.

Tokens in the report are the normalised words (the n-gram tokenisation), not a model's tokens.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from mixforge import schema as S
from mixforge import storage
from mixforge.decontam.config import DecontamConfig
from mixforge.decontam.index import LoadedIndex, load_index
from mixforge.decontam.ngrams import ngram_table, ngrams_of_words, normalized_word_lists, word_spans
from mixforge.stage import ShardContext, Stage, StageResult, split_by_reason

CONTAMINATED = "contaminated"
BENCHMARKS = "contamination_benchmarks"
NGRAMS = "contamination_ngrams"
REASON_PREFIX = "decontaminate."
CUT, TOO_MANY_SPLITS, NO_PIECE_LEFT, UNLOCATED = (
    "decontaminate.cut",
    "decontaminate.too_many_splits",
    "decontaminate.no_piece_left",
    "decontaminate.unlocated",  # flagged, but the span tokeniser found no match (never seen; dropped whole)
)


class Matches:
    """What the index says about one batch."""

    def __init__(self, index: LoadedIndex, texts: pa.Array, n: int, min_matches: int, numbers: bool) -> None:
        self.words = normalized_word_lists(texts, numbers)
        hashes, offsets = ngram_table(self.words, n)
        n_docs = len(offsets) - 1
        doc_of = np.repeat(np.arange(n_docs), np.diff(offsets))
        if len(index.hashes) and len(hashes):
            pos = np.minimum(np.searchsorted(index.hashes, hashes), len(index.hashes) - 1)
            hit = index.hashes[pos] == hashes
        else:
            pos, hit = np.zeros(len(hashes), np.int64), np.zeros(len(hashes), bool)
        self.count = np.bincount(doc_of[hit], minlength=n_docs)
        self.masks = np.zeros(n_docs, np.uint64)
        np.bitwise_or.at(self.masks, doc_of[hit], index.masks[pos[hit]])
        self.contaminated = self.count >= min_matches
        # the first matching n-gram of each document with one: its word position
        hit_at = np.flatnonzero(hit)
        docs_hit, first = np.unique(doc_of[hit_at], return_index=True)
        self.first_word = dict(zip(docs_hit.tolist(), (hit_at[first] - offsets[docs_hit]).tolist()))
        word_offsets = np.asarray(self.words.offsets, np.int64)
        self.n_words = np.diff(word_offsets)
        self.n = n

    def ngram_text(self, doc: int) -> str:
        words = self.words[doc].values
        k = self.first_word[doc]
        return " ".join(words.slice(k, self.n).to_pylist())

    def benchmarks(self, doc: int, names: tuple[str, ...]) -> list[str]:
        mask = int(self.masks[doc])
        return [name for b, name in enumerate(names) if mask >> b & 1]


class DecontamStage(Stage):
    name = "decontaminate"
    reads = (S.ID, S.TEXT)
    writes = (CONTAMINATED, BENCHMARKS, NGRAMS, S.PARENT_ID)

    def __init__(
        self,
        config: DecontamConfig,
        index_uri: str,
        examples_dir: str | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.index_uri = index_uri
        self.examples_dir = examples_dir
        self.storage_options = storage_options
        self.benchmarks = tuple(b.name for b in config.benchmarks)
        self.generates = config.mode == "cut"  # pieces are new rows: the generating-stage accounting
        self._index: LoadedIndex | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_index": None}  # shipped to workers without the index; setup() loads it

    def setup(self) -> None:
        self._index = load_index(self.index_uri, self.config.index_partitions, self.storage_options)

    def drop_order(self) -> list[str]:
        if self.config.mode == "cut":
            return [TOO_MANY_SPLITS, NO_PIECE_LEFT, CUT, UNLOCATED]
        return [REASON_PREFIX + b for b in self.benchmarks]

    def process(self, batch: pa.Table, ctx: ShardContext) -> StageResult:
        if self._index is None:
            self.setup()
        cfg = self.config
        m = Matches(self._index, batch.column(S.TEXT), cfg.ngram, cfg.min_matches, cfg.normalize_numbers)
        rows = np.flatnonzero(m.contaminated).tolist()
        found = {r: m.benchmarks(r, self.benchmarks) for r in rows}
        self._record(batch, ctx, m, rows, found)
        if cfg.mode == "annotate":
            names = [found.get(r, []) for r in range(batch.num_rows)]
            return StageResult(
                batch.append_column(CONTAMINATED, pa.array(m.contaminated, pa.bool_()))
                .append_column(BENCHMARKS, pa.array(names, pa.list_(pa.string())))
                .append_column(NGRAMS, pa.array(m.count, pa.int32()))
            )
        details = [None] * batch.num_rows
        for r in rows:
            details[r] = f"matches {','.join(found[r])} ({m.count[r]} n-grams), e.g. {m.ngram_text(r)!r}"
        if cfg.mode == "drop":
            reason = [None] * batch.num_rows
            for r in rows:
                reason[r] = REASON_PREFIX + found[r][0]
            reason = pa.array(reason, pa.string())
            return split_by_reason(
                batch,
                reason,
                ctx,
                pa.array(details, pa.string()),
                rule=reason,
                value=pa.array(m.count, pa.float64()),
                op=pa.array([">="] * batch.num_rows, pa.string()),
                threshold=pa.array([float(cfg.min_matches)] * batch.num_rows, pa.float64()),
            )
        return self._cut(batch, ctx, m, rows, details)

    # -- cut --------------------------------------------------------------------------------

    def _cut(self, batch: pa.Table, ctx: ShardContext, m: Matches, rows: list[int], details: list) -> StageResult:
        cut, n = self.config.cut, self.config.ngram
        texts = batch.column(S.TEXT)
        reasons: dict[int, str] = {}
        piece_rows, piece_texts = [], []
        for r in rows:
            text = texts[r].as_py()
            spans = matched_spans(text, n, self._index, self.config.normalize_numbers)
            if not spans:
                reasons[r] = UNLOCATED
                continue
            removed = merge_spans(spans, cut.margin_chars, len(text))
            if len(removed) > cut.max_splits:
                reasons[r] = TOO_MANY_SPLITS
                details[r] += f"; {len(removed)} spans > max_splits {cut.max_splits}"
                continue
            pieces = [p for p in split_text(text, removed) if len(p) >= cut.min_piece_chars]
            reasons[r] = CUT if pieces else NO_PIECE_LEFT
            details[r] += f"; {len(removed)} span(s) cut, {len(pieces)} piece(s) kept"
            piece_rows += [r] * len(pieces)
            piece_texts += pieces
        ctx.count("cut_spans_docs", len(rows))
        ctx.count("cut_pieces", len(piece_texts))
        clean = pa.array(~m.contaminated)
        kept = _with_parent(batch.filter(clean))
        if piece_rows:
            parents = batch.take(pa.array(piece_rows, pa.int64()))
            k = Counter()
            ids = []
            for pid in parents.column(S.ID).to_pylist():
                ids.append(f"{pid}#cut{k[pid]}")
                k[pid] += 1
            pieces = _with_parent(parents)
            pieces = pieces.set_column(pieces.schema.get_field_index(S.ID), S.ID, pa.array(ids, pa.string()))
            pieces = pieces.set_column(
                pieces.schema.get_field_index(S.TEXT), S.TEXT, pa.array(piece_texts, pa.string())
            )
            pieces = pieces.set_column(
                pieces.schema.get_field_index(S.PARENT_ID), S.PARENT_ID, parents.column(S.ID).cast(pa.string())
            )
            kept = pa.concat_tables([kept, pieces.cast(kept.schema)])
        reason = pa.array([reasons.get(r) for r in range(batch.num_rows)], pa.string())
        dropped = split_by_reason(batch, reason, ctx, pa.array(details, pa.string()))
        return StageResult(
            kept, dropped.removed, removed_rows=dropped.removed_rows, used=int((~m.contaminated).sum()), skipped={}
        )

    # -- report figures -----------------------------------------------------------------------

    def _record(self, batch: pa.Table, ctx: ShardContext, m: Matches, rows: list[int], found: dict) -> None:
        sources = batch.column(S.SOURCE).to_pylist() if S.SOURCE in batch.column_names else [None] * batch.num_rows
        by_bench: dict = defaultdict(lambda: {"docs": 0, "tokens": 0})
        by_source: dict = defaultdict(
            lambda: {"docs": 0, "tokens": 0, "docs_contaminated": 0, "tokens_contaminated": 0}
        )
        for src, words in zip(sources, m.n_words.tolist()):
            s = by_source[src or "unknown"]
            s["docs"] += 1
            s["tokens"] += words
        examples: dict[str, list] = defaultdict(list)
        ids = batch.column(S.ID)
        for r in rows:
            tokens = int(m.n_words[r])
            s = by_source[sources[r] or "unknown"]
            s["docs_contaminated"] += 1
            s["tokens_contaminated"] += tokens
            for b in found[r]:
                by_bench[b]["docs"] += 1
                by_bench[b]["tokens"] += tokens
                if len(examples[b]) < self.config.examples:
                    examples[b].append(
                        {
                            "id": ids[r].as_py(),
                            "source": sources[r],
                            "ngram": m.ngram_text(r),
                            "matches": int(m.count[r]),
                        }
                    )
        ctx.add_figures(
            {
                "docs_scanned": batch.num_rows,
                "tokens_scanned": int(m.n_words.sum()),
                "docs_contaminated": len(rows),
                "tokens_contaminated": int(m.n_words[rows].sum()) if rows else 0,
                "matched_ngrams": int(m.count.sum()),
                "by_benchmark": {b: dict(v) for b, v in by_bench.items()},
                "by_source": {s: dict(v) for s, v in by_source.items()},
            }
        )
        if examples and self.examples_dir is not None:
            name = f"part-{ctx.shard_index:05d}-{ctx.row_offset:012d}.json"
            storage.write_json(storage.join(self.examples_dir, name), dict(examples), self.storage_options)


def _with_parent(table: pa.Table) -> pa.Table:
    if S.PARENT_ID in table.column_names:
        return table
    return table.append_column(pa.field(S.PARENT_ID, pa.string()), pa.nulls(table.num_rows, pa.string()))


def matched_spans(text: str, n: int, index: LoadedIndex, numbers: bool = True) -> list[tuple[int, int]]:
    """(start, end) character spans in `text` of its n-grams found in `index`."""
    words, spans = word_spans(text, numbers)
    hashes = ngrams_of_words(words, n)
    if not len(hashes) or not len(index.hashes):
        return []
    pos = np.minimum(np.searchsorted(index.hashes, hashes), len(index.hashes) - 1)
    return [(spans[k][0], spans[k + n - 1][1]) for k in np.flatnonzero(index.hashes[pos] == hashes).tolist()]


def merge_spans(spans: list[tuple[int, int]], margin: int, length: int) -> list[tuple[int, int]]:
    """The spans widened by `margin` on each side (within the text), overlapping ones merged, in order."""
    out: list[list[int]] = []
    for start, end in sorted(spans):
        lo, hi = max(0, start - margin), min(length, end + margin)
        if out and lo <= out[-1][1]:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return [(a, b) for a, b in out]


def split_text(text: str, removed: list[tuple[int, int]]) -> list[str]:
    """The text between the removed spans, each piece stripped of surrounding whitespace (empty ones left out)."""
    pieces, at = [], 0
    for start, end in removed:
        pieces.append(text[at:start])
        at = end
    pieces.append(text[at:])
    return [p.strip() for p in pieces if p.strip()]
