"""rephrase: synthetic rewrites of selected documents by an LLM (vLLM), with provenance.

A generating stage: its output is the synthetic rows, not its inputs (the pool stays where it
is). Every input row has exactly one outcome, so counts reconcile (docs_in = used + skipped + dropped):
- used: at least one of its rephrasings passed the guards and was written;
- skipped, counted by reason, no rows written: `not_selected` (fails the `select` predicate, in the
  mixture's `where` syntax: mixforge.predicates) or
  `over_cap` (past the run's doc/token cap);
- dropped to `_removed/` with the input text: every rephrasing was rejected by a guard
  (`rephrase_empty`, `rephrase_truncated`, `rephrase_echo`; a chunked document's output is
  rejected when any chunk is). The rejected output is quoted in `drop_detail`. Counters
  `guard_<reason>` count rejected chunks, `outputs_rejected` rejected rephrasings.

Each selected document gets `styles_per_doc` distinct styles, drawn by a hash of its id and the
style weights (stable on rerun); each request has a seed derived from the base seed, the document
id and the style, so outputs do not depend on batching or scheduling. The engine is loaded once
per worker. Batches are checkpointed: a crash loses at most the batch in flight.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import Counter
from typing import NamedTuple

import pyarrow as pa

from mixforge import schema as S
from mixforge.predicates import check_schema, matching_rows
from mixforge.rephrase import guards as G
from mixforge.rephrase.config import RephraseConfig
from mixforge.rephrase.prompts import chunk_text, prompt_hash, reassemble, render_prompt
from mixforge.schema import PARENT_ID
from mixforge.stage import Resources, ShardContext, Stage, StageResult

STYLE, MODEL = "rephrase_style", "rephrase_model"
PROMPT_HASH, SAMPLING, CHUNKS, TOKENS = (
    "rephrase_prompt_hash",
    "rephrase_sampling",
    "rephrase_chunks",
    "rephrase_tokens",
)
NOT_SELECTED, OVER_CAP = "not_selected", "over_cap"

SYNTHETIC_SCHEMA = pa.schema(
    [
        *S.CORE_SCHEMA,
        pa.field(PARENT_ID, pa.string()),
        pa.field(STYLE, pa.string()),
        pa.field(MODEL, pa.string()),
        pa.field(PROMPT_HASH, pa.string()),
        pa.field(SAMPLING, pa.string()),
        pa.field(CHUNKS, pa.int32()),
        pa.field(TOKENS, pa.int32()),
    ]
)


class Request(NamedTuple):
    """One rephrasing of one document: a prompt (and seed) per chunk."""

    row: int
    style: str
    prompts: list[str]
    instructions: list[str]  # what the echo guard compares the output with
    seeds: list[int | None]


def selected_rows(batch: pa.Table, config: RephraseConfig) -> list[bool]:
    """Which rows of `batch` the config's `select` picks (a predicate naming no column of the input
    is a mistake in the config: ValueError naming it)."""
    problems = check_schema(config.select, batch.schema, "rephrase.select")
    if problems:
        raise ValueError("; ".join(problems))
    return matching_rows(config.select, batch)


def _unit(*parts: object) -> float:
    """A stable number in [0, 1) from `parts`."""
    digest = hashlib.blake2b("\0".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _seed(base: int | None, doc_id: str, chunk: int) -> int | None:
    return None if base is None else int(_unit(base, doc_id, chunk) * 2**31)


class RephraseStage(Stage):
    name = "rephrase"
    reads = (S.ID, S.TEXT, S.SOURCE)
    writes = (PARENT_ID, STYLE, MODEL, PROMPT_HASH, SAMPLING, CHUNKS, TOKENS)
    generates = True
    checkpoint_batches = True

    def __init__(self, config: RephraseConfig, shards: int = 1) -> None:
        """`shards`: input shards in the run; the run's cap is split evenly over them."""
        self.config = config
        engine = config.engine
        self.resources = Resources(
            cpus=1.0, gpus=0.0 if engine.device == "cpu" else float(engine.tensor_parallel_size)
        )
        self.batch_rows = config.batch_docs  # one engine call per checkpointed batch
        # Ray workers run the engine with this interpreter (an environment with vLLM), when set.
        self.runtime_env = {"py_executable": engine.python} if engine.python else None
        cap = config.cap
        self.docs_cap = None if cap.docs is None else math.ceil(cap.docs / shards)
        self.tokens_cap = None if cap.tokens is None else math.ceil(cap.tokens / shards)
        self._style_weights = config.style_weights or (1.0,) * len(config.styles)
        self._engine = None
        self.batches_generated = 0  # engine calls made by this object in this process (resume shows in it)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_engine": None}  # shipped to workers without the engine

    def setup(self) -> None:
        from mixforge.rephrase.engine import get_engine

        self._engine = get_engine(self.config.engine)

    def drop_order(self) -> list[str]:
        return [NOT_SELECTED, OVER_CAP, *G.GUARD_ORDER]

    def styles_for(self, doc_id: str) -> list[str]:
        """`styles_per_doc` distinct styles, a weighted draw without replacement keyed by the id
        (Efraimidis-Spirakis: the largest u ** (1 / weight))."""
        keys = [
            (_unit("style", doc_id, s) ** (1.0 / w), s)
            for s, w in zip(self.config.styles, self._style_weights)
            if w > 0
        ]
        return [s for _, s in sorted(keys, reverse=True)[: self.config.styles_per_doc]]

    def requests(self, batch: pa.Table, ctx: ShardContext) -> tuple[list[Request], Counter]:
        """The generation requests of a batch (selection, cap, chunking, prompts) and the
        documents skipped, by reason. Also what the benchmark feeds bare vLLM."""
        if self._engine is None:
            self.setup()
        cfg, tok = self.config, self._engine.tokenizer
        skipped: Counter = Counter()
        selected = selected_rows(batch, cfg)
        ids, texts = batch.column(S.ID).to_pylist(), batch.column(S.TEXT).to_pylist()
        jobs: list[Request] = []
        for row in range(batch.num_rows):
            if not selected[row] or not texts[row]:
                skipped[NOT_SELECTED] += 1
                continue
            chunks = chunk_text(tok, texts[row], cfg.chunk.max_tokens)
            tokens = sum(len(tok.encode(c, add_special_tokens=False)) for c in chunks)
            over_docs = self.docs_cap is not None and ctx.counters["rephrase_docs_selected"] + 1 > self.docs_cap
            over_tokens = (
                self.tokens_cap is not None and ctx.counters["rephrase_tokens_selected"] + tokens > self.tokens_cap
            )
            if over_docs or over_tokens or ctx.counters["rephrase_cap_reached"]:
                ctx.counters["rephrase_cap_reached"] = (
                    1  # first-come: once the cap is hit, the rest of the shard is over it
                )
                skipped[OVER_CAP] += 1
                continue
            ctx.count("rephrase_docs_selected")
            ctx.count("rephrase_tokens_selected", tokens)
            for style in self.styles_for(ids[row]):
                template = cfg.template(style)
                jobs.append(
                    Request(
                        row,
                        style,
                        [render_prompt(tok, template, c) for c in chunks],
                        [(template.system or "") + "\n" + template.user.replace("{text}", c) for c in chunks],
                        [_seed(cfg.sampling.seed, f"{ids[row]}#{style}", i) for i in range(len(chunks))],
                    )
                )
        return jobs, skipped

    def process(self, batch: pa.Table, ctx: ShardContext) -> StageResult:
        cfg = self.config
        jobs, skipped = self.requests(batch, ctx)
        ids = batch.column(S.ID).to_pylist()
        self.batches_generated += 1
        started = time.perf_counter()
        outs = self._engine.generate(
            [p for job in jobs for p in job.prompts], cfg.sampling, [seed for job in jobs for seed in job.seeds]
        )
        ctx.count("rephrase_generate_ms", int(1000 * (time.perf_counter() - started)))

        synthetic, used, failures = [], set(), {}
        k = 0
        for row, style, prompts, instructions, _ in jobs:
            gens, k = outs[k : k + len(prompts)], k + len(prompts)
            ctx.count("rephrase_chunks", len(gens))
            ctx.count("rephrase_prompt_tokens", sum(g.prompt_tokens for g in gens))
            ctx.count("rephrase_generated_tokens", sum(g.tokens for g in gens))
            failed = None
            for g, instr in zip(gens, instructions):
                reason = G.check(g.text, g.finish_reason, instr, cfg.guards)
                if reason is not None:
                    ctx.count(f"guard_{reason}")
                    failed = failed or (reason, g)
            if failed is not None:
                ctx.count("outputs_rejected")
                failures.setdefault(row, (style, *failed))
                continue
            used.add(row)
            synthetic.append(
                {
                    S.ID: f"{ids[row]}#rephrase-{style}",
                    S.TEXT: reassemble([g.text for g in gens], cfg.chunk.joiner),
                    S.SOURCE: cfg.source_name.format(
                        source=self._value(batch, S.SOURCE, row) or "unknown", style=style
                    ),
                    S.URL: self._value(batch, S.URL, row),
                    S.META: self._value(batch, S.META, row),
                    PARENT_ID: ids[row],
                    STYLE: style,
                    MODEL: cfg.engine.label,
                    PROMPT_HASH: prompt_hash(prompts),
                    SAMPLING: cfg.sampling.as_json(),
                    CHUNKS: len(gens),
                    TOKENS: sum(g.tokens for g in gens),
                }
            )
        ctx.count("rephrase_docs_generated", len(synthetic))
        # A document is dropped only when none of its rephrasings survived the guards.
        dropped = {row: f for row, f in failures.items() if row not in used}
        kept = pa.Table.from_pylist(synthetic, schema=SYNTHETIC_SCHEMA)
        return StageResult(kept, self._removed(batch, dropped, ctx), used=len(used), skipped=dict(skipped))

    @staticmethod
    def _value(batch: pa.Table, column: str, row: int):
        return batch.column(column)[row].as_py() if column in batch.column_names else None

    @staticmethod
    def _removed(batch: pa.Table, dropped: dict, ctx: ShardContext) -> pa.Table | None:
        if not dropped:
            return None
        rows = sorted(dropped)
        removed = batch.take(pa.array(rows, pa.int64()))
        removed = removed.append_column(S.DROP_REASON, pa.array([dropped[r][1] for r in rows], pa.string()))
        details = [
            f"{ctx.shard_uri} row {ctx.row_offset + r}: style {dropped[r][0]}, {dropped[r][2].tokens} tokens, "
            f"finish {dropped[r][2].finish_reason}: {dropped[r][2].text[:300]!r}"
            for r in rows
        ]
        return removed.append_column(S.DROP_DETAIL, pa.array(details, pa.string()))
