"""The steps of a mixture optimisation run: one proxy (sample -> train -> score), and what the driver
prepares for every proxy (the targets' tokens, the vocabulary map).

A proxy's token sample goes through the same path as a training set: its mixture spec (the search's
mixture with the proxy's weights and a budget of the proxy's training tokens) is built as a version
of a private store in the proxy's folder, exported as `npy`, and the export's token files are the
training array (a memmap on local disk). So the proxy sees exactly what a training run of that
mixture would see (the mixture's draw, the export's shuffle, EOS after each document), and the
epoch caps are checked on the version's manifest. `result.json` in the proxy's folder is its marker:
a rerun skips a proxy that has one, and reuses a built sample when the proxy stopped after it.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mixforge import storage
from mixforge.executor import SerialExecutor
from mixforge.mixtures.spec import MixSpec, TokenizerSpec
from mixforge.optimize.proxy import ProxyConfig, apply_vocab, train_proxy

log = logging.getLogger("mixforge")

RESULT = "result.json"
_EPOCH_SLACK = 1e-6  # the planner realises a group's tokens to within one document


@dataclass(frozen=True)
class ProxyJob:
    """One proxy: its mixture (searched groups -> share), where it lives and how it is trained."""

    id: str  # "<round>-<k>" (swarm and CLIMB rounds) or "verify-<what>"
    round: int  # -1: a verification proxy
    role: str  # swarm | proposal | prior | uniform
    weights: dict[str, float]
    dir: str
    mixture: MixSpec  # the proxy's own mixture spec: store in dir/store, budget = training tokens
    max_epochs: float  # no group of the sample may be taken more often than this
    proxy: ProxyConfig
    targets: dict[str, str]  # target name -> its tokens (.npy, tokenizer ids)
    vocab: str | None  # the vocabulary map (.npy), None: the proxy uses tokenizer ids
    device: str = "auto"
    threads: int = 1
    temperatures: dict[str, float] | None = None  # QuaDMix: group -> the quality-sampling temperature of its sample

    @property
    def result_uri(self) -> str:
        return storage.join(self.dir, RESULT)


def proxy_tokens(config: ProxyConfig) -> int:
    """Tokens a proxy reads: its training steps' tokens plus the last label."""
    return config.steps * config.tokens_per_step + 1


# ----------------------------------------------------------------------------- arrays in the store


def save_array(uri: str, array: np.ndarray, storage_options: Mapping[str, Any] | None = None) -> None:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    storage.write_bytes(uri, buf.getvalue(), storage_options)


def load_array(uri: str, storage_options: Mapping[str, Any] | None = None) -> np.ndarray:
    return np.load(io.BytesIO(storage.read_bytes(uri, storage_options)), allow_pickle=False)


def tokenize_target(
    uri: str, tokenizer: TokenizerSpec, n_tokens: int, storage_options: Mapping[str, Any] | None = None
) -> np.ndarray:
    """The first `n_tokens` tokens (at most) of a target's documents (Parquet `text`, shards in name
    order), EOS after each document; documents past the first n_tokens are not read."""
    from mixforge.shards import parquet_file
    from mixforge.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer, storage_options=storage_options)
    pieces, have = [], 0
    for shard in storage.discover_shards(uri, storage_options):
        with parquet_file(shard.uri, storage_options) as pf:
            for batch in pf.iter_batches(batch_size=tokenizer.batch_docs, columns=["text"]):
                texts = [t for t in batch.column(0).to_pylist() if t]
                ids, offsets = tok.encode_batch(texts)
                pieces.append(np.insert(ids, offsets[1:], np.uint32(tok.eos_id)))
                have += len(pieces[-1])
                if have >= n_tokens:
                    return np.concatenate(pieces)[:n_tokens]
    if have < 2:
        raise ValueError(f"target {uri}: no text to score proxies on")
    return np.concatenate(pieces)


# ----------------------------------------------------------------------------- a proxy's sample


