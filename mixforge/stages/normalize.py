"""normalize: raw input rows -> clean contract documents.

Unicode NFC, mojibake repair where detectable, control characters stripped (NUL included:
NUL bytes are removed, not a reason to drop a document), newlines normalised to "\\n".
Documents that are empty or whitespace-only afterwards are dropped as `empty_text` (the detail
names shard and line/row).

Everything is vectorised with Arrow compute kernels; only documents that a cheap regex flags
as likely mojibake go through ftfy (a per-document Python call) for repair.
"""

from __future__ import annotations

import ftfy
import pyarrow as pa
import pyarrow.compute as pc
from ftfy.badness import is_bad

from mixforge import schema as S
from mixforge.config import NormalizeConfig
from mixforge.stage import ShardContext, Stage, StageResult, split_by_reason

# UTF-8 read as Latin-1/cp1252: a lead byte shown as Ã, Â or â followed by a continuation byte
# shown as a Latin-1 supplement or cp1252 punctuation character (e.g. "Ã©" for "é", "â€™" for "’").
_MOJIBAKE_HINT = r"[ÃÂâÅÐÑ][\x{80}-\x{BF}€‚ƒ„…†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ]"
# C0 controls except tab and newline, DEL, C1 controls, BOM/zero-width no-break space.
_CONTROL = r"[\x{00}-\x{08}\x{0B}\x{0C}\x{0E}-\x{1F}\x{7F}-\x{9F}\x{FEFF}]"


class Normalize(Stage):
    name = "normalize"
    reads_raw = True
    reads = (S.TEXT,)
    writes = (S.TEXT,)

    def __init__(self, config: NormalizeConfig | None = None) -> None:
        self.config = config or NormalizeConfig()

    def process(self, batch: pa.Table, ctx: ShardContext) -> StageResult:
        text = batch.column(S.TEXT)
        cfg = self.config
        if cfg.normalize_newlines:
            text = _counted(ctx, "docs_newlines_normalized", text, pc.replace_substring_regex(text, r"\r\n?", "\n"))
        if cfg.fix_mojibake:
            text = _counted(ctx, "docs_mojibake_fixed", text, _fix_mojibake(text))
        if cfg.strip_control_chars:
            text = _counted(ctx, "docs_control_chars_stripped", text, pc.replace_substring_regex(text, _CONTROL, ""))
        if cfg.unicode_form:
            text = _counted(
                ctx, f"docs_{cfg.unicode_form.lower()}_changed", text, pc.utf8_normalize(text, form=cfg.unicode_form)
            )
        batch = batch.set_column(batch.column_names.index(S.TEXT), S.TEXT, text)
        if not cfg.drop_empty:
            return StageResult(batch)
        empty = pc.match_substring_regex(text, r"^[\s\p{Z}]*$")  # RE2's \s is ASCII only: add Unicode spaces
        reason = pc.if_else(empty, "empty_text", pa.scalar(None, pa.string()))
        return split_by_reason(batch, reason, ctx, "text is empty or whitespace-only after normalisation")


def _counted(ctx: ShardContext, key: str, before, after):
    changed = pc.sum(pc.cast(pc.not_equal(before, after), pa.int64())).as_py() or 0
    ctx.count(key, changed)
    return after


def _fix_mojibake(text: pa.ChunkedArray) -> pa.ChunkedArray:
    """Repair only the documents flagged by a vectorised hint, and only if ftfy agrees they are bad."""
    text = text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text
    hint = pc.fill_null(pc.match_substring_regex(text, _MOJIBAKE_HINT), False)
    if not pc.any(hint).as_py():
        return text
    flagged = text.filter(hint).to_pylist()
    fixed = [ftfy.fix_encoding(t) if is_bad(t) else t for t in flagged]
    return pc.replace_with_mask(text, hint, pa.array(fixed, pa.string()))


def run_normalize(stage_layout, inputs, config, executor=None) -> dict:
    """The normalize composite: the Normalize stage over the raw shards, then ids made unique across
    the run's shards (mixforge.ids: hash per shard -> duplicates per partition -> drop per affected
    shard), on `executor`. Returns the stage summary (also `_stats.json`), with `id_check`."""
    import logging
    import time

    from mixforge import ids, storage
    from mixforge.runner import run_stage

    opts = config.storage.options
    summary = run_stage(
        Normalize(config.normalize), stage_layout, inputs, executor, config.read, opts, write_stats=False
    )
    started = time.perf_counter()
    finished = [s for s in summary["shard_results"] if not s.get("quarantined")]
    check = ids.check_unique_ids(
        stage_layout,
        [(s["index"], s["input"]) for s in finished],
        opts,
        executor,
        docs={s["index"]: s["docs_kept"] for s in finished},
    )
    if check["rewrote_now"]:
        summary = ids.restate_summary(summary, stage_layout, opts)
    seconds = round(time.perf_counter() - started, 3)
    logging.getLogger("mixforge").info(
        "normalize: %d id(s) held by more than one shard, %d row(s) dropped as duplicate_id (id check: %.1fs)",
        check["duplicate_ids"],
        check["docs_dropped"],
        seconds,
    )
    summary["id_check"] = {**{k: v for k, v in check.items() if k != "rewrote_now"}, "seconds": seconds}
    summary["seconds"] = round(summary["seconds"] + seconds, 3)
    storage.write_json(stage_layout.stats, summary, opts)
    return summary
