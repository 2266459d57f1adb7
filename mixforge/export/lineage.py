"""`mixforge lineage`: the documents behind a token of an export, or behind a training step.

An export (`mixtures/<name>/vNNNN/export/<format>-<tokenizer key>[-<tag>]/`) lists its parts in
`manifest.json`; beside each part a lineage sidecar (`part-NNNNN.lineage.parquet`) holds one row per
document in file order: where its tokens start in the part, how many there are (BOS + metadata
prefix + text + EOS), how many come before the text, and where the document came from (id, source,
group, pool shard and row, copy number, run id). Lineage reads only the manifests and the sidecars
that overlap the question, never a token file.

- `--file F --token N`: the document holding token N of part F (a binary search on the sidecar's
  `token_start`), and whether the token is its BOS, its metadata prefix, its text or its EOS.
- `--step S --global-batch B --seq-len L [--phase P]`: every document overlapping the tokens step S
  reads, with how many of its tokens fall in that step.

Step -> tokens assumes sequential concatenate-and-chunk reading: within a phase the parts, in the
order the export manifest lists them, form one token stream, and step S reads stream tokens
[S*B*L, (S+1)*B*L) (sample i of the stream is tokens [i*L, (i+1)*L); the label shift reads one token
past a sample, which belongs to the next step's range and is not counted here). Trainers that
reshuffle samples with their own seed, such as Megatron-LM's GPTDataset (its shuffle and sample
index files) and OLMo-core (its global indices), do not read in this order: for them a step's tokens
come from their own sample index, which this module does not rebuild. Map such a step to tokens with
the trainer's index first, then ask with `--file F --token N`.

`--explain` adds each document's path through its curation run (mixforge.explain: kept by which
stages, their scores and labels, its duplicate cluster); the run is the sidecar's `run_id`, or its
pool shard's in the mixture manifest. Versions written before mixforge.mixture/3 have no pool shard,
row or copy (null); their run id still comes from the sidecar where the export recorded one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from mixforge import schema as S
from mixforge import storage
from mixforge.config_errors import ConfigError
from mixforge.mixtures.versions import MixtureLayout, _ls_names, read_manifest, resolve_version
from mixforge.shards import read_parquet

EXPORT_DIR = "export"  # under a version's folder
MANIFEST = "manifest.json"  # written last: an export without it is unfinished
# sidecar columns (export design, "Lineage sidecar")
TOKEN_START, DOC_TOKENS, PREFIX_TOKENS, RUN_ID = "token_start", "n_tokens", "prefix_tokens", "run_id"


class LineageError(ConfigError):
    """The question names no export, file, token or step there is (exit code 2)."""


# ----------------------------------------------------------------------------- finding the export


def exports_of(store: str, name: str, version: str, storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """The folder names of the version's complete exports (those with a manifest), sorted."""
    root = storage.join(MixtureLayout(store, name).version_dir(version), EXPORT_DIR)
    return [
        n
        for n in _ls_names(root, storage_options)
        if not n.startswith(("_", ".")) and storage.exists(storage.join(root, n, MANIFEST), storage_options)
    ]


def find_export(
    store: str, name: str, version: str | None, export: str | None = None, storage_options=None
) -> tuple[str, str, dict[str, Any]]:
    """(version, export folder URI, export manifest) of the one export of the version, or of `export`."""
    version = resolve_version(MixtureLayout(store, name), version, storage_options)
    found = exports_of(store, name, version, storage_options)
    where = f"mixture {name!r} {version}"
    if export is None:
        if len(found) != 1:
            listed = ", ".join(found) if found else "none (run mixforge export first)"
            raise LineageError(
                f"{where} has {len(found)} complete exports: {listed}" + ("; pick one with --export" if found else "")
            )
        export = found[0]
    elif export not in found:
        raise LineageError(f"{where} has no complete export {export!r} (exports: {', '.join(found) or 'none'})")
    root = storage.join(MixtureLayout(store, name).version_dir(version), EXPORT_DIR, export)
    return version, root, storage.read_json(storage.join(root, MANIFEST), storage_options)