def _export_tokens(export: dict[str, Any], storage_options: Mapping[str, Any] | None) -> np.ndarray:
    """The export's tokens in stream order: a memmap of a local part, read otherwise."""
    parts = []
    for entry in export["files"]:
        fs, path = storage.filesystem(entry["uri"], storage_options)
        if storage.is_local(fs):
            parts.append(np.memmap(path, dtype=np.dtype(export["dtype"]), mode="r"))
        else:
            parts.append(np.frombuffer(storage.read_bytes(entry["uri"], storage_options), dtype=export["dtype"]))
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def sample_proxy(
    mixture: MixSpec, max_epochs: float, storage_options: Mapping[str, Any] | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """The proxy's training tokens (tokenizer ids) and what its sample is: the mixture version built in
    the proxy's private store (reused when a killed proxy already built it), exported as npy."""
    from mixforge.export.build import ExportConfig, run_export
    from mixforge.mixtures.build import build_mixture
    from mixforge.mixtures.versions import MixtureLayout, list_versions, read_manifest

    serial = SerialExecutor()  # the proxy is one unit of work: its sample is built where it runs
    t0 = time.perf_counter()
    if not list_versions(MixtureLayout(mixture.store, mixture.name), storage_options):
        build_mixture(mixture, serial, card_plots=False)  # plots cost a tiny proxy more than its build
    manifest = read_manifest(mixture.store, mixture.name, None, storage_options)
    groups = {g["name"]: g for p in manifest["phases"] for g in p["groups"]}
    over = {n: g["epochs"] for n, g in groups.items() if g["epochs"] > max_epochs + _EPOCH_SLACK}
    if over:
        raise RuntimeError(f"the proxy's sample repeats groups beyond {max_epochs:g} epochs: {over}")
    t1 = time.perf_counter()
    export = run_export(
        mixture.store,
        mixture.name,
        manifest["version"],
        ExportConfig(format="npy", tokenizer=mixture.tokenizer),
        serial,
        storage_options,
    )
    tokens = _export_tokens(export, storage_options)
    info = {
        "mixture": MixtureLayout(mixture.store, mixture.name).manifest(manifest["version"]),
        "export": storage.join(export["uri"], "manifest.json"),
        "tokens": int(export["tokens"]),
        "groups": {
            n: {"tokens": g["realised_tokens"], "share": g["realised_share"], "epochs": g["epochs"]}
            for n, g in groups.items()
        },
        "seconds": {"mixture": round(t1 - t0, 3), "export": round(time.perf_counter() - t1, 3)},
    }
    return tokens, info


def sample_step(job: ProxyJob, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The sample alone (the driver's vocabulary is built from the prior's): its info."""
    return sample_proxy(job.mixture, job.max_epochs, storage_options)[1]


def proxy_step(job: ProxyJob, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Sample, train and score one proxy; writes and returns its `result.json` (skipped when present)."""
    if storage.exists(job.result_uri, storage_options):
        return storage.read_json(job.result_uri, storage_options)
    started = time.perf_counter()
    storage.write_json(storage.join(job.dir, "weights.json"), job.weights, storage_options)
    tokens, sample = sample_proxy(job.mixture, job.max_epochs, storage_options)
    targets = {name: load_array(uri, storage_options) for name, uri in job.targets.items()}
    if job.vocab is not None:
        table = load_array(job.vocab, storage_options)
        tokens = apply_vocab(tokens, table)
        targets = {name: apply_vocab(t, table) for name, t in targets.items()}
    result = train_proxy(tokens, targets, job.proxy, device=job.device, threads=job.threads)
    record = {
        "id": job.id,
        "round": job.round,
        "role": job.role,
        "weights": job.weights,
        "losses": result.losses,
        "tokens": result.tokens,
        "seconds": round(time.perf_counter() - started, 3),
        "train_seconds": round(result.seconds, 3),
        "params": result.params,
        "device": result.details["device"],
        "details": result.details,
        "sample": sample,
        "finished": storage.utc_timestamp(),
    }
    if job.temperatures is not None:
        record["temperatures"] = job.temperatures
    storage.write_json(job.result_uri, record, storage_options)  # the marker, written last
    return record
