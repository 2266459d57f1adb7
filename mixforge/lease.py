"""Run leases: one process at a time works on a run id, on any store (S3 included).

A lease is a sequence of generation files under `<root>/runs/<run_id>/_lease/`:

    g-000001.json   {"owner", "host", "pid", "acquired_at", "heartbeat_at", "ttl_s", "released"}
    g-000002.json   ...

The highest generation is the lease. Taking it means writing the next generation with a
create-only write (a conditional PUT on S3, O_EXCL on disk), so of two processes racing for a
free or stale lease exactly one wins. Only the owner ever rewrites its own generation: a
heartbeat thread refreshes `heartbeat_at` every `ttl_s / 4` seconds, and `released` is set when
the run ends.

The highest generation is free when it is released, when its heartbeat is older than `ttl_s`
(its process died without releasing: a killed run), or at once when its owner ran on this host
and that process no longer exists (so kill-and-resume on one machine does not wait for the
TTL). Otherwise a second run of the same run id is refused (`LeaseHeld`, exit 2) naming the
holder. Heartbeats compare wall clocks across hosts: keep them in sync (NTP) to well within the
TTL. `mixforge runs unlock` releases a lease by hand (a stuck holder on another host).
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import re
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixforge import storage
from mixforge.config_errors import ConfigError

log = logging.getLogger("mixforge")

DEFAULT_TTL_S = float(os.environ.get("MIXFORGE_LEASE_TTL_S", "120"))
_GENERATION = re.compile(r"^g-(\d{6,})\.json$")


class LeaseHeld(ConfigError):
    """Another live process holds the run's lease."""


class LeaseLost(RuntimeError):
    """This process's lease was taken over (its heartbeats stopped for longer than the TTL)."""


def lease_dir(run_dir: str) -> str:
    return storage.join(run_dir, "_lease")


def _now() -> float:
    return time.time()


def pid_alive(pid: int) -> bool:
    """Whether process `pid` of this host is running (an exited child not yet reaped, a zombie, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (not Linux): kill(0) said it exists


def _generations(run_dir: str, storage_options) -> list[int]:
    fs, path = storage.filesystem(lease_dir(run_dir), storage_options)
    fs.invalidate_cache(path)  # s3fs caches listings; a lease decision needs the store's view
    try:
        names = fs.ls(path, detail=False)
    except FileNotFoundError:
        return []
    return sorted(int(m.group(1)) for n in names if (m := _GENERATION.match(posixpath.basename(n.rstrip("/")))))


def _gen_uri(run_dir: str, gen: int) -> str:
    return storage.join(lease_dir(run_dir), f"g-{gen:06d}.json")


def current(run_dir: str, storage_options: Mapping[str, Any] | None = None) -> dict | None:
    """The highest lease generation's record (with `generation`), or None when never leased."""
    gens = _generations(run_dir, storage_options)
    if not gens:
        return None
    try:
        record = storage.read_json(_gen_uri(run_dir, gens[-1]), storage_options)
    except (FileNotFoundError, json.JSONDecodeError):
        return {"generation": gens[-1], "released": True}  # unlocked by hand meanwhile
    return {**record, "generation": gens[-1]}


def why_free(record: dict | None, now: float | None = None) -> str | None:
    """Why the lease `record` may be taken ("never leased", "released", "stale ..."), or None when held."""
    if record is None:
        return "never leased"
    if record.get("released"):
        return "released"
    now = _now() if now is None else now
    age = now - float(record.get("heartbeat_at", 0))
    if age > float(record.get("ttl_s", DEFAULT_TTL_S)):
        return f"stale: last heartbeat {age:.0f}s ago"
    if record.get("host") == socket.gethostname() and not pid_alive(int(record.get("pid", -1))):
        return f"stale: process {record.get('pid')} on this host has ended"
    return None


def describe(record: dict) -> str:
    age = _now() - float(record.get("heartbeat_at", 0))
    return (
        f"process {record.get('pid')} on {record.get('host')} (lease {record.get('owner')}, since "
        f"{time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime(float(record.get('acquired_at', 0))))}, "
        f"last heartbeat {age:.0f}s ago, expires after {float(record.get('ttl_s', DEFAULT_TTL_S)):.0f}s without one)"
    )