def resolve_file(manifest: Mapping[str, Any], file: str | int) -> int:
    """Index in the export manifest's `files` of a part given as its index, its data file's URI or name
    (`part-00000.bin`, or `main/part-00000.bin` where phases share names), or any of its files."""
    files = manifest["files"]
    text = str(file).strip()
    if re.fullmatch(r"\d+", text):
        index = int(text)
        if index >= len(files):
            raise LineageError(f"--file {text}: the export has {len(files)} parts (indexes 0..{len(files) - 1})")
        return index

    def uris(entry: Mapping[str, Any]) -> list[str]:
        return [entry["uri"], *(f["uri"] for f in entry.get("files", [])), *filter(None, [entry.get("lineage")])]

    exact = [i for i, e in enumerate(files) if text in uris(e)]
    matches = exact or [i for i, e in enumerate(files) if any(u.endswith("/" + text.lstrip("/")) for u in uris(e))]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        sample = ", ".join(f"{e['phase']}/{e['uri'].rsplit('/', 1)[-1]}" for e in files[:6])
        raise LineageError(f"--file {text}: no part of the export has that name, URI or index (parts: {sample} ...)")
    named = ", ".join(f"{i}: {files[i]['uri']}" for i in matches)
    raise LineageError(f"--file {text}: several parts match ({named}); give its phase folder too, or its index")


def _phase(manifest: Mapping[str, Any], phase: str | None) -> dict[str, Any]:
    phases = {p["name"]: p for p in manifest["phases"]}
    if phase is None:
        if len(phases) != 1:
            raise LineageError(f"the export has {len(phases)} phases ({', '.join(phases)}): pick one with --phase")
        return next(iter(phases.values()))
    if phase not in phases:
        raise LineageError(f"--phase {phase}: the export has no such phase (phases: {', '.join(phases)})")
    return phases[phase]


def phase_parts(manifest: Mapping[str, Any], phase: Mapping[str, Any]) -> list[int]:
    """The phase's parts (indexes into `files`) in stream order: the order the manifest lists them."""
    listed = phase.get("files")
    if listed is None:
        listed = [i for i, f in enumerate(manifest["files"]) if f["phase"] == phase["name"]]
    return [int(i) for i in listed]


# ----------------------------------------------------------------------------- the documents


