"""The export composite with real parts: mixtures built from a tiny pool, tiktoken (offline cl100k_base)
and a Hugging Face BPE trained here, the local process pool, and S3 through a moto server."""

from __future__ import annotations

import collections
import hashlib
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from mixforge import contracts, storage
from mixforge import schema as S
from mixforge.config_errors import ConfigError
from mixforge.executor import LocalPoolExecutor, SerialExecutor, StepFailed
from mixforge.export import report
from mixforge.export import shuffle as X
from mixforge.export.build import ExportConfig, check_export, export_dir, run_export
from mixforge.export.formats import get_format
from mixforge.mixtures import build as B
from mixforge.mixtures.spec import TokenizerSpec
from mixforge.mixtures.takedown import derive_manifest
from mixforge.mixtures.versions import read_manifest
from mixforge.shards import read_parquet
from mixforge.tokenizer import load_tokenizer
from tests.mixforge.mixtures.test_mixtures import make_spec, write_pool

NAME = "test-mix"
PHASES = [
    {"name": "main", "budget_tokens": 12_000},
    {"name": "anneal", "budget_tokens": 16_000, "weights": {"books": 1}},
]
DOMAIN_PREFIX = {"template": "{domain}\n\n", "phases": ["main"]}


def build(root: str, opts: dict | None = None, fs=None) -> str:
    """A two-phase mixture (books repeated in anneal), several data files a phase; its store."""
    pool = write_pool(root, shards=3, per_shard=150, fs=fs)
    store = storage.join(root, "store")
    extra = {"storage": {"options": opts}} if opts else {}
    spec = make_spec(
        pool, store, budget_tokens=None, phases=PHASES, output={"shard_tokens": 5_000, "row_group_rows": 50}, **extra
    )
    B.build_mixture(spec)
    return store


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return build(str(tmp_path_factory.mktemp("export")))


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory) -> str:
    """A byte-level BPE of 400 tokens trained on the pool's prose (uint16 token files)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from tests.mixforge.mixtures.test_mixtures import pool_rows

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>", "<s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator([r["text"] for r in pool_rows(300)], trainer)
    path = str(tmp_path_factory.mktemp("tokenizer") / "tokenizer.json")
    tok.save(path)
    return path


def part_hashes(manifest: dict) -> list[tuple[str, ...]]:
    """Every part's file hashes and its lineage sidecar's hash, in manifest order."""
    return [(*(f["sha256"] for f in e["files"]), e["lineage_sha256"]) for e in manifest["files"]]


def check_round_trip(manifest: dict, storage_options: dict | None = None) -> dict[str, collections.Counter]:
    """Decode every document of the export through its sidecar spans and compare with the version:
    the multiset of (id, text) per phase is the version's rows', the text tokens are the counts the
    mixture made, each document ends with EOS, the prefix is present exactly where configured, and the
    parts are a partition of the keys, sorted within each. Returns the exported (id, text) per phase."""
    t = manifest["tokenizer"]
    tok = load_tokenizer(
        TokenizerSpec(kind=t["kind"], name=t["name"]),
        eos_token=manifest["config"]["eos_token"],
        bos_token=manifest["config"]["bos_token"],
        storage_options=storage_options,
    )
    mixture = read_manifest(
        manifest["uri"].split("/mixtures/")[0], manifest["mixture"], manifest["version"], storage_options
    )
    fmt = get_format(manifest["export_format"])
    metadata = manifest["config"]["metadata"]
    exported: dict[str, collections.Counter] = {}
    for phase in manifest["phases"]:
        rows = collections.Counter()
        tokens_by_id = {}
        for f in mixture["files"]:
            if f["phase"] == phase["name"]:
                for r in read_parquet(f["uri"], storage_options, columns=[S.ID, S.TEXT, S.N_TOKENS]).to_pylist():
                    rows[(r[S.ID], r[S.TEXT])] += 1
                    tokens_by_id[r[S.ID]] = r[S.N_TOKENS]
        got = collections.Counter()
        partitions = manifest["partitions"][phase["name"]]
        assert len(phase["files"]) == partitions
        for index in phase["files"]:
            entry = manifest["files"][index]
            tokens, lengths = fmt.read(entry["lineage"][: -len(".lineage.parquet")], storage_options)
            assert tokens.dtype == np.dtype(manifest["dtype"])
            side = read_parquet(entry["lineage"], storage_options)
            assert side.schema.equals(X.SIDECAR_SCHEMA)
            assert lengths.tolist() == side.column("n_tokens").to_pylist()
            keys = side.column("shuffle_key").to_numpy()
            assert (np.diff(keys.astype(np.float64)) >= 0).all()  # ordered by key
            assert (X.partition_of(keys, partitions) == entry["part"]).all()
            for r in side.to_pylist():
                start, n, head = r["token_start"], r["n_tokens"], r["prefix_tokens"]
                doc = tokens[start : start + n]
                assert int(doc[-1]) == tok.eos_id
                if manifest["config"]["bos"]:
                    assert int(doc[0]) == tok.bos_id
                text = tok.decode(doc[head:-1])
                if t["key"] == mixture["tokenizer"]["cache_key"]:  # the text tokens the mixture counted
                    assert n - head - 1 == tokens_by_id[r["id"]]
                prefix = tok.decode(doc[int(manifest["config"]["bos"]) : head])
                if metadata and phase["name"] in (metadata["phases"] or [phase["name"]]):
                    assert prefix == f"{r['source']}.example.org\n\n"  # pool URLs are https://<source>.example.org/...
                else:
                    assert prefix == ""
                got[(r["id"], text)] += 1
        assert got == rows, f"phase {phase['name']}: the export's documents differ from the version's"
        assert (
            sum(got.values())
            == phase["docs"]
            == sum(f["rows"] for f in mixture["files"] if f["phase"] == phase["name"])
        )
        exported[phase["name"]] = got
    return exported


# ----------------------------------------------------------------------------- round trip, determinism


def test_round_trip_gives_back_every_document_as_often_as_the_version(store):
    config = ExportConfig(file_tokens=3_000, metadata=DOMAIN_PREFIX)
    reported = []
    manifest = run_export(store, NAME, None, config, progress=lambda *a: reported.append(a))
    contracts.validate(manifest, contracts.ExportManifest)
    contracts.validate(report.export_summary(manifest, store, 1.5), contracts.ExportSummary)  # the --json
    assert manifest["uri"] == export_dir(store, NAME, "v0001", "megatron", "tiktoken-cl100k_base")
    assert storage.exists(storage.join(manifest["uri"], "manifest.json"))
    assert not storage.exists(storage.join(manifest["uri"], "_work"))  # scratch removed
    mixture = read_manifest(store, NAME)
    for phase in ("main", "anneal"):  # ceil(the version's tokens / file_tokens) parts a phase
        tokens = sum(f["tokens"] for f in mixture["files"] if f["phase"] == phase)
        assert manifest["partitions"][phase] == -(-tokens // 3_000) > 1
    assert manifest["dtype"] == "int32"  # cl100k's 100k vocabulary: megatron-core's optimal dtype
    exported = check_round_trip(manifest)
    # books are repeated in anneal: a document comes back as often as the version repeats it
    assert max(exported["anneal"].values()) > 1
    # the lineage columns resolve to the pool rows, run ids included
    side = pq.read_table(manifest["files"][0]["lineage"]).to_pylist()[:5]
    for r in side:
        shard = mixture["pool"]["shards"][r[S.POOL_SHARD]]
        pool_row = pq.read_table(shard["uri"]).slice(r[S.POOL_ROW], 1).to_pylist()[0]
        assert (pool_row[S.ID], r["run_id"]) == (r[S.ID], shard["run_id"])
        assert r["shuffle_key"] == int(
            X.shuffle_keys(0, "main", [np.array([r[c]]) for c in X.LINEAGE], lineage=True)[0]
        )
    # per group and phase figures add up
    for phase in manifest["phases"]:
        assert sum(g["tokens"] for g in phase["groups"]) == phase["tokens"]
        assert phase["metadata_prefix"] == (phase["name"] == "main")
    assert manifest["tokens"] == sum(f["tokens"] for f in manifest["files"])
    # progress: every unit of every step, as it finishes
    last = {step: (done, total) for step, done, total in reported}
    mixture_files = {p["name"]: len(p["files"]) for p in mixture["phases"]}
    assert last == {
        **{f"export-scatter ({p})": (n, n) for p, n in mixture_files.items()},
        **{f"export-gather ({p})": (n, n) for p, n in manifest["partitions"].items()},
    }

    # a rerun with the same settings is a no-op returning the same manifest, touching nothing
    before = os.stat(storage.join(manifest["uri"], "manifest.json")).st_mtime_ns
    assert run_export(store, NAME, "v0001", config) == manifest
    assert os.stat(storage.join(manifest["uri"], "manifest.json")).st_mtime_ns == before


def test_shuffle_is_byte_identical_across_reruns_and_worker_counts(store, hf_tokenizer):
    config = ExportConfig(
        format="npy",
        tokenizer=TokenizerSpec(kind="huggingface", name=hf_tokenizer),
        bos_token="<s>",
        bos=True,
        seed=3,
        file_tokens=4_000,
        tag="serial",
    )
    serial = run_export(store, NAME, None, config, SerialExecutor())
    pooled = run_export(store, NAME, None, config.model_copy(update={"tag": "pooled"}), LocalPoolExecutor(2))
    assert serial["dtype"] == "uint16" and serial["tokenizer"]["key"].startswith("hf-")
    assert part_hashes(serial) == part_hashes(pooled)
    check_round_trip(serial)
    # removed and made again: the same bytes
    fs, path = storage.filesystem(serial["uri"])
    fs.rm(path, recursive=True)
    again = run_export(store, NAME, None, config)
    assert part_hashes(again) == part_hashes(serial)
    # another seed shuffles differently, over the same documents
    other = run_export(store, NAME, None, config.model_copy(update={"seed": 4, "tag": "seed4"}))
    assert part_hashes(other) != part_hashes(serial)
    ids = lambda m: sorted(i for f in m["files"] for i in pq.read_table(f["lineage"]).column("id").to_pylist())  # noqa: E731
    assert ids(other) == ids(serial)


def test_versions_without_lineage_columns_export_too(store, tmp_path):
    """A version written before mixforge.mixture/3: no pool_* columns; keys from (file part, row)."""
    import shutil

    old = str(tmp_path / "old")
    shutil.copytree(store, old)
    manifest = read_manifest(old, NAME)
    for f in manifest["files"]:
        f["uri"] = f["uri"].replace(store, old)
        table = pq.read_table(f["uri"])
        pq.write_table(table.drop_columns(list(X.LINEAGE)), f["uri"], row_group_size=50)
    storage.write_json(storage.join(old, "mixtures", NAME, "v0001", "manifest.json"), manifest)
    export = run_export(old, NAME, None, ExportConfig(file_tokens=3_000, phases=["anneal"], tag="old"))
    assert [p["name"] for p in export["phases"]] == ["anneal"]
    check_round_trip(export)
    side = pq.read_table(export["files"][0]["lineage"])
    assert side.column(S.POOL_SHARD).null_count == side.num_rows
    assert side.column("run_id").null_count == side.num_rows


# ----------------------------------------------------------------------------- resume, takedown


class KilledAfter(SerialExecutor):
    """Stops the export after `gathers` gather steps (as a kill would)."""

    def __init__(self, gathers: int) -> None:
        super().__init__()
        self.left = gathers

    def run(self, fn, calls, **kwargs):
        def guarded(i, step, job, opts):
            if step is X.gather:
                if self.left == 0:
                    raise RuntimeError("killed")
                self.left -= 1
            return fn(i, step, job, opts)

        return super().run(guarded, calls, **kwargs)


def test_a_killed_export_resumes_keeping_its_finished_parts(store):
    config = ExportConfig(file_tokens=2_500, tag="resume")
    with pytest.raises(StepFailed, match="killed"):
        run_export(store, NAME, None, config, KilledAfter(2))
    out = export_dir(store, NAME, "v0001", "megatron", "tiktoken-cl100k_base", "resume")
    assert not storage.exists(storage.join(out, "manifest.json"))
    finished = sorted(p for p in os.listdir(storage.join(out, "main")) if p.endswith((".bin", ".idx", ".parquet")))
    assert len(finished) == 6  # two parts: .bin, .idx and the sidecar each
    stamps = {p: os.stat(storage.join(out, "main", p)).st_mtime_ns for p in finished}
    digests = {p: hashlib.sha256(open(storage.join(out, "main", p), "rb").read()).hexdigest() for p in finished}

    manifest = run_export(store, NAME, None, config)
    for p in finished:  # kept as they were: not written again
        assert os.stat(storage.join(out, "main", p)).st_mtime_ns == stamps[p]
        assert hashlib.sha256(open(storage.join(out, "main", p), "rb").read()).hexdigest() == digests[p]
    clean = run_export(store, NAME, None, config.model_copy(update={"tag": "clean"}))
    assert part_hashes(manifest) == part_hashes(clean)
    assert not storage.exists(storage.join(out, "_work"))


def test_takedown_reexport_copies_untouched_parts_and_equals_a_fresh_export(tmp_path):
    store = build(str(tmp_path))
    main_tokens = sum(f["tokens"] for f in read_manifest(store, NAME)["files"] if f["phase"] == "main")
    config = ExportConfig(file_tokens=-(-main_tokens * 2 // 7))  # 3.5 files' worth: removing a little keeps 4
    parent = run_export(store, NAME, None, config)
    # two documents of the first part of main go
    removed = pq.read_table(parent["files"][0]["lineage"]).column("id").to_pylist()[:2]
    derived = derive_manifest(store, NAME, None, ids=removed, reason="test takedown")
    assert derived["version"] == "v0002"

    reexport = run_export(store, NAME, "v0002", config)
    contracts.validate(reexport, contracts.ExportManifest)
    assert reexport["derived_from"] == storage.join(parent["uri"], "manifest.json")
    assert reexport["partitions"] == parent["partitions"]
    touched = {
        (f["phase"], f["part"])
        for f in parent["files"]
        if set(pq.read_table(f["lineage"]).column("id").to_pylist()) & set(removed)
    }
    assert ("main", 0) in touched and len(touched) < len(parent["files"])
    assert reexport["reused_files"] == len(parent["files"]) - len(touched)
    for old, new in zip(parent["files"], reexport["files"]):
        if (old["phase"], old["part"]) in touched:
            assert new["rewritten_from"] == old["uri"] and new["docs"] < old["docs"]
        else:  # copied: the same bytes under the derived version
            assert new["copied_from"] == old["uri"] and "v0002" in new["uri"]
            assert [f["sha256"] for f in new["files"]] == [f["sha256"] for f in old["files"]]
            assert storage.read_bytes(new["uri"]) == storage.read_bytes(old["uri"])
    exported = check_round_trip(reexport)
    assert not {i for (i, _) in exported["main"]} & set(removed)

    fresh = run_export(store, NAME, "v0002", config.model_copy(update={"tag": "fresh"}))
    assert fresh["reused_files"] == 0 and fresh["derived_from"] is None
    assert fresh["partitions"] == reexport["partitions"]
    assert [(f["phase"], f["part"], f["docs"], f["tokens"]) for f in fresh["files"]] == [
        (f["phase"], f["part"], f["docs"], f["tokens"]) for f in reexport["files"]
    ]
    assert part_hashes(fresh) == part_hashes(reexport)


# ----------------------------------------------------------------------------- S3


def test_export_on_s3(s3_bucket):
    import s3fs

    root, opts = s3_bucket
    fs = s3fs.S3FileSystem(**opts)
    store = build(root, opts, fs)
    manifest = run_export(
        store, NAME, None, ExportConfig(file_tokens=4_000, metadata=DOMAIN_PREFIX), storage_options=opts
    )
    assert manifest["uri"].startswith("s3://")
    check_round_trip(manifest, opts)
    assert not fs.exists(storage.join(manifest["uri"], "_work").removeprefix("s3://"))
    for f in manifest["files"]:
        for file in f["files"]:
            assert fs.info(file["uri"])["size"] == file["bytes"]


# ----------------------------------------------------------------------------- checks before any work


def test_settings_are_checked_before_any_work(store, tmp_path):
    with pytest.raises(ConfigError, match=r"no phase 'cooldown' \(phases: main, anneal\)"):
        check_export(store, NAME, None, ExportConfig(phases=["cooldown"]))
    with pytest.raises(ConfigError, match=r"metadata.phases: .*no phase 'cooldown'"):
        check_export(store, NAME, None, ExportConfig(metadata={"template": "{domain}", "phases": ["cooldown"]}))
    with pytest.raises(ConfigError, match=r"unknown export format 'arrow' \(formats: megatron, npy\)"):
        check_export(store, NAME, None, ExportConfig(format="arrow"))
    missing = str(tmp_path / "nope" / "tokenizer.json")
    with pytest.raises(ConfigError, match="cannot be loaded"):
        check_export(store, NAME, None, ExportConfig(tokenizer={"kind": "huggingface", "name": missing}))
    with pytest.raises(ConfigError, match="bos_token"):
        check_export(store, NAME, None, ExportConfig(bos=True))
    with pytest.raises(ConfigError, match="names title, which mixture test-mix v0001 rows lack"):
        check_export(store, NAME, None, ExportConfig(metadata={"template": "{title}: {domain}\n"}))
    with pytest.raises(ConfigError, match="fields must be named"):
        check_export(store, NAME, None, ExportConfig(metadata={"template": "{}\n"}))
    with pytest.raises(FileNotFoundError, match="no version v0009"):
        check_export(store, NAME, "v0009", ExportConfig())
    # a row field other than domain is fine
    assert check_export(store, NAME, None, ExportConfig(metadata={"template": "{source} {lang}\n"}, tag="t")).phases


def test_an_export_with_other_settings_is_refused_naming_them(store):
    config = ExportConfig(file_tokens=6_000, phases=["anneal"], tag="conflict")
    run_export(store, NAME, None, config)
    with pytest.raises(ConfigError, match=r"file_tokens \(6000 there, 7000 now\), seed \(0 there, 5 now\).*--tag"):
        run_export(store, NAME, None, config.model_copy(update={"seed": 5, "file_tokens": 7_000}))
