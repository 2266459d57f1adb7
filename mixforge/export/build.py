"""Exporting a mixture version: training-ready token files, globally shuffled, with lineage.

    <version>/export/<format>-<tokenizer key>[-<tag>]/<phase>/part-NNNNN.<format suffixes>
    <version>/export/<format>-<tokenizer key>[-<tag>]/<phase>/part-NNNNN.lineage.parquet
    <version>/export/<format>-<tokenizer key>[-<tag>]/manifest.json   written create-only, last
    <version>/export/<format>-<tokenizer key>[-<tag>]/_work/          scratch (removed at the end)

`run_export` checks everything it can before any work (`check_export`), then per phase runs the
scatter and gather steps (export/shuffle.py) on the executor it is given, and commits the manifest.
Every step resumes from its marker (a scatter piece, a part's done-marker), so a rerun of a killed
export redoes only what is missing, and a rerun of a finished one is a no-op returning its manifest.
A version derived by a takedown reuses its parent's export made with the same settings: untouched
parts are copied, the others lose the removed documents' token spans; nothing is tokenised again.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import Field

from mixforge import __version__, storage
from mixforge.config_errors import ConfigError
from mixforge.executor import Executor, SerialExecutor
from mixforge.export import shuffle as X
from mixforge.export.formats import FORMATS, ExportFormat, get_format
from mixforge.mixtures.spec import MixSpec, TokenizerSpec
from mixforge.mixtures.versions import MixtureLayout, now, read_manifest, spec_changes
from mixforge.mixtures.write import MAX_BUCKETS, files_per_bucket, remove_scratch
from mixforge.names import name_field
from mixforge.runs import sha256_json
from mixforge.shards import parquet_file
from mixforge.strict import StrictModel
from mixforge.tokenizer import LoadedTokenizer

log = logging.getLogger("mixforge")

__all__ = [
    "MetadataConditioning",
    "ExportConfig",
    "ExportPlan",
    "export_dir",
    "check_export",
    "check_export_settings",
    "run_export",
]

EXPORT_FORMAT = "mixforge.export/1"
Progress = Callable[[str, int, int], None]  # (step, units done, units in all), after each unit


class MetadataConditioning(StrictModel):
    """Prepend row metadata to each document ("Metadata Conditioning Accelerates Language Model
    Pre-training"), in chosen phases only (the paper's cooldown goes without)."""

    template: str = Field(
        description="str.format over the row's fields plus `domain` (the URL's host), e.g. '{domain}\\n\\n'."
    )
    phases: list[str] | None = Field(None, description="The phases that get the prefix (null: every phase).")


class ExportConfig(StrictModel):
    format: str = Field("megatron", description="Output format: megatron (.bin/.idx) or npy (token memmap + index).")
    tokenizer: TokenizerSpec | None = Field(
        None, description="The tokenizer (null: the one the mixture counted tokens with)."
    )
    eos_token: str | None = Field(None, description="End-of-document token (null: the tokenizer's own).")
    bos_token: str | None = Field(None, description="Beginning-of-document token (needed by bos: true).")
    bos: bool = Field(False, description="Put bos_token before every document.")
    seed: int = Field(0, ge=0, lt=2**63, description="Shuffle seed: same version and seed, byte-identical files.")
    file_tokens: int = Field(2**25, ge=1, description="Target tokens per output file.")
    metadata: MetadataConditioning | None = Field(None, description="Metadata conditioning (null: off).")
    phases: list[str] | None = Field(None, description="The phases to export (null: every phase).")
    tag: name_field("export tag") | None = Field(  # type: ignore[valid-type]
        None, description="Appended to the export's folder: a second export with other settings, same tokenizer."
    )


def export_dir(store: str, name: str, version: str, format: str, tokenizer_key: str, tag: str | None = None) -> str:
    """`mixtures/<name>/<version>/export/<format>-<tokenizer key>[-<tag>]/`."""
    folder = f"{format}-{tokenizer_key}" + (f"-{tag}" if tag else "")
    return storage.join(MixtureLayout(store, name).version_dir(version), "export", folder)


@dataclass(frozen=True)
class PhasePlan:
    name: str
    files: tuple[dict[str, Any], ...]  # the mixture manifest's entries of this phase, in manifest order
    partitions: int
    template: str | None  # its metadata prefix (None: none)


@dataclass
class ExportPlan:
    """Everything `run_export` decided before any work (`check_export`)."""

    store: str
    mixture: dict[str, Any]  # the version's manifest
    config: ExportConfig  # tokenizer resolved
    tokenizer: LoadedTokenizer
    format: ExportFormat
    dir: str
    phases: list[PhasePlan]
    parent: dict[str, Any] | None = None  # the parent version's export manifest, when its parts are reused
    removed_ids: frozenset[str] = field(default_factory=frozenset)
    existing: dict[str, Any] | None = None  # the complete export with this config, if there is one

    @property
    def config_dump(self) -> dict[str, Any]:
        return self.config.model_dump(mode="json")

    @property
    def config_hash(self) -> str:
        return sha256_json(self.config_dump)

    @property
    def manifest_uri(self) -> str:
        return storage.join(self.dir, "manifest.json")

    @property
    def work(self) -> str:
        return storage.join(self.dir, "_work")

    @property
    def encoding(self) -> X.Encoding:
        c = self.config
        return X.Encoding(c.tokenizer, c.eos_token, c.bos_token, c.bos)


# ----------------------------------------------------------------------------- checks (no writes)


def _resolved(config: ExportConfig, mixture: dict[str, Any]) -> ExportConfig:
    if config.tokenizer is not None:
        return config
    t = mixture.get("tokenizer") or {}
    if not t.get("kind"):
        raise ConfigError(f"mixture {mixture['name']} {mixture['version']} records no tokenizer: name one")
    return config.model_copy(update={"tokenizer": TokenizerSpec(kind=t["kind"], name=t["name"])})


def _settings_differ(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    return ", ".join(f"{c['path']} ({c['a']!r} there, {c['b']!r} now)" for c in spec_changes(dict(a), dict(b)))


def _load_tokenizer(config: ExportConfig, storage_options) -> LoadedTokenizer:
    from mixforge.tokenizer import load_tokenizer

    spec = config.tokenizer
    try:
        tok = load_tokenizer(
            spec, eos_token=config.eos_token, bos_token=config.bos_token, storage_options=storage_options
        )
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - any loader failure is a setting to fix: said before any work
        raise ConfigError(f"tokenizer {spec.kind} {spec.name!r} cannot be loaded: {e}") from None
    if config.bos and tok.bos_id is None:
        raise ConfigError("bos: true needs a BOS token: name it with bos_token (--bos-token)")
    return tok


def _check_settings(
    config: ExportConfig, phase_names: list[str], what: str, storage_options
) -> tuple[ExportFormat, LoadedTokenizer]:
    """The settings that need no data: the format is known, the tokenizer (resolved) loads with its EOS/BOS,
    the named phases are `what`'s, the metadata template parses."""
    if config.format not in FORMATS:
        raise ConfigError(f"unknown export format {config.format!r} (formats: {', '.join(sorted(FORMATS))})")
    fmt = get_format(config.format)
    tok = _load_tokenizer(config, storage_options)
    for setting, wanted in (
        ("phases", config.phases),
        ("metadata.phases", config.metadata.phases if config.metadata else None),
    ):
        unknown = [p for p in wanted or [] if p not in phase_names]
        if unknown:
            raise ConfigError(
                f"{setting}: {what} has no phase {', '.join(map(repr, unknown))} (phases: {', '.join(phase_names)})"
            )
    if config.metadata is not None:
        _template_fields(config.metadata.template)
    return fmt, tok


def check_export_settings(config: ExportConfig, spec: MixSpec) -> LoadedTokenizer:
    """`mix` with an export, before the version is built: everything about the export that the version's data
    is not needed for (`_check_settings`, the tokenizer the spec's when the export names none), so a bad
    setting fails with no new version. What needs the rows (template fields) is checked by `check_export`."""
    if config.tokenizer is None:
        config = config.model_copy(update={"tokenizer": spec.tokenizer})
    phases = [p.name for p in spec.effective_phases()]
    return _check_settings(config, phases, f"mixture spec {spec.name!r}", spec.storage_options)[1]


def _template_fields(template: str) -> list[str]:
    try:
        return X.template_fields(template)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _check_template(template: str, mixture: dict[str, Any], storage_options) -> None:
    fields = _template_fields(template)
    with parquet_file(mixture["files"][0]["uri"], storage_options) as pf:
        columns = set(pf.schema_arrow.names)
    missing = [f for f in fields if f not in columns and not (f == X.DOMAIN and "url" in columns)]
    if missing:
        raise ConfigError(
            f"metadata template {template!r} names {', '.join(missing)}, which mixture {mixture['name']} "
            f"{mixture['version']} rows lack (fields: {', '.join(sorted(columns | {X.DOMAIN}))}; "
            "domain is the URL's host)"
        )


def _parent_export(plan: ExportPlan, storage_options) -> tuple[dict[str, Any] | None, frozenset[str]]:
    """The parent version's complete export with this config, when the version was derived from it by a
    takedown and its rows carry lineage (their keys then do not depend on the files they sit in)."""
    m = plan.mixture
    parent, takedown = m.get("derived_from"), m.get("takedown")
    if not parent or not takedown or not m["files"]:
        return None, frozenset()
    with parquet_file(m["files"][0]["uri"], storage_options) as pf:
        if not all(c in pf.schema_arrow.names for c in X.LINEAGE):
            return None, frozenset()
    key = plan.dir.rstrip("/").rsplit("/", 1)[-1]
    uri = storage.join(MixtureLayout(plan.store, m["name"]).version_dir(parent["version"]), "export", key)
    try:
        manifest = storage.read_json(storage.join(uri, "manifest.json"), storage_options)
    except FileNotFoundError:
        return None, frozenset()
    if manifest.get("config_hash") != plan.config_hash:
        return None, frozenset()
    return manifest, frozenset(takedown["removed_ids"])


def check_export(
    store: str,
    name: str,
    version: str | None,
    config: ExportConfig,
    storage_options: Mapping[str, Any] | None = None,
) -> ExportPlan:
    """What an export of `name` `version` with `config` will do, checked before any work (writes nothing):
    the version and its phases exist, the format is known, the tokenizer loads, the metadata template
    names fields the rows have, and an export already there was made with the same settings."""
    mixture = read_manifest(store, name, version, storage_options)  # VersionNotFound names the versions
    version = mixture["version"]
    config = _resolved(config, mixture)
    fmt, tok = _check_settings(config, [p["name"] for p in mixture["phases"]], f"{name} {version}", storage_options)
    if config.metadata is not None and mixture["files"]:
        _check_template(config.metadata.template, mixture, storage_options)
    plan = ExportPlan(
        store, mixture, config, tok, fmt, export_dir(store, name, version, fmt.name, tok.key, config.tag), []
    )
    existing = _read_json_or_none(plan.manifest_uri, storage_options)
    if existing is None:
        existing_config = _read_json_or_none(storage.join(plan.work, "config.json"), storage_options)
        what = "an unfinished export"
    else:
        existing_config, what = existing, "an export"
    if existing_config is not None and existing_config["config_hash"] != plan.config_hash:
        raise ConfigError(
            f"{what} with other settings is at {plan.dir}: "
            f"{_settings_differ(existing_config['config'], plan.config_dump)}; "
            "give this one a tag (--tag) to export it beside that one"
        )
    plan.existing = existing
    plan.parent, plan.removed_ids = _parent_export(plan, storage_options)
    metadata = config.metadata
    for p in mixture["phases"]:
        if config.phases is not None and p["name"] not in config.phases:
            continue
        files = tuple(mixture["files"][i] for i in p["files"])
        if plan.parent is not None:
            partitions = plan.parent["partitions"][p["name"]]  # the parent's: its parts are this export's
        else:
            partitions = X.partitions_for(sum(f["tokens"] for f in files), config.file_tokens)
        template = (
            metadata.template if metadata and (metadata.phases is None or p["name"] in metadata.phases) else None
        )
        plan.phases.append(PhasePlan(p["name"], files, partitions, template))
    return plan


def _read_json_or_none(uri: str, storage_options) -> Any:
    try:
        return storage.read_json(uri, storage_options)
    except FileNotFoundError:
        return None


# ----------------------------------------------------------------------------- running


def _map(executor: Executor, fn, jobs: list, step: str, storage_options, progress: Progress | None) -> list:
    """`fn(job, storage_options)` for each job on the executor; results in job order. With `progress`,
    results are folded as they arrive so that each finished unit is reported."""
    calls = [(i, fn, job, storage_options) for i, job in enumerate(jobs)]

    def fold(acc, result):
        (acc := acc or []).append(result)
        if progress is not None:
            progress(step, len(acc), len(jobs))
        return acc

    done = executor.map(_indexed_call, calls, step=step, fold=fold, storage_options=storage_options) or []
    return [r for _, r in sorted(done, key=lambda r: r[0])]


def _indexed_call(i: int, fn, job, storage_options) -> tuple[int, Any]:
    return i, fn(job, storage_options)


def _target(plan: ExportPlan, phase: str, part: int) -> X.PartTarget:
    return X.PartTarget(
        phase,
        part,
        storage.join(plan.dir, phase, f"part-{part:05d}"),
        storage.join(plan.work, "parts", phase, f"part-{part:05d}.json"),
    )


def _export_phase(plan: ExportPlan, ph: PhasePlan, executor: Executor, storage_options, progress) -> list[dict]:
    """The phase's part entries: reused from the parent's export, or scattered and gathered."""
    vocab = plan.tokenizer.vocab_size
    if plan.parent is not None:
        parent_parts = [f for f in plan.parent["files"] if f["phase"] == ph.name]
        jobs = [
            X.ReuseJob(_target(plan, ph.name, f["part"]), f, plan.removed_ids, plan.format.name, vocab)
            for f in parent_parts
        ]
        return _map(executor, X.reuse, jobs, f"export-reuse ({ph.name})", storage_options, progress)
    scatter = [
        X.ScatterJob(
            ph.name,
            f.get("part", i),
            f["uri"],
            ph.partitions,
            plan.config.seed,
            plan.encoding,
            ph.template,
            storage.join(plan.work, "scatter", ph.name, f"piece-{f.get('part', i):05d}.parquet"),
        )
        for i, f in enumerate(ph.files)
    ]
    _map(executor, X.scatter, scatter, f"export-scatter ({ph.name})", storage_options, progress)
    run_ids = tuple(s.get("run_id") for s in plan.mixture["pool"]["shards"])
    per_bucket = files_per_bucket(ph.partitions, MAX_BUCKETS)  # footer reads: pieces x buckets
    gathers = [
        X.GatherJob(
            tuple(_target(plan, ph.name, p) for p in range(b, min(b + per_bucket, ph.partitions))),
            tuple(j.piece for j in scatter),
            plan.format.name,
            vocab,
            run_ids,
        )
        for b in range(0, ph.partitions, per_bucket)
    ]
    written = _map(executor, X.gather, gathers, f"export-gather ({ph.name})", storage_options, progress)
    return [e for entries in written for e in entries]


def manifest_body(plan: ExportPlan, entries: list[dict[str, Any]], started: str) -> dict[str, Any]:
    """The export manifest (contracts.ExportManifest) of the part entries, less its commit time."""
    tok = plan.tokenizer
    phases, files = [], []
    for ph in plan.phases:
        mine = sorted((e for e in entries if e["phase"] == ph.name), key=lambda e: e["part"])
        groups: dict[str, dict[str, int]] = {}
        for e in mine:
            for g, t in e["groups"].items():
                acc = groups.setdefault(g, {"docs": 0, "tokens": 0})
                acc["tokens"] += t
                acc["docs"] += e["group_docs"][g]
        expected = sum(f["rows"] for f in ph.files)
        docs = sum(e["docs"] for e in mine)
        if docs != expected:  # every row of the version exactly once, repeats included
            raise RuntimeError(f"phase {ph.name!r}: exported {docs:,} documents but the version holds {expected:,}")
        phases.append(
            {
                "name": ph.name,
                "tokens": sum(e["tokens"] for e in mine),
                "docs": docs,
                "groups": [{"name": g, **v} for g, v in sorted(groups.items())],
                "files": list(range(len(files), len(files) + len(mine))),
                "metadata_prefix": ph.template is not None,
            }
        )
        files += mine
    m = plan.mixture
    return {
        "format": EXPORT_FORMAT,
        "mixture": m["name"],
        "version": m["version"],
        "uri": plan.dir,
        "mixture_manifest": MixtureLayout(plan.store, m["name"]).manifest(m["version"]),
        "export_format": plan.format.name,
        "tokenizer": {
            "kind": tok.kind,
            "name": tok.name,
            "key": tok.key,
            "sha256": tok.sha256,
            "vocab_size": tok.vocab_size,
            "eos_id": tok.eos_id,
            "bos_id": tok.bos_id,
        },
        "dtype": np.dtype(plan.format.dtype(tok.vocab_size)).name,
        "seed": plan.config.seed,
        "config": plan.config_dump,
        "config_hash": plan.config_hash,
        "partitions": {ph.name: ph.partitions for ph in plan.phases},
        "phases": phases,
        "files": files,
        "tokens": sum(p["tokens"] for p in phases),
        "docs": sum(p["docs"] for p in phases),
        "derived_from": storage.join(plan.parent["uri"], "manifest.json") if plan.parent else None,
        "reused_files": sum(1 for f in files if f.get("copied_from")),
        "timestamps": {"started": started},
        "code_version": __version__,
    }


def run_export(
    store: str,
    name: str,
    version: str | None,
    config: ExportConfig,
    executor: Executor | None = None,
    storage_options: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Export mixture `name` `version` (None: the latest) as `config` says; returns the export manifest.
    A finished export with the same settings is returned as it is; one with other settings is refused
    (ConfigError) before any work."""
    from mixforge import contracts

    started, t0 = now(), time.perf_counter()
    executor = executor or SerialExecutor()
    plan = check_export(store, name, version, config, storage_options)
    if plan.existing is not None:
        log.info("export %s is complete: nothing to do", plan.dir)
        remove_scratch(plan.work, storage_options)  # left by a run stopped after its commit
        return plan.existing
    claim = {"config": plan.config_dump, "config_hash": plan.config_hash}
    if not storage.create_only(storage.join(plan.work, "config.json"), json.dumps(claim).encode(), storage_options):
        log.info("resuming the unfinished export at %s", plan.dir)
    entries = []
    for ph in plan.phases:
        entries += _export_phase(plan, ph, executor, storage_options, progress)
    body = manifest_body(plan, entries, started)
    manifest = {**body, "timestamps": {**body["timestamps"], "committed": now()}}
    contracts.validate(manifest, contracts.ExportManifest)
    if not storage.create_only(
        plan.manifest_uri, json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n", storage_options
    ):
        manifest = storage.read_json(plan.manifest_uri, storage_options)  # an identical export finished first
    remove_scratch(plan.work, storage_options)
    log.info(
        "exported %s %s: %s tokens in %d files (%d reused) in %.1fs",
        name,
        plan.mixture["version"],
        f"{manifest['tokens']:,}",
        len(manifest["files"]),
        manifest["reused_files"],
        time.perf_counter() - t0,
    )
    return manifest
