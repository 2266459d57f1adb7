"""Turning a user's input and output into a run, checked before any work starts.

`plan_curate` / `plan_generating` are read-only: they validate everything that can be known up
front (the run id's name, the output, the inputs, the models a stage needs, a run id reused with
another config, a run id another process is running) and raise ConfigError with one line naming
the file or field. The CLI calls them before Prefect or Ray start (the pre-flight), the flows call
them again (a run started from the Prefect UI gets the same checks), then `start_run` writes the
run manifest and takes the run's lease.

Incremental curation (the nightly pipeline) works on a *pool*: the completed curate runs under
`<output>/runs/` that deduplicated against, and appended to, one persistent dedup index
(`dedup.index`; by default `<output>/index/dedup`).

- A run is **completed** when `<output>/runs/<run_id>/_complete.json` exists: the curate flow
  writes it once every stage, the dedup index update included, has finished.
- An input shard is **already curated** when a completed run of the pool took it as input with
  the same URI and size (what a run id hashes). A shard rewritten with another size counts as
  new; documents of it that the pool already has are then removed as duplicates by the index.
- The pool's curated data is each of those runs' final-stage folder (its last stage that does not
  generate rows), plus the folders of its generating stages (e.g. rephrase), whose rows join the pool.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from mixforge import lease as leases
from mixforge import schema as S
from mixforge import storage
from mixforge.config import CurateConfig
from mixforge.config_errors import ConfigError
from mixforge.dedup.layouts import IndexLayout
from mixforge.names import validate_name
from mixforge.runs import RunLayout, check_run, open_run
from mixforge.shards import parquet_file
from mixforge.storage import InputShard, filesystem

log = logging.getLogger("mixforge")

COMPLETE_MARKER = "_complete.json"


@dataclass(frozen=True)
class RunPlan:
    run: RunLayout | None  # None: incremental, and nothing new to curate
    shards: list[tuple[int, str]]  # (index, input URI); output shards keep the index
    stages: tuple[str, ...]
    resumed: bool  # the run existed already (this run resumes it)
    config: Any = None  # the config the stages run with (stages settled, the index set)
    incremental: dict[str, Any] | None = None  # what incremental selection found
    inputs: dict[str, Any] = field(default_factory=dict)  # discovery: shards found, what was skipped and why
    input_shards: tuple[InputShard, ...] = ()  # the shards with their sizes (what the run id hashes)

    @property
    def run_id(self) -> str | None:
        return self.run.run_id if self.run else None


# ----------------------------------------------------------------------------- checks


def check_output(output: str, storage_options: Mapping[str, Any] | None = None) -> None:
    """The store root must be a folder (or creatable) and writable; checked without writing."""
    try:
        fs, path = filesystem(output, storage_options)
    except (ValueError, ImportError) as e:
        raise ConfigError(f"--output {output!r}: not a usable store URI ({e})") from None
    if storage.is_local(fs):
        if os.path.exists(path) and not os.path.isdir(path):
            raise ConfigError(f"--output {output!r} is a file; give a folder (the store root)")
        existing = path
        while not os.path.exists(existing):
            existing = os.path.dirname(existing) or "."
        if not os.path.isdir(existing):
            raise ConfigError(
                f"--output {output!r}: {existing!r} is a file, so the store root cannot be created under it"
            )
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(f"--output {output!r}: {existing!r} is not writable by this user")
        return
    bucket = path.split("/", 1)[0]
    try:
        if not fs.exists(bucket):
            raise ConfigError(
                f"--output {output!r}: bucket {bucket!r} does not exist (or is not visible with these credentials)"
            )
        if fs.isfile(path):
            raise ConfigError(f"--output {output!r} is an object, not a prefix; give the store root")
    except ConfigError:
        raise
    except PermissionError as e:
        raise ConfigError(f"--output {output!r}: access denied ({e})") from None
    except OSError as e:
        raise ConfigError(f"--output {output!r}: the store cannot be reached ({e})") from None


def discover(
    input: str, storage_options: Mapping[str, Any] | None = None, allow_empty: bool = False
) -> tuple[list[InputShard], dict[str, Any]]:
    """Input shards at `input` and a record of what discovery found and skipped; ConfigError when none
    (`allow_empty`: an input that exists and holds no shards is fine; one that does not exist never is)."""
    try:
        found = storage.discover_inputs(input, storage_options)
    except FileNotFoundError as e:
        raise ConfigError(f"--input: {e.args[0] if e.args else e}") from None
    except PermissionError as e:
        raise ConfigError(f"--input {input!r}: access denied ({e})") from None
    info = found.as_dict()
    for s in found.skipped:
        log.warning("input %s skipped: %s", s["uri"], s["reason"])
    if not found.shards and not allow_empty:
        what = (
            f"; skipped {len(found.skipped)}: " + ", ".join(f"{s['uri']} ({s['reason']})" for s in found.skipped[:3])
            if found.skipped
            else ""
        )
        raise ConfigError(f"--input {input!r}: no shards (.parquet, .jsonl, .jsonl.gz, .jsonl.zst) found{what}")
    return found.shards, info


def check_run_id(run_id: str | None) -> None:
    if run_id is not None:
        validate_name(run_id, "run id")


def _check_run_free(
    output: str, shards: Sequence[InputShard], fingerprint: Mapping[str, Any], run_id: str | None, storage_options
) -> tuple[RunLayout, bool]:
    """The run's layout and whether it exists; refuses a run id reused with another setup or held by a live run."""
    run, exists = check_run(output, shards, fingerprint, run_id, storage_options)
    if exists:
        leases.check_free(run.dir, run.run_id, output, storage_options)
    return run, exists


