"""Runs in a store: what each one is, what it takes on disk, and removing what is no longer needed
(`mixforge runs list|show|clean`). A library: the CLI only prints what these functions return.

A run's status is read from what the store records (mixforge.runs, mixforge.planning, mixforge.lease):

- `running`: a live process holds its lease (`lease.why_free` is None);
- `complete`: `_complete.json` exists (the curate flow writes it once every stage, the dedup index
  update included, has finished), or, for a one-stage run the flows do not mark (rephrase), its
  stage's `_stats.json` exists;
- `failed`: its process gave its lease up without completing (an error, or an interrupt);
- `incomplete`: its process died holding the lease (killed), the lease was released by
  `runs unlock`, or it never took one.

A run is *in use* when a mixture version of the store samples it (`pool.run_ids`, a pool shard's
`run_id` or URI), when a persistent dedup index holds its documents (a segment's commit marker
names it: the incremental pool counts such a run as curated), or when a complete or running run
took its output as input. `clean` removes failed and incomplete runs that are not in use and not
held, and the scratch of complete runs (`dedup/_work/`, a stage's `_pieces/`); it never removes a
complete run. Each removal takes the run's lease first, so a run started meanwhile is left alone.
"""

from __future__ import annotations

import logging
import posixpath
import re
from collections import defaultdict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from mixforge import lease as leases
from mixforge import storage
from mixforge.config_errors import ConfigError
from mixforge.names import validate_name
from mixforge.planning import COMPLETE_MARKER, completion_marker, default_dedup_index, list_run_ids
from mixforge.runs import RunLayout

log = logging.getLogger("mixforge")

Status = Literal["running", "complete", "failed", "incomplete"]
_RUN_IN_URI = re.compile(r"/runs/([^/]+)/")
# Scratch of a finished stage: batch checkpoints of shards in progress (any stage) and the dedup
# steps' working files. classify's `_work/clusters.json` is not scratch: a rerun reuses its centroids.
PIECES, DEDUP_WORK = "_pieces", "dedup/_work"


@dataclass
class RunInfo:
    """One run as `runs list` shows it (and what `runs show` and `runs clean` build on)."""

    run_id: str
    dir: str
    created: str | None
    status: Status
    stages: list[str]  # planned, in order
    stages_done: list[str]  # those with a `_stats.json`
    docs_in: int | None  # read by the first stage
    docs_kept: int | None  # kept by the last finished stage
    bytes: int
    scratch: dict[str, int]  # scratch folder URI -> bytes
    used_by: list[str] = field(default_factory=list)
    lease: dict | None = None
    lease_state: str = "never leased"  # "held", or why the lease is free
    manifest: dict | None = None
    files: dict[str, int] = field(default_factory=dict, repr=False)  # path in the run -> bytes

    def row(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "created": self.created,
            "status": self.status,
            "stages": self.stages,
            "stages_done": self.stages_done,
            "docs_in": self.docs_in,
            "docs_kept": self.docs_kept,
            "bytes": self.bytes,
            "scratch_bytes": sum(self.scratch.values()),
            "used_by": self.used_by,
            "held_by": leases.describe(self.lease) if self.status == "running" and self.lease else None,
        }


# ----------------------------------------------------------------------------- reading a run


def _files(run_dir: str, storage_options) -> dict[str, int]:
    """Every file of the run (path relative to its folder -> bytes), from one recursive listing."""
    fs, path = storage.filesystem(run_dir, storage_options)
    fs.invalidate_cache()  # s3fs caches listings: a run written meanwhile must be seen
    try:
        found = fs.find(path, detail=True)
    except FileNotFoundError:
        return {}
    prefix = path.rstrip("/") + "/"
    return {
        name[len(prefix) :]: int(info.get("size") or 0)
        for name, info in found.items()
        if info.get("type") != "directory" and name.startswith(prefix)
    }


def _read(uri: str, storage_options) -> Any | None:
    try:
        return storage.read_json(uri, storage_options)
    except FileNotFoundError:
        return None


def planned_stages(manifest: Mapping[str, Any] | None) -> list[str]:
    """The stages a run was started with: a curate run's `config.stages`, a one-stage run's `config.stage`."""
    config = (manifest or {}).get("config") or {}
    if config.get("stages"):
        return list(config["stages"])
    return [config["stage"]] if config.get("stage") else []


def _is_marked_kind(manifest: Mapping[str, Any] | None) -> bool:
    """Curate runs (config.stages) are complete only with `_complete.json`; one-stage runs get none."""
    return bool(((manifest or {}).get("config") or {}).get("stages"))


def _status(complete: bool, record: dict | None) -> tuple[Status, str]:
    free = leases.why_free(record)
    if free is None:
        return "running", "held"
    if complete:
        return "complete", free
    if record is not None and record.get("released") and record.get("released_by") != "unlock":
        return "failed", free
    return "incomplete", free


