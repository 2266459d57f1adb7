"""SIGINT and SIGTERM end a run cleanly: they raise `Interrupted` in the main thread, so the
flow's `finally` blocks release the run's lease, the CLI shuts down the local Ray it started and
prints what finished and how to resume, and the process exits 130 (SIGINT) or 143 (SIGTERM).

`ray.init` replaces the SIGTERM handler with its own (`sys.exit(15)`), so whoever starts Ray
calls `reinstall()` afterwards.
"""

from __future__ import annotations

import signal
import threading


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal; `exit_code` is 128 + the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum


_installed = False
_received: list[int] = []


def _handler(signum, frame) -> None:
    if _received:  # a second signal while shutting down: the first one is being handled
        return
    _received.append(signum)
    raise Interrupted(signum)


def install() -> None:
    """Turn SIGINT/SIGTERM into `Interrupted` (main thread only; a no-op elsewhere)."""
    global _installed
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _handler)
    _installed = True


def reinstall() -> None:
    """Put the handlers back after a library replaced them (only when `install` was called)."""
    if _installed:
        install()


def ignore_further() -> None:
    """While cleaning up after an interrupt, more signals change nothing."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