def _check_stage_inputs(config: CurateConfig, stages: Sequence[str], storage_options) -> None:
    """Each stage's own pre-flight (its models, benchmark files: `CurationStage.preflight`)."""
    from mixforge.stages.registry import get_stage

    for name in stages:
        check = get_stage(name).preflight
        if check is not None:
            check(config, storage_options)


def is_contract_shard(uri: str, storage_options) -> bool:
    """A Parquet shard with the contract's core columns (a stage's output) needs no normalize."""
    if not uri.lower().endswith(".parquet"):
        return False
    try:
        with parquet_file(uri, storage_options) as pf:
            names = set(pf.schema_arrow.names)
    except Exception:
        return False  # unreadable: let normalize quarantine it with a clear error
    return set(S.CORE_COLUMNS) <= names


# ----------------------------------------------------------------------------- plans


def plan_curate(
    input: str, output: str, config: CurateConfig, run_id: str | None = None, incremental: bool = False
) -> RunPlan:
    """Everything `curate` will do, checked and settled without writing anything.

    Incremental: only shards that no completed run of the pool has curated; when there are none,
    the plan has no run (`run` is None).
    """
    check_run_id(run_id)
    options = config.storage.options
    check_output(output, options)
    if incremental:
        config = incremental_config(config, output)
    # an incremental night over an empty input folder has nothing new; a missing input is still an error
    shards, inputs = discover(input, options, allow_empty=incremental)
    info = None
    if incremental:
        runs = pool_runs(output, config.dedup.index, options)
        new = new_shards(shards, runs)
        info = {
            "input_shards": len(shards),
            "already_curated": len(shards) - len(new),
            "new_shards": len(new),
            "index": config.dedup.index,
            "pool_runs": [r.run_id for r in runs],
        }
        log.info(
            "incremental: %d input shard(s) at %s, %d already curated by %d completed run(s), %d new",
            len(shards),
            input,
            info["already_curated"],
            len(runs),
            len(new),
        )
        if not new:
            return RunPlan(None, [], (), False, config, info, inputs)
        shards = new
    stages = tuple(config.stages)
    if "classify" in stages and len(stages) > 1 and not config.classify.enabled:
        stages = tuple(s for s in stages if s != "classify")  # classify runs when classifiers are configured
    if stages[0] != "normalize" and not is_contract_shard(shards[0].uri, options):
        log.info("input %s is raw (not contract Parquet): running normalize first", shards[0].uri)
        stages = ("normalize", *stages)
    config = config.model_copy(update={"stages": stages})
    _check_stage_inputs(config, stages, options)
    run, exists = _check_run_free(output, shards, config.run_fingerprint(), run_id, options)
    return RunPlan(run, list(enumerate(s.uri for s in shards)), stages, exists, config, info, inputs, tuple(shards))