def held_message(run_id: str, root: str, record: dict) -> str:
    return (
        f"run {run_id!r} is running in another process: {describe(record)}. Wait for it to finish, "
        f"or, if that process is gone, run `mixforge runs unlock {run_id} --store {root}` "
        "(a lease whose heartbeats stop is taken over by itself after its TTL)"
    )


@dataclass
class Lease:
    """A held lease; `release()` (or leaving the `with` block) gives it up and stops the heartbeat."""

    run_dir: str
    generation: int
    record: dict
    storage_options: Mapping[str, Any] | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    lost: str | None = None  # why the lease was lost, when it was

    @property
    def uri(self) -> str:
        return _gen_uri(self.run_dir, self.generation)

    def _write(self) -> None:
        storage.write_json(self.uri, self.record, self.storage_options)

    def heartbeat(self) -> None:
        """Refresh the heartbeat, after checking no later generation took the lease over."""
        latest = _generations(self.run_dir, self.storage_options)
        if latest and latest[-1] != self.generation:
            self.lost = f"taken over by generation {latest[-1]}"
            raise LeaseLost(f"lease of {self.run_dir} {self.lost}")
        self.record["heartbeat_at"] = round(_now(), 3)
        self._write()

    def _beat(self) -> None:
        interval = float(self.record["ttl_s"]) / 4
        while not self._stop.wait(interval):
            try:
                self.heartbeat()
            except LeaseLost as e:
                log.error("%s: another process may now be writing this run", e)
                return
            except Exception as e:  # noqa: BLE001 - a transient store error must not kill the run; the next beat retries
                log.warning("lease heartbeat of %s failed: %s", self.run_dir, e)

    def start_heartbeat(self) -> None:
        self._thread = threading.Thread(target=self._beat, name="mixforge-lease-heartbeat", daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.lost:
            return
        latest = _generations(self.run_dir, self.storage_options)
        if latest and latest[-1] == self.generation:
            self.record["released"] = True
            self.record["released_at"] = round(_now(), 3)
            self._write()

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire(
    run_dir: str,
    run_id: str,
    root: str,
    storage_options: Mapping[str, Any] | None = None,
    ttl_s: float = DEFAULT_TTL_S,
    heartbeat: bool = True,
) -> Lease:
    """Take the run's lease or raise LeaseHeld naming its holder (a stale or released one is taken over)."""
    for _ in range(10):  # each loop either wins, raises, or lost a race to a process that just took it
        record = current(run_dir, storage_options)
        reason = why_free(record)
        if reason is None:
            raise LeaseHeld(held_message(run_id, root, record))
        if record is not None and reason.startswith("stale"):
            log.warning("run %s: taking over a stale lease (%s) held by %s", run_id, reason, describe(record))
        gen = (record["generation"] + 1) if record else 1
        now = round(_now(), 3)
        mine = {
            "owner": uuid.uuid4().hex,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "acquired_at": now,
            "heartbeat_at": now,
            "ttl_s": ttl_s,
            "released": False,
            "run_id": run_id,
        }
        body = json.dumps(mine, indent=2, sort_keys=True).encode() + b"\n"
        if storage.create_only(_gen_uri(run_dir, gen), body, storage_options):
            lease = Lease(run_dir, gen, mine, storage_options)
            if heartbeat:
                lease.start_heartbeat()
            return lease
    raise LeaseHeld(f"run {run_id!r}: could not take its lease (other processes keep taking it); try again")


def check_free(run_dir: str, run_id: str, root: str, storage_options: Mapping[str, Any] | None = None) -> None:
    """Raise LeaseHeld when a live process holds the lease (read-only: the pre-flight check)."""
    record = current(run_dir, storage_options)
    if why_free(record) is None:
        raise LeaseHeld(held_message(run_id, root, record))


def unlock(run_dir: str, storage_options: Mapping[str, Any] | None = None) -> dict | None:
    """Release the lease by hand: the next run takes it at once. Returns the record that was released."""
    record = current(run_dir, storage_options)
    if record is None or record.get("released"):
        return None
    gen = record.pop("generation")
    storage.write_json(
        _gen_uri(run_dir, gen),
        {**record, "released": True, "released_at": round(_now(), 3), "released_by": "unlock"},
        storage_options,
    )
    return {**record, "generation": gen}