def _scratch(run_dir: str, files: Mapping[str, int]) -> dict[str, int]:
    """Scratch folders present (URI -> bytes): `_pieces/` of any stage, the dedup stage's `_work/`."""
    found: dict[str, int] = defaultdict(int)
    for rel, size in files.items():
        parts = rel.split("/")
        if len(parts) > 2 and parts[1] == PIECES:
            found[storage.join(run_dir, parts[0], PIECES)] += size
        elif rel.startswith(DEDUP_WORK + "/"):
            found[storage.join(run_dir, DEDUP_WORK)] += size
    return dict(found)


def run_info(root: str, run_id: str, storage_options: Mapping[str, Any] | None = None) -> RunInfo:
    """What the store records about one run (no references: see `list_runs`)."""
    run = RunLayout(root, run_id)
    files = _files(run.dir, storage_options)
    manifest = _read(run.manifest, storage_options) if "_run.json" in files else None
    stages = planned_stages(manifest)
    done = [s for s in stages if f"{s}/_stats.json" in files]
    first = _read(run.stage(stages[0]).stats, storage_options) if stages and stages[0] in done else None
    last = _read(run.stage(done[-1]).stats, storage_options) if done else None
    if _is_marked_kind(manifest):
        complete = COMPLETE_MARKER in files
    else:
        complete = COMPLETE_MARKER in files or (bool(stages) and stages[-1] in done)
    record = leases.current(run.dir, storage_options)
    status, lease_state = _status(complete, record)
    return RunInfo(
        run_id=run_id,
        dir=run.dir,
        created=(manifest or {}).get("created"),
        status=status,
        stages=stages,
        stages_done=done,
        docs_in=(first or {}).get("docs_in"),
        docs_kept=(last or {}).get("docs_kept"),
        bytes=sum(files.values()),
        scratch=_scratch(run.dir, files),
        lease=record,
        lease_state=lease_state,
        manifest=manifest,
        files=files,
    )


# ----------------------------------------------------------------------------- what uses a run


def _run_ids_in(manifest: Mapping[str, Any]) -> set[str]:
    """Run ids a mixture manifest samples: its pool's run ids and the runs its pool URIs lie in."""
    pool = manifest.get("pool") or {}
    ids = set(pool.get("run_ids") or [])
    for shard in pool.get("shards") or []:
        ids.add(shard.get("run_id"))
        ids.update(_RUN_IN_URI.findall(shard.get("uri") or ""))
    for uri in pool.get("inputs") or []:
        ids.update(_RUN_IN_URI.findall(uri.rstrip("/") + "/"))
    return {i for i in ids if i}


def mixture_references(root: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, list[str]]:
    """Run id -> the mixture versions of the store that sample it ("mixture NAME vNNNN")."""
    from mixforge.mixtures import versions

    refs: dict[str, list[str]] = defaultdict(list)
    for name in versions.list_mixtures(root, storage_options):
        layout = versions.MixtureLayout(root, name)
        for version in versions.list_versions(layout, storage_options):
            manifest = _read(layout.manifest(version), storage_options)
            for run_id in _run_ids_in(manifest or {}):
                refs[run_id].append(f"mixture {name} {version}")
    return refs


def index_references(indexes: set[str], storage_options: Mapping[str, Any] | None = None) -> dict[str, list[str]]:
    """Run id -> the dedup indexes holding its documents (the incremental pool counts it as curated)."""
    from mixforge.dedup.layouts import IndexLayout

    refs: dict[str, list[str]] = defaultdict(list)
    for uri in sorted(indexes):
        for run_id in IndexLayout(uri).committed_runs(storage_options):
            refs[run_id].append(f"dedup index {uri}")
    return refs


def list_runs(root: str, storage_options: Mapping[str, Any] | None = None) -> list[RunInfo]:
    """Every run under `<root>/runs/`, newest first, with what uses it."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        runs = list(pool.map(lambda r: run_info(root, r, storage_options), list_run_ids(root, storage_options)))
    indexes = {default_dedup_index(root)}
    for info in runs:
        index = (((info.manifest or {}).get("config") or {}).get("dedup") or {}).get("index")
        if index:
            indexes.add(index)
    refs = mixture_references(root, storage_options)
    for run_id, where in index_references(indexes, storage_options).items():
        refs[run_id].extend(where)
    for info in runs:
        if info.status not in ("complete", "running"):
            continue  # a failed run's inputs are free to go with it
        for entry in (info.manifest or {}).get("inputs") or []:
            for run_id in set(_RUN_IN_URI.findall(entry.get("uri") or "")) - {info.run_id}:
                refs[run_id].append(f"run {info.run_id} (input)")
    for info in runs:
        info.used_by = sorted(set(refs.get(info.run_id, [])))
    runs.sort(key=lambda i: (i.created or "", i.run_id), reverse=True)
    return runs


def _find(root: str, run_id: str, storage_options) -> RunInfo:
    validate_name(run_id, "run id")
    for info in list_runs(root, storage_options):
        if info.run_id == run_id:
            return info
    raise ConfigError(f"no run {run_id!r} under {storage.join(root, 'runs')}")


# ----------------------------------------------------------------------------- list / show


def runs_list(root: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The `runs list` summary: one row per run, newest first."""
    return {"store": root, "runs": [info.row() for info in list_runs(root, storage_options)]}