def plan_generating(stage: str, input: str, output: str, config: Any, run_id: str | None = None) -> RunPlan:
    """The plan of a one-stage run over contract shards (rephrase): same checks as curate's."""
    check_run_id(run_id)
    options = config.storage.options
    check_output(output, options)
    shards, inputs = discover(input, options)
    run, exists = _check_run_free(output, shards, config.run_fingerprint(), run_id, options)
    return RunPlan(run, list(enumerate(s.uri for s in shards)), (stage,), exists, config, None, inputs, tuple(shards))


def generating_run_of(stage: str, input: str, output: str, config: Any) -> tuple[RunLayout, bool]:
    """The one-stage run `plan_generating` makes of `input` under `output` (by its default run id) and
    whether it has finished (its stage stats are written once every shard is done)."""
    options = config.storage.options
    run, _ = check_run(output, storage.discover_shards(input, options), config.run_fingerprint(), None, options)
    return run, storage.exists(run.stage(stage).stats, options)


# The leases this process holds, by run folder: taken by `start_run`, given up by `finish_run`.
_HELD: dict[str, leases.Lease] = {}


def start_run(plan: RunPlan) -> RunPlan:
    """Write the run's manifest (create-only; a concurrent creator with another setup is refused)
    and take its lease (a live holder is refused, a stale one taken over). Call `finish_run` after."""
    options = plan.config.storage.options
    run, resumed = open_run(plan.run.root, plan.input_shards, plan.config.run_fingerprint(), plan.run.run_id, options)
    _HELD[run.dir] = leases.acquire(run.dir, run.run_id, run.root, options)
    return replace(plan, run=run, resumed=resumed)


def finish_run(run: RunLayout | None) -> None:
    """Give up the run's lease, when this process holds it."""
    held = _HELD.pop(run.dir, None) if run is not None else None
    if held is not None:
        held.release()


def release_all_leases() -> None:
    """Give up every lease this process holds (an interrupted run)."""
    for run_dir in list(_HELD):
        _HELD.pop(run_dir).release()


def progress_note(run: RunLayout, storage_options: Mapping[str, Any] | None = None) -> str:
    """What a run has finished so far, per stage (from its completion markers)."""
    fs, path = filesystem(run.dir, storage_options)
    fs.invalidate_cache(path)
    try:
        stage_dirs = sorted(
            e["name"]
            for e in fs.ls(path, detail=True)
            if e.get("type") == "directory" and not os.path.basename(e["name"].rstrip("/")).startswith(("_", "."))
        )
    except FileNotFoundError:
        return "nothing was written"
    parts = []
    for d in stage_dirs:
        name = os.path.basename(d.rstrip("/"))
        stage = run.stage(name)
        try:
            done = sum(
                1
                for p in fs.ls(storage.filesystem(storage.join(stage.dir, "_done"), storage_options)[1], detail=False)
                if p.endswith(".json")
            )
        except FileNotFoundError:
            done = 0
        finished = storage.exists(stage.stats, storage_options)
        parts.append(f"{name}: {'finished' if finished else f'{done} shard(s) done'}")
    return "; ".join(parts) or "no stage had finished a shard"


# ----------------------------------------------------------------------------- run completion


def generates(stage: str) -> bool:
    """Whether `stage` writes new rows (its output joins the pool) rather than passing its inputs on;
    a stage no longer registered counts as passing them on."""
    from mixforge.stages.registry import get_stage

    try:
        return get_stage(stage).generates
    except ValueError:
        return False


def final_stage(stages: Sequence[str]) -> str | None:
    """The stage whose output is a run's output: its last stage that does not generate rows."""
    return next((s for s in reversed(stages) if not generates(s)), None)


def is_generated_output(folder: str) -> bool:
    """Whether `folder` is a generating stage's output (`.../runs/<run_id>/<stage>`): synthetic rows."""
    return generates(folder.rstrip("/").rsplit("/", 1)[-1])


def completion_marker(run: RunLayout) -> str:
    return storage.join(run.dir, COMPLETE_MARKER)


