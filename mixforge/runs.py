"""Run ids and the run layout in the store (DESIGN.md, "Storage layout").

<root>/runs/<run_id>/_run.json                      inputs, config, code version (create-only)
<root>/runs/<run_id>/<stage>/part-00000.parquet     kept documents, 1:1 with input shards
<root>/runs/<run_id>/<stage>/_removed/part-00000.parquet
<root>/runs/<run_id>/<stage>/_done/part-00000.json  per-shard stats; its presence = shard finished
<root>/runs/<run_id>/<stage>/_quarantine/part-00000.json
<root>/runs/<run_id>/<stage>/_pieces/part-00000/    batch checkpoints of a shard in progress
<root>/runs/<run_id>/<stage>/_stats.json            the stage's aggregated stats
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mixforge import __version__, storage
from mixforge.config_errors import ConfigError
from mixforge.names import validate_name
from mixforge.storage import InputShard


class RunConfigMismatch(ConfigError):
    """An explicit run id was reused with a different config or different inputs."""


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def sha256_json(obj: Any) -> str:
    """The sha256 hex digest of `obj`'s canonical JSON (run configs, mixture specs, takedown keys)."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def compute_run_id(inputs: Sequence[InputShard], config: Mapping[str, Any], code_version: str = __version__) -> str:
    """Hash of the inputs (URIs and sizes), the config and the code version."""
    return (
        "run-"
        + sha256_json({"inputs": [[s.uri, s.size] for s in inputs], "config": config, "code": code_version})[:16]
    )


@dataclass(frozen=True)
class StageLayout:
    dir: str

    def part(self, index: int) -> str:
        return storage.join(self.dir, f"part-{index:05d}.parquet")

    def removed(self, index: int) -> str:
        return storage.join(self.dir, "_removed", f"part-{index:05d}.parquet")

    def done(self, index: int) -> str:
        return storage.join(self.dir, "_done", f"part-{index:05d}.json")

    def quarantine(self, index: int) -> str:
        return storage.join(self.dir, "_quarantine", f"part-{index:05d}.json")

    # Batch checkpoints of a shard in progress (Stage.checkpoint_batches); merged into the
    # shard's part and removed files, then deleted, once the shard is done.
    def pieces(self, index: int) -> str:
        return storage.join(self.dir, "_pieces", f"part-{index:05d}")

    def piece(self, index: int, batch: int, kind: str) -> str:
        """kind: "kept" / "removed" (Parquet) or "done" (the batch's checkpoint, JSON)."""
        suffix = "json" if kind == "done" else "parquet"
        return storage.join(self.pieces(index), f"b-{batch:06d}.{kind}.{suffix}")

    @property
    def stats(self) -> str:
        return storage.join(self.dir, "_stats.json")


@dataclass(frozen=True)
class RunLayout:
    root: str
    run_id: str

    @property
    def dir(self) -> str:
        return storage.join(self.root, "runs", self.run_id)

    @property
    def manifest(self) -> str:
        return storage.join(self.dir, "_run.json")

    def stage(self, name: str) -> StageLayout:
        return StageLayout(storage.join(self.dir, name))


def _run_manifest(run_id: str, inputs: Sequence[InputShard], config: Mapping[str, Any]) -> dict:
    return {
        "run_id": run_id,
        "code_version": __version__,
        "config": config,
        "config_hash": sha256_json(config),
        "inputs": [{"uri": s.uri, "size": s.size} for s in inputs],
    }


def _refuse_if_different(layout: RunLayout, existing: Mapping[str, Any], manifest: Mapping[str, Any]) -> None:
    problems = []
    if existing.get("config_hash") != manifest["config_hash"]:
        changed = sorted(_diff_paths(existing.get("config", {}), manifest["config"]))
        problems.append("config differs at " + ", ".join(changed[:10]) + (" ..." if len(changed) > 10 else ""))
    if existing.get("inputs") != manifest["inputs"]:
        problems.append("inputs differ")
    if problems:
        raise RunConfigMismatch(
            f"run {layout.run_id!r} already exists at {layout.dir} with a different setup: {'; '.join(problems)}. "
            "Use a new --run-id, or omit it to get one derived from inputs and config."
        )


def check_run(
    root: str,
    inputs: Sequence[InputShard],
    config: Mapping[str, Any],
    run_id: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> tuple[RunLayout, bool]:
    """(layout, exists) of the run these inputs and config make, writing nothing.

    An explicit run id must be a valid name (it becomes a folder and an artifact key) and, when
    the run exists, must have been made from the same config and inputs (RunConfigMismatch).
    """
    run_id = validate_name(run_id, "run id") if run_id is not None else compute_run_id(inputs, config)
    layout = RunLayout(root, run_id)
    try:
        existing = storage.read_json(layout.manifest, storage_options)
    except FileNotFoundError:
        return layout, False
    _refuse_if_different(layout, existing, _run_manifest(run_id, inputs, config))
    return layout, True


def open_run(
    root: str,
    inputs: Sequence[InputShard],
    config: Mapping[str, Any],
    run_id: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> tuple[RunLayout, bool]:
    """Create the run (or resume it). Returns (layout, resumed).

    Rerunning a run id resumes it; an explicit run id whose recorded config or inputs differ
    is refused, naming what changed, so a resumed run never mixes two configurations.
    """
    run_id = validate_name(run_id, "run id") if run_id is not None else compute_run_id(inputs, config)
    layout = RunLayout(root, run_id)
    manifest = _run_manifest(run_id, inputs, config)
    body = {**manifest, "created": storage.utc_timestamp()}
    if storage.create_only(layout.manifest, json.dumps(body, indent=2, sort_keys=True).encode(), storage_options):
        return layout, False
    _refuse_if_different(layout, storage.read_json(layout.manifest, storage_options), manifest)
    return layout, True


def _diff_paths(a: Any, b: Any, prefix: str = "") -> set[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: set[str] = set()
        for k in set(a) | set(b):
            out |= _diff_paths(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    return set() if a == b else {prefix or "<root>"}