def runs_show(root: str, run_id: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The `runs show` summary: the row, the run's manifest, each stage's `_stats.json`, lease, scratch."""
    info = _find(root, run_id, storage_options)
    stage_stats = []
    for name in info.stages:
        stats = _read(RunLayout(root, run_id).stage(name).stats, storage_options) if name in info.stages_done else None
        if stats is not None:
            stats.pop("shard_results", None)  # one entry per shard: `_stats.json` has them
        stage_stats.append({"name": name, "done": stats is not None, "stats": stats})
    return {
        **info.row(),
        "dir": info.dir,
        "manifest": info.manifest,
        "completion": _read(completion_marker(RunLayout(root, run_id)), storage_options),
        "stage_stats": stage_stats,
        "lease": info.lease,
        "lease_state": info.lease_state,
        "scratch": [{"uri": uri, "bytes": size} for uri, size in sorted(info.scratch.items())],
    }


# ----------------------------------------------------------------------------- clean


@dataclass(frozen=True)
class Removal:
    run_id: str
    what: Literal["run", "scratch"]
    uri: str
    bytes: int
    status: Status

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "what": self.what, "uri": self.uri, "bytes": self.bytes, "status": self.status}


def plan_clean(root: str, storage_options: Mapping[str, Any] | None = None) -> tuple[list[Removal], list[dict]]:
    """(what `clean` removes, the runs it keeps that it would otherwise remove, with why); reads only."""
    removals, kept = [], []
    for info in list_runs(root, storage_options):
        if info.status == "running":
            kept.append({"run_id": info.run_id, "status": info.status, "reason": f"running: {info.row()['held_by']}"})
        elif info.status == "complete":
            removals += [Removal(info.run_id, "scratch", u, b, info.status) for u, b in sorted(info.scratch.items())]
        elif info.used_by:
            kept.append({"run_id": info.run_id, "status": info.status, "reason": "in use: " + "; ".join(info.used_by)})
        else:
            removals.append(Removal(info.run_id, "run", info.dir, info.bytes, info.status))
    return removals, kept


def _rm(uri: str, storage_options) -> None:
    fs, path = storage.filesystem(uri, storage_options)
    fs.invalidate_cache()
    if fs.exists(path):
        fs.rm(path, recursive=True)
    fs.invalidate_cache()


def _apply(root: str, removals: list[Removal], storage_options) -> tuple[list[Removal], list[dict]]:
    """Remove each run or scratch folder under the run's lease; a run taken or finished meanwhile is kept."""
    done, skipped = [], []
    by_run: dict[str, list[Removal]] = defaultdict(list)
    for r in removals:
        by_run[r.run_id].append(r)
    for run_id, items in by_run.items():
        run = RunLayout(root, run_id)
        try:
            held = leases.acquire(run.dir, run_id, root, storage_options, heartbeat=False)
        except leases.LeaseHeld as e:
            skipped.append({"run_id": run_id, "status": "running", "reason": f"started meanwhile: {e}"})
            continue
        if items[0].what == "run":
            if storage.exists(completion_marker(run), storage_options):
                held.release()
                skipped.append({"run_id": run_id, "status": "complete", "reason": "completed meanwhile"})
                continue
            _rm(run.dir, storage_options)  # the lease goes with it
        else:
            for r in items:
                _rm(r.uri, storage_options)
            held.release()
        log.info("run %s: removed %s", run_id, ", ".join(posixpath.relpath(r.uri, root) for r in items))
        done += items
    return done, skipped


def runs_clean(root: str, dry_run: bool = False, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The `runs clean` summary: removes failed and incomplete runs nothing uses and no process holds,
    and the scratch of complete runs (`dry_run`: lists them, removes nothing)."""
    removals, kept = plan_clean(root, storage_options)
    if not dry_run:
        removals, skipped = _apply(root, removals, storage_options)
        kept += skipped
    return {
        "store": root,
        "dry_run": dry_run,
        "removed": [r.as_dict() for r in removals],
        "kept": kept,
        "bytes_removed": sum(r.bytes for r in removals),
    }