def mark_run_complete(run: RunLayout, summary: dict, storage_options: Mapping[str, Any] | None = None) -> None:
    """Record that every stage of `run` has finished (written last, after the dedup index update)."""
    stages = [s["name"] for s in summary["stages"]]
    final = next((s for s in summary["stages"] if s["name"] == final_stage(stages)), {})
    record = {
        "run_id": run.run_id,
        "output": summary["output"],
        "stages": stages,
        "docs_kept": final.get("docs_kept"),
        "generated": list(summary.get("generated", [])),
        "completed": storage.utc_timestamp(),
    }
    storage.write_json(completion_marker(run), record, storage_options)


# ----------------------------------------------------------------------------- incremental


def default_dedup_index(output: str) -> str:
    """Where an incremental pool keeps its dedup index when the config names none."""
    return storage.join(output, "index", "dedup")


def incremental_config(config: CurateConfig, output: str) -> CurateConfig:
    """The config of an incremental run: dedup runs, against the pool's index, and appends to it."""
    if "dedup" not in config.stages:
        raise ConfigError(
            "stages: incremental curation deduplicates new shards against the pool's dedup index: "
            f"add 'dedup' to config.stages (got {list(config.stages)})"
        )
    if not config.dedup.update_index:
        raise ConfigError(
            "dedup.update_index: incremental curation needs true, or tomorrow's shards would not be "
            "deduplicated against tonight's documents"
        )
    if config.dedup.index:
        return config
    index = default_dedup_index(output)
    log.info("incremental: no dedup.index configured; using the pool's default index %s", index)
    return config.model_copy(update={"dedup": config.dedup.model_copy(update={"index": index})})


@dataclass(frozen=True)
class PoolRun:
    run_id: str
    output: str  # the final stage's folder: the run's curated shards
    inputs: frozenset[tuple[str, int | None]]  # (URI, size) of every input shard it curated
    generated: tuple[str, ...] = ()  # its generating stages' folders (synthetic rows, in the pool too)


def list_run_ids(root: str, storage_options: Mapping[str, Any] | None = None) -> list[str]:
    fs, path = filesystem(storage.join(root, "runs"), storage_options)
    fs.invalidate_cache(path)  # s3fs caches listings: tonight must see last night's runs
    try:
        entries = fs.ls(path, detail=True)
    except FileNotFoundError:
        return []
    names = (e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e.get("type") == "directory")
    return sorted(n for n in names if not n.startswith(("_", ".")))


def _exists(uri: str, storage_options) -> bool:
    fs, path = filesystem(uri, storage_options)
    fs.invalidate_cache(path.rsplit("/", 1)[0])  # s3fs answers from cached listings otherwise
    return fs.exists(path)


def _read_optional(uri: str, storage_options) -> Any | None:
    try:
        return storage.read_json(uri, storage_options)
    except FileNotFoundError:
        return None


def pool_runs(root: str, index: str, storage_options: Mapping[str, Any] | None = None) -> list[PoolRun]:
    """The completed runs under `<root>/runs/` whose dedup ran against `index` (sorted by run id).

    A run that finished its stages and its index update but died before writing its completion
    marker is counted as completed (and marked): its documents are in the index already, so
    curating its shards again would only drop them all as duplicates of themselves.
    """
    in_index = IndexLayout(index).committed_runs(storage_options)

    def load(run_id: str) -> PoolRun | None:
        run = RunLayout(root, run_id)
        manifest = _read_optional(run.manifest, storage_options)
        if manifest is None:
            return None  # not a run (or one still being created)
        config = manifest.get("config") or {}
        stages = config.get("stages") or []
        if (config.get("dedup") or {}).get("index") != index or final_stage(stages) is None:
            return None  # another pool's run, or one without dedup
        final = run.stage(final_stage(stages))
        generated = [run.stage(s) for s in stages if generates(s)]
        if not _exists(completion_marker(run), storage_options):
            if run_id not in in_index or not _exists(final.stats, storage_options):
                return None  # unfinished: its shards are still to be curated
            log.warning(
                "run %s finished (its documents are in the dedup index %s) but was not marked complete: "
                "marking it now",
                run_id,
                index,
            )
            # a generating stage that died after the index update is left out: its rows are partial
            generated = [g for g in generated if _exists(g.stats, storage_options)]
            record = {
                "run_id": run_id,
                "output": final.dir,
                "stages": stages,
                "generated": [g.dir for g in generated],
                "repaired": True,
            }
            storage.create_only(
                completion_marker(run), json.dumps(record, indent=2, sort_keys=True).encode(), storage_options
            )
        elif generated:  # complete: the generating stages its marker lists (a repaired run may lack some)
            listed = (_read_optional(completion_marker(run), storage_options) or {}).get("generated")
            generated = [g for g in generated if listed is None or g.dir in listed]
        inputs = frozenset((s["uri"], s.get("size")) for s in manifest.get("inputs", []))
        return PoolRun(run_id, final.dir, inputs, tuple(g.dir for g in generated))

    with ThreadPoolExecutor(max_workers=8) as pool:
        runs = list(pool.map(load, list_run_ids(root, storage_options)))
    return [r for r in runs if r is not None]