class _Context:
    """What every answer needs besides the sidecars: the export and the mixture manifest's pool."""

    def __init__(self, store, name, version, root, manifest, explain, storage_options):
        self.store, self.name, self.version, self.root, self.manifest = store, name, version, root, manifest
        self.explain, self.storage_options = explain, storage_options
        mixture = read_manifest(store, name, version, storage_options)
        self.pool = mixture["pool"]["shards"]
        self.bos = bool((manifest.get("config") or {}).get("bos"))
        self._explained: dict[tuple[str, str], dict[str, Any]] = {}

    def sidecar(self, file_index: int) -> tuple[np.ndarray, pa.Table]:
        """A part's sidecar: its documents' first-token offsets, and the table (rows become dicts only
        for the documents an answer names: a part may hold hundreds of thousands)."""
        entry = self.manifest["files"][file_index]
        uri = entry.get("lineage") or _sidecar_uri(entry["uri"])
        try:
            table = read_parquet(uri, self.storage_options)
        except FileNotFoundError:
            raise LineageError(f"part {file_index} ({entry['uri']}) has no lineage sidecar at {uri}") from None
        return table.column(TOKEN_START).to_numpy().astype(np.int64), table

    def documents(self, table: pa.Table, first: int, end: int, file_index: int, stream_offset: int) -> list[dict]:
        """Sidecar rows [first, end) as answers (columns a sidecar lacks, such as the pool shard, row and
        copy of a version before mixforge.mixture/3: null)."""
        return [self.document(row, file_index, stream_offset) for row in table.slice(first, end - first).to_pylist()]

    def document(self, row: Mapping[str, Any], file_index: int, stream_offset: int) -> dict[str, Any]:
        start, n = int(row[TOKEN_START]), int(row[DOC_TOKENS])
        shard = row.get(S.POOL_SHARD)
        pool = self.pool[shard] if shard is not None and 0 <= shard < len(self.pool) else {}
        doc = {
            "id": row[S.ID],
            "source": row.get(S.SOURCE),
            "group": row.get(S.MIX_GROUP),
            "pool_shard": shard,
            "pool_shard_uri": pool.get("uri"),
            "pool_row": row.get(S.POOL_ROW),
            "pool_copy": row.get(S.POOL_COPY),
            "run_id": row.get(RUN_ID) or pool.get("run_id"),
            "file": file_index,
            "file_uri": self.manifest["files"][file_index]["uri"],
            "token_start": start,
            "token_end": start + n,
            "prefix_tokens": int(row.get(PREFIX_TOKENS) or 0),
            "stream_start": stream_offset + start,
        }
        if self.explain:
            doc.update(self._explain(doc))
        return doc

    def _explain(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        from mixforge.explain import explain

        if not doc["run_id"]:
            return {
                "explain": None,
                "explain_error": "no run id: the sidecar names none, and its pool shard is unknown or no run's output",
            }
        key = (doc["run_id"], doc["id"])
        if key not in self._explained:
            store = _run_store(doc["pool_shard_uri"], doc["run_id"]) or self.store
            try:
                self._explained[key] = {"explain": explain(store, doc["run_id"], doc["id"], self.storage_options)}
            except (ConfigError, FileNotFoundError) as e:
                self._explained[key] = {"explain": None, "explain_error": str(e).splitlines()[0]}
        return self._explained[key]


def _sidecar_uri(data_uri: str) -> str:
    stem = data_uri.rsplit("/", 1)
    return f"{stem[0]}/{stem[1].split('.', 1)[0]}.lineage.parquet"


def _run_store(pool_shard_uri: str | None, run_id: str) -> str | None:
    """The store a pool shard's run lives in: the URI before `/runs/<run id>/`."""
    if not pool_shard_uri:
        return None
    match = re.match(rf"^(.*)/runs/{re.escape(run_id)}/", pool_shard_uri)
    return match.group(1) if match else None


def _file_summary(manifest: Mapping[str, Any], i: int) -> dict[str, Any]:
    e = manifest["files"][i]
    return {
        "index": i,
        "uri": e["uri"],
        "phase": e["phase"],
        "part": e["part"],
        "tokens": e["tokens"],
        "docs": e["docs"],
    }


def _position(doc: Mapping[str, Any], offset: int, bos: bool) -> str:
    """Where token `offset` of the part falls in the document: bos, prefix, text or eos."""
    into = offset - doc["token_start"]
    if into < doc["prefix_tokens"]:
        return "bos" if bos and into == 0 else "prefix"
    return "eos" if offset == doc["token_end"] - 1 else "text"


def _base(ctx: _Context, phase: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "mixture": ctx.name,
        "version": ctx.version,
        "export": ctx.root.rstrip("/").rsplit("/", 1)[-1],
        "export_uri": ctx.root,
        "phase": phase["name"],
        "phase_tokens": int(phase["tokens"]),
    }


def at_token(
    store: str,
    name: str,
    version: str | None,
    file: str | int,
    token: int,
    *,
    export: str | None = None,
    explain: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The document holding token `token` of export part `file` (contracts.Lineage)."""
    version, root, manifest = find_export(store, name, version, export, storage_options)
    index = resolve_file(manifest, file)
    entry = manifest["files"][index]
    if not 0 <= token < entry["tokens"]:
        raise LineageError(
            f"--token {token}: part {index} ({entry['uri']}) has {entry['tokens']:,} tokens "
            f"(offsets 0..{entry['tokens'] - 1:,})"
        )
    ctx = _Context(store, name, version, root, manifest, explain, storage_options)
    phase = _phase(manifest, entry["phase"])
    parts = phase_parts(manifest, phase)
    offset = sum(int(manifest["files"][i]["tokens"]) for i in parts[: parts.index(index)])
    starts, table = ctx.sidecar(index)
    i = int(np.searchsorted(starts, token, side="right")) - 1
    doc = ctx.documents(table, i, i + 1, index, offset)[0]
    doc["tokens_in_range"] = 1
    doc["position"] = _position(doc, token, ctx.bos)
    return {
        **_base(ctx, phase),
        "query": "token",
        "file": index,
        "token": token,
        "stream_start": offset + token,
        "stream_end": offset + token + 1,
        "files": [_file_summary(manifest, index)],
        "documents": [doc],
    }


def at_step(
    store: str,
    name: str,
    version: str | None,
    step: int,
    global_batch: int,
    seq_len: int,
    *,
    phase: str | None = None,
    export: str | None = None,
    explain: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Every document overlapping the tokens training step `step` reads (sequential concatenate-and-chunk
    reading of the phase's parts, see the module docstring), with how many of its tokens fall there."""
    for flag, value, least in (("--step", step, 0), ("--global-batch", global_batch, 1), ("--seq-len", seq_len, 1)):
        if value < least:
            raise LineageError(f"{flag} {value}: must be at least {least}")
    version, root, manifest = find_export(store, name, version, export, storage_options)
    ph = _phase(manifest, phase)
    per_step = global_batch * seq_len
    total = int(ph["tokens"])
    lo, hi = step * per_step, (step + 1) * per_step
    if lo >= total:
        last = (total - 1) // per_step if total else None
        raise LineageError(
            f"--step {step}: phase {ph['name']!r} has {total:,} tokens, {per_step:,} a step "
            f"(global batch {global_batch} x seq len {seq_len}): "
            + (f"its last step is {last} ({total - last * per_step:,} tokens)" if last is not None else "no step")
        )
    ctx = _Context(store, name, version, root, manifest, explain, storage_options)
    parts = phase_parts(manifest, ph)
    sizes = np.array([int(manifest["files"][i]["tokens"]) for i in parts], np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    docs, files = [], []
    # the parts overlapping [lo, hi): only their sidecars are read
    first = int(np.searchsorted(starts, lo, side="right")) - 1
    for k in range(first, len(parts)):
        if starts[k] >= hi:
            break
        if sizes[k] == 0:
            continue
        index, offset = parts[k], int(starts[k])
        a, b = max(lo - offset, 0), min(hi - offset, int(sizes[k]))  # the range within the part
        doc_starts, table = ctx.sidecar(index)
        first_doc = int(np.searchsorted(doc_starts, a, side="right")) - 1
        end_doc = int(np.searchsorted(doc_starts, b, side="left"))
        for doc in ctx.documents(table, first_doc, end_doc, index, offset):
            doc["tokens_in_range"] = min(doc["token_end"], b) - max(doc["token_start"], a)
            docs.append(doc)
        files.append(_file_summary(manifest, index))
    return {
        **_base(ctx, ph),
        "query": "step",
        "step": step,
        "global_batch": global_batch,
        "seq_len": seq_len,
        "last_step": (total - 1) // per_step,
        "stream_start": lo,
        "stream_end": min(hi, total),
        "files": files,
        "documents": docs,
    }


# ----------------------------------------------------------------------------- for people


def format_lineage(result: Mapping[str, Any]) -> str:
    from mixforge.explain import format_explain

    lines = [
        f"mixture {result['mixture']} {result['version']}, export {result['export']}, phase {result['phase']} "
        f"({result['phase_tokens']:,} tokens)"
    ]
    docs: Sequence[Mapping[str, Any]] = result["documents"]
    if result["query"] == "token":
        doc, f = docs[0], result["files"][0]
        lines.append(
            f"part {f['index']} ({f['uri']}) token {result['token']:,} (phase stream token "
            f"{result['stream_start']:,}): {doc['position']} of document {doc['id']!r}"
        )
    else:
        parts = ", ".join(str(f["index"]) for f in result["files"])
        lines.append(
            f"step {result['step']:,} (global batch {result['global_batch']} x seq len {result['seq_len']}, last step "
            f"{result['last_step']:,}): phase stream tokens [{result['stream_start']:,}, {result['stream_end']:,}) "
            f"in part(s) {parts}: {len(docs)} documents (sequential concatenate-and-chunk reading)"
        )
    lines.append(
        f"  {'tokens':>9}  {'document':<28} {'source':<10} {'group':<12} {'pool shard:row':<28} {'copy':>4}  "
        f"{'run':<22} span in part (prefix)"
    )
    for d in docs:
        shard = d["pool_shard_uri"].rsplit("/", 1)[-1] if d["pool_shard_uri"] else "-"
        where = f"{shard}:{d['pool_row']}" if d["pool_row"] is not None else "-"
        lines.append(
            f"  {d['tokens_in_range']:>9,}  {_cut(d['id'], 28):<28} {_cut(d['source'], 10):<10} "
            f"{_cut(d['group'], 12):<12} {_cut(where, 28):<28} {_dash(d['pool_copy']):>4}  "
            f"{_cut(d['run_id'], 22):<22} part {d['file']} [{d['token_start']:,}, {d['token_end']:,}) "
            f"({d['prefix_tokens']})"
        )
        if "explain" in d:
            if d["explain"] is not None:
                lines += ["      " + line for line in format_explain(d["explain"]).splitlines()]
            else:
                lines.append(f"      no explanation: {d.get('explain_error')}")
    return "\n".join(lines)


def _dash(value: Any) -> str:
    return "-" if value is None else str(value)


def _cut(value: Any, width: int) -> str:
    text = _dash(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def print_lineage(result: Mapping[str, Any], as_json: bool) -> None:
    """The CLI's printer: the contract-checked JSON (contracts.Lineage), or the lines for people."""
    if as_json:
        from mixforge import contracts

        contracts.print_json(result, contracts.Lineage)
    else:
        print(format_lineage(result))
