"""Progress of long work, reported by the Ray layer and shown by whoever runs it.

The CLI installs a terminal progress bar (stderr) when attached to a terminal; otherwise
progress goes to the log every few shards. Library code only calls `get()`.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

log = logging.getLogger("mixforge")


class Progress(Protocol):
    def stage_started(self, stage: str, total: int, already_done: int) -> None: ...
    def shard_finished(self, stage: str, stats: dict) -> None: ...
    def stage_finished(self, stage: str, summary: dict) -> None: ...


class LogProgress:
    """Logs at most every `every_s` seconds, and at the end of each stage."""

    def __init__(self, logger: logging.Logger | logging.LoggerAdapter = log, every_s: float = 10.0) -> None:
        self.logger = logger
        self.every_s = every_s
        self._done: dict[str, int] = {}
        self._total: dict[str, int] = {}
        self._docs: dict[str, int] = {}
        self._last = 0.0

    def stage_started(self, stage: str, total: int, already_done: int) -> None:
        self._total[stage], self._done[stage], self._docs[stage] = total, already_done, 0
        self._last = time.monotonic()
        msg = f"{stage}: {total} shards"
        if already_done:
            msg += f" ({already_done} already done, resuming)"
        self.logger.info(msg)

    def shard_finished(self, stage: str, stats: dict) -> None:
        self._done[stage] = self._done.get(stage, 0) + 1
        self._docs[stage] = self._docs.get(stage, 0) + stats.get("docs_in", 0)
        if time.monotonic() - self._last >= self.every_s:
            self._last = time.monotonic()
            self.logger.info(
                f"{stage}: {self._done[stage]}/{self._total.get(stage, '?')} shards, {self._docs[stage]:,} docs read"
            )

    def stage_finished(self, stage: str, summary: dict) -> None:
        dropped = sum(summary["docs_dropped"].values())
        self.logger.info(
            f"{stage}: done in {summary['seconds']:.1f}s: {summary['docs_in']:,} in, {summary['docs_kept']:,} kept, "
            f"{dropped:,} dropped, {len(summary['quarantined'])} shards quarantined"
        )


class RichProgress(LogProgress):
    """A live progress bar per stage on stderr."""

    def __init__(self) -> None:
        super().__init__(every_s=float("inf"))
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import (
            Progress as Bar,
        )

        self._bar = Bar(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("shards"),
            TextColumn("{task.fields[docs]:,} docs"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._tasks: dict[str, int] = {}

    def stage_started(self, stage: str, total: int, already_done: int) -> None:
        super().stage_started(stage, total, already_done)
        if not self._bar.live.is_started:
            self._bar.start()
        self._tasks[stage] = self._bar.add_task(stage, total=total, completed=already_done, docs=0)

    def shard_finished(self, stage: str, stats: dict) -> None:
        super().shard_finished(stage, stats)
        self._bar.update(self._tasks[stage], advance=1, docs=self._docs[stage])

    def stage_finished(self, stage: str, summary: dict) -> None:
        self._bar.update(self._tasks[stage], completed=self._total[stage])
        super().stage_finished(stage, summary)

    def close(self) -> None:
        self._bar.stop()


_current: Progress = LogProgress()


def get() -> Progress:
    return _current


def install(progress: Progress) -> None:
    global _current
    _current = progress