def new_shards(found: Sequence[InputShard], runs: Sequence[PoolRun]) -> list[InputShard]:
    """The input shards no run of the pool has curated (same URI and size)."""
    curated = set().union(*(r.inputs for r in runs)) if runs else set()
    return [s for s in found if (s.uri, s.size) not in curated]


# ----------------------------------------------------------------------------- the pool a pipeline mixes


def curated_pool(
    output: str, curated: Mapping[str, Any], storage_options: Mapping[str, Any] | None = None
) -> list[str]:
    """The folders of curated shards a pipeline's mixture samples: the curate run's final-stage
    folder, or, for an incremental run, that of every completed run of its pool, each with the
    folders its generating stages wrote (sorted)."""
    if not curated.get("incremental"):
        return sorted(f for f in (curated["output"], *curated.get("generated", [])) if f is not None)
    runs = pool_runs(output, curated["incremental"]["index"], storage_options)
    return sorted(folder for r in runs for folder in (r.output, *r.generated))


def spec_with_pool(spec, pool: Sequence[str]):
    """A mixture spec sampling `pool` instead of the pool it names (absolute: a spec's relative paths
    mean paths relative to its file, and this pool comes from the command's working directory)."""
    from mixforge.mixtures.spec import absolute_path

    return spec.model_copy(update={"pool": [absolute_path(p, os.getcwd()) for p in pool]})


def mixture_spec(
    pool: Sequence[str],
    output: str,
    mixture=None,
    name: str = "default",
    storage_options: Mapping[str, Any] | None = None,
):
    """`mixture` sampling `pool`, or, without one, every source of the pool at its natural share."""
    if mixture is not None:
        return spec_with_pool(mixture, pool)
    from mixforge.mixtures.build import spec_for_pool

    return spec_for_pool(pool, output, name=name, storage_options=storage_options)


def latest_mixture_of_pool(
    store: str, name: str, pool: Sequence[str], spec=None, storage_options: Mapping[str, Any] | None = None
) -> dict | None:
    """The `mix` summary of mixture `name`'s latest version if it was built over exactly `pool`
    (and, when a spec is given, from that spec); None when there is no such version."""
    from mixforge.mixtures import versions

    try:
        manifest = versions.read_manifest(store, name, None, storage_options)
    except versions.VersionNotFound:
        return None
    if sorted(manifest["pool"]["inputs"]) != sorted(pool):
        return None
    if spec is not None:
        from mixforge.mixtures.exclusions import with_standing_takedowns

        expected = with_standing_takedowns(spec_with_pool(spec, sorted(pool)))  # what `mix` would build from it
        if manifest["spec_hash"] != expected.spec_hash():
            return None
    return versions.summary(manifest, store)


def nothing_to_mix(
    input: str,
    name: str,
    curated: Mapping[str, Any],
    pool: Sequence[str],
    current: dict | None,
    rephrased: Sequence[dict],
) -> dict | None:
    """The nightly's no-op result when nothing is new (no curate run, no rephrase run) and the mixture's
    latest version already covers the pool (or there is no pool yet); None when a version is to be built."""
    if curated.get("run_id") is not None or rephrased:
        return None
    if pool and current is None:
        log.info(
            "nothing new under %s, but mixture %s has no version over the current pool: building one", input, name
        )
        return None
    message = (
        f"nothing new under {input}; mixture {name} {current['version']} already covers the pool ({len(pool)} run(s))"
        if current
        else f"nothing new under {input} and nothing curated yet"
    )
    return {
        **curated,
        "rephrase": list(rephrased),
        "noop": True,
        "message": message,
        "pool": list(pool),
        "mixture": None if current is None else {**current, "built": False},
    }
