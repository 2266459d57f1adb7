"""Library core of deduplication: stable hashing, MinHash, LSH edges, components, keepers."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from mixforge.dedup import clusters as C
from mixforge.dedup import hashing as H
from mixforge.dedup import minhash as M
from mixforge.dedup.config import DedupConfig, ExactConfig, KeepConfig, MinHashConfig

MASK = (1 << 64) - 1
WORDS = (
    "time year people way day man thing woman life child world school state family student group country "
    "problem hand part place case week company system program question work government number night point "
    "home water room mother area money story fact month lot right study book eye job word business issue "
    "side kind head house service friend father power hour game line end member law car city community "
    "name president team minute idea kid body information back parent face others level office door "
    "health person art war history party result change morning reason research girl guy moment air "
    "teacher force education foot boy age policy music market sense nation plan college interest death "
    "experience effect use class"
).split()


def words(rng: random.Random, n: int) -> list[str]:
    return [rng.choice(WORDS) + str(rng.randrange(50)) for _ in range(n)]


def replace_words(ws: list[str], rng: random.Random, k: int, positions: list[int] | None = None) -> list[str]:
    out = list(ws)
    for i in positions if positions is not None else rng.sample(range(len(ws)), k):
        out[i] = "zz" + rng.choice(WORDS) + "qq"
    return out


def pipeline(texts: list[str], cfg: MinHashConfig = MinHashConfig(), verify: bool = True):
    """The whole single-process dedup path over `texts` (doc key = row index)."""
    mh = M.MinHasher(cfg)
    sig = mh.signatures(pa.array(texts))
    keys = np.arange(len(texts), dtype=np.uint64)
    band, bh, doc = mh.bucket_entries(sig, keys)
    src, dst = C.candidate_edges(band, bh, doc)
    if verify and len(src):
        ok = M.estimated_jaccard(sig[src.astype(np.int64)], sig[dst.astype(np.int64)]) >= cfg.threshold  # key = row
        src, dst = src[ok], dst[ok]
    nodes, roots = C.connected_components(src, dst)
    return sig, (src, dst), dict(zip(nodes.tolist(), roots.tolist()))


# ---------------------------------------------------------------------------------- config


def test_config_models():
    cfg = DedupConfig()
    assert cfg.minhash.num_perm == 112 and cfg.minhash.bands == 14 and cfg.minhash.rows == 8
    assert cfg.partitions is None and cfg.exact.lowercase and not cfg.exact.strip_punctuation
    with pytest.raises(ValidationError):
        MinHashConfig(bogus=1)
    with pytest.raises(ValidationError):
        KeepConfig(rule="highest")  # needs a column
    with pytest.raises(ValidationError):
        cfg.partitions = 3  # frozen
    assert DedupConfig.model_validate(cfg.model_dump()) == cfg
    for model in (ExactConfig, MinHashConfig, KeepConfig, DedupConfig):
        assert all(f.description for f in model.model_fields.values()), model


# --------------------------------------------------------------------------------- hashing


def _random_strings(rng: random.Random, n: int) -> list[str | None]:
    alphabet = "abcxyz \t\n.,!é漢字🙂\x00"
    out: list[str | None] = []
    for _ in range(n):
        r = rng.random()
        word = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 40)))
        out.append(None if r < 0.05 else "" if r < 0.1 else word)
    return out


def test_hash_strings_matches_reference():
    strings = _random_strings(random.Random(0), 500)
    got = H.hash_strings(pa.array(strings))
    assert got.dtype == np.uint64
    assert [int(x) for x in got] == [H.hash_string_reference(s) for s in strings]
    # other seeds are other functions
    seeded = [H.hash_string_reference(s, seed=3) for s in strings]
    assert [int(x) for x in H.hash_strings(pa.array(strings), seed=3)] == seeded
    valid = pa.array(strings).is_valid().to_numpy(zero_copy_only=False)
    assert not np.array_equal(H.hash_strings(pa.array(strings), seed=3)[valid], got[valid])


def test_hash_strings_layouts_agree():
    strings = _random_strings(random.Random(1), 200)
    ref = H.hash_strings(pa.array(strings))
    assert np.array_equal(H.hash_strings(pa.array(strings, pa.large_string())), ref)
    assert np.array_equal(H.hash_strings(pa.array(strings, pa.string_view())), ref)
    binary = pa.array([s.encode() if s is not None else None for s in strings], pa.binary())
    assert np.array_equal(H.hash_strings(binary), ref)
    assert np.array_equal(H.hash_strings(pa.chunked_array([strings[:70], strings[70:]], pa.string())), ref)
    assert np.array_equal(H.hash_strings(pa.array(strings).slice(33, 100)), ref[33:133])
    assert len(H.hash_strings(pa.array([], pa.string()))) == 0


def test_hash_strings_across_pass_boundaries(monkeypatch):
    strings = _random_strings(random.Random(2), 300) + ["long " * 50]
    ref = [H.hash_string_reference(s) for s in strings]
    monkeypatch.setattr(H, "_CHUNK_BYTES", 64)  # many passes, one string longer than a pass
    monkeypatch.setattr(H, "_pow_cache", {})
    assert [int(x) for x in H.hash_strings(pa.array(strings))] == ref


def test_hash_values_are_pinned():
    # persisted in the incremental index: these must never change
    got = H.hash_strings(pa.array(["", "a", "hello world", "héllo", None]))
    assert got.tolist() == [
        3620312495012918151,
        16027272667965215795,
        10854273631659478661,
        3178787145508841506,
        H.NULL_HASH,
    ]
    assert H.hash_strings(pa.array(["a"]), seed=7).tolist() == [3587486382482452220]


def test_exact_hashes_normalisation_options():
    texts = pa.array(
        [
            "Hello,  World 42",
            "hello, world 42",
            " hello,\u00a0world\n42 ",
            "Hello World 42",
            "Hello, World 17",
            None,
            "",
        ]
    )

    def groups(cfg):
        h = H.exact_hashes(texts, cfg)
        return [[j for j in range(len(h)) if h[j] == h[i]] for i in range(len(h))]

    d = groups(ExactConfig())  # lowercase + collapse whitespace
    assert d[0] == [0, 1, 2] and d[3] == [3] and d[4] == [4]
    assert groups(ExactConfig(lowercase=False))[0] == [0]
    assert groups(ExactConfig(collapse_whitespace=False))[0] == [0]
    assert groups(ExactConfig(strip_punctuation=True))[0] == [0, 1, 2, 3]
    assert groups(ExactConfig(strip_punctuation=True, normalize_digits=True))[0] == [0, 1, 2, 3, 4]
    h = H.exact_hashes(texts)
    assert h[5] == H.NULL_HASH and h[6] != h[5]
    assert np.array_equal(H.exact_hashes(texts.cast(pa.large_string())), h)
    assert np.array_equal(H.exact_hashes(pa.chunked_array([texts[:3], texts[3:]])), h)
    assert len(H.exact_hashes(pa.array([], pa.string()))) == 0
    norm = H.normalize_text(texts, lowercase=True, strip_punctuation=True, normalize_digits=True)
    assert norm.to_pylist()[:3] == ["hello world 00"] * 3
    assert norm.to_pylist()[5:] == [None, ""]


# --------------------------------------------------------------------------------- minhash


def test_ngram_hashes_match_reference():
    rng = np.random.default_rng(0)
    toks = rng.integers(0, 2**63, 40, dtype=np.uint64)
    offsets = np.array([0, 0, 2, 10, 40], dtype=np.int64)  # empty doc, doc shorter than n, two long
    sh, so = M.ngram_hashes(toks, offsets, 3, salt=M._WORD_SALT)
    assert so.tolist() == [0, 0, 1, 7, 35]

    def ref(tt):
        acc = sum(int(t) * (M._NGRAM_K[k] | 1) for k, t in enumerate(tt)) & MASK
        return H.mix64_int((acc ^ M._WORD_SALT) + len(tt))

    expect = (
        [ref(toks[0:2])] + [ref(toks[i : i + 3]) for i in range(2, 8)] + [ref(toks[i : i + 3]) for i in range(10, 38)]
    )
    assert sh.tolist() == expect
    # per-document n
    sh2, so2 = M.ngram_hashes(toks, offsets, np.array([3, 3, 2, 3]), salt=M._WORD_SALT)
    assert so2.tolist() == [0, 0, 1, 8, 36]
    assert sh2[1:8].tolist() == [ref(toks[i : i + 2]) for i in range(2, 9)]
    assert sh2[8:].tolist() == sh[7:].tolist()


def test_signatures_match_reference_minhash(monkeypatch):
    cfg = MinHashConfig(short_doc_strategy="none")
    mh = M.MinHasher(cfg)
    rng = random.Random(3)
    texts = [" ".join(words(rng, rng.randrange(1, 60))) for _ in range(30)]
    monkeypatch.setattr(M, "_ROWS_PER_PASS", 7)  # documents straddle blocks
    sig = mh.signatures(pa.array(texts))
    a = [int(x) for x in mh._a]
    b = [int(x) for x in mh._b]
    for d, t in enumerate(texts):
        wh = [H.hash_string_reference(w) for w in t.lower().split()]
        n = min(5, len(wh))
        shingles = []
        for i in range(len(wh) - n + 1):
            acc = sum(w * (M._NGRAM_K[k] | 1) for k, w in enumerate(wh[i : i + n])) & MASK
            shingles.append(H.mix64_int((acc ^ M._WORD_SALT) + n))
        assert sig[d].tolist() == [min((ap * s + bp) & MASK for s in shingles) for ap, bp in zip(a, b)]


def test_signature_values_are_pinned():
    t = pa.array(["The quick brown fox jumps over the lazy dog. " * 30, "Short text, five words here."])
    s = M.MinHasher().signatures(t)
    assert s.shape == (2, 112) and s.dtype == np.uint64
    assert s[0, :3].tolist() == [2621024360111904163, 1496978387866095603, 4411092471998211167]
    assert s[1, :3].tolist() == [1577254960223399544, 766549077483127045, 1974108790391084882]
    s = M.MinHasher(MinHashConfig(short_doc_strategy="none")).signatures(t)
    assert s[1, :3].tolist() == [10773656981529442049, 11731850066375240567, 994775456498453972]


@pytest.mark.parametrize(
    "cfg",
    [
        MinHashConfig(),
        MinHashConfig(short_doc_strategy="none"),
        MinHashConfig(short_doc_strategy="smaller_n"),
        MinHashConfig(shingle="char"),
    ],
)
def test_signatures_independent_of_batching_and_order(cfg, monkeypatch):
    rng = random.Random(4)
    texts = [" ".join(words(rng, rng.randrange(0, 300))) for _ in range(60)] + [None, "", "  ", "...", "x"]
    rng.shuffle(texts)
    mh = M.MinHasher(cfg)
    full = mh.signatures(pa.array(texts))
    assert np.array_equal(full, M.MinHasher(cfg).signatures(pa.array(texts)))
    parts = np.concatenate([mh.signatures(pa.array(texts[i : i + 7])) for i in range(0, len(texts), 7)])
    assert np.array_equal(full, parts)
    perm = list(range(len(texts)))
    rng.shuffle(perm)
    assert np.array_equal(full[perm], mh.signatures(pa.array([texts[i] for i in perm])))
    assert np.array_equal(full, mh.signatures(pa.chunked_array([texts[:20], texts[20:]], pa.string())))
    assert np.array_equal(full, mh.signatures(pa.array(texts, pa.large_string())))
    monkeypatch.setattr(M, "_ROWS_PER_PASS", 13)
    assert np.array_equal(full, mh.signatures(pa.array(texts)))


def test_empty_and_tiny_documents():
    mh = M.MinHasher()
    assert mh.signatures(pa.array([], pa.string())).shape == (0, 112)
    assert M.is_empty(mh.signatures(pa.nulls(3, pa.string()))).all()
    assert len(mh.bucket_entries(np.zeros((0, 112), np.uint64), np.zeros(0, np.uint64))[2]) == 0
    texts = [None, "", "   \n\t", "!!! ... ,,,", "word", "Word!", "two words", "two  words.", "other words"]
    sig = mh.signatures(pa.array(texts))
    empty = M.is_empty(sig)
    assert empty.tolist() == [True] * 4 + [False] * 5
    # the sentinel never matches, not even another empty document
    assert M.estimated_jaccard(sig[0], sig[1]).tolist() == [0.0]
    assert M.estimated_jaccard(sig[1], sig[1]).tolist() == [0.0]
    # documents shorter than one shingle are one shingle of all of them
    assert M.estimated_jaccard(sig[4], sig[5]).tolist() == [1.0]
    assert M.estimated_jaccard(sig[6], sig[7]).tolist() == [1.0]
    assert M.estimated_jaccard(sig[6], sig[8])[0] < 0.8
    band, bh, doc = mh.bucket_entries(sig, np.arange(len(texts), dtype=np.uint64) + np.uint64(100))
    assert sorted(set(doc.tolist())) == list(range(104, 109)) and len(doc) == 5 * 14
    assert band.dtype == np.uint8 and bh.dtype == np.uint64
    # none of this breaks under the other strategies
    for cfg in (
        MinHashConfig(short_doc_strategy="none"),
        MinHashConfig(short_doc_strategy="smaller_n"),
        MinHashConfig(shingle="char"),
    ):
        s = M.MinHasher(cfg).signatures(pa.array(texts))
        assert M.is_empty(s).tolist() == empty.tolist()
        assert M.estimated_jaccard(s[6], s[7]).tolist() == [1.0]


def test_identical_near_and_distinct_documents():
    rng = random.Random(5)
    base = words(rng, 400)
    texts = [
        " ".join(base),
        " ".join(base).upper().replace(" ", "  \n"),  # identical after normalisation
        " ".join(replace_words(base, rng, 3)),  # near: 3 of 400 words replaced
        " ".join(words(rng, 400)),  # distinct
    ]
    sig, (src, dst), comp = pipeline(texts)
    j = M.estimated_jaccard(sig[[0, 0, 0]], sig[[1, 2, 3]])
    assert j[0] == 1.0 and j[1] > 0.85 and j[2] < 0.1
    assert comp == {0: 0, 1: 0, 2: 0}  # document 3 is in no edge: a singleton


def test_short_document_near_duplicates_recall():
    """Planted near-copies of 20-80 word documents with 1-2 replaced words: word 5-grams lose
    most of them (datatrove's failure mode); the default char-shingle strategy finds them."""
    rng = random.Random(6)
    texts, pairs = [], []
    for _ in range(150):
        ws = words(rng, rng.randrange(20, 80))
        k = rng.randrange(1, 3)
        pairs.append((len(texts), len(texts) + 1))
        texts += [" ".join(ws), " ".join(replace_words(ws, rng, k))]

    def recall(cfg):
        _, _, comp = pipeline(texts, cfg)
        return np.mean([a in comp and comp.get(a) == comp.get(b) for a, b in pairs])

    def false_links(cfg):
        _, _, comp = pipeline(texts, cfg)
        return sum(
            comp.get(a) != comp.get(b) and comp.get(a) is not None and comp.get(a) == comp.get(c)
            for (a, b) in pairs
            for (c, _) in pairs[:5]
            if c != a
        )

    r_char = recall(MinHashConfig())
    r_none = recall(MinHashConfig(short_doc_strategy="none"))
    r_small = recall(MinHashConfig(short_doc_strategy="smaller_n"))
    assert r_char >= 0.9, r_char
    assert r_none < 0.5, r_none
    assert r_small > r_none
    assert false_links(MinHashConfig()) == 0


def test_estimated_jaccard_and_lsh_probability_on_constructed_sets():
    """Sets with exact Jaccard J: the estimate is unbiased with binomial spread, and the LSH
    candidate rate follows 1 - (1 - J^rows)^bands."""
    cfg = MinHashConfig()
    mh = M.MinHasher(cfg)
    rng = np.random.default_rng(7)
    n_pairs, size = 300, 200
    for J, lo, hi in [(0.9, 0.99, 1.0), (0.8, 0.85, 0.99), (0.5, 0.0, 0.08), (0.3, 0.0, 0.01)]:
        shared = int(round(2 * size * J / (1 + J)))  # |A∩B| for |A| = |B| = size
        sh_list, offs = [], [0]
        for _ in range(n_pairs):
            ids = rng.choice(2**40, 2 * size - shared, replace=False).astype(np.uint64)
            a, b = ids[:size], np.concatenate([ids[:shared], ids[size:]])
            for s in (a, b):
                sh_list.append(H.mix64(s.copy()))
                offs.append(offs[-1] + len(s))
        true_j = shared / (2 * size - shared)
        sig = mh.signatures_from_shingles(np.concatenate(sh_list), np.array(offs, dtype=np.int64))
        est = M.estimated_jaccard(sig[0::2], sig[1::2])
        sd = np.sqrt(true_j * (1 - true_j) / cfg.num_perm)
        assert abs(est.mean() - true_j) < 4 * sd / np.sqrt(n_pairs), (J, est.mean())
        assert abs(est.std() - sd) < 0.25 * sd, (J, est.std(), sd)
        bh = mh.band_hashes(sig)
        cand = (bh[0::2] == bh[1::2]).any(axis=1).mean()
        expected = 1 - (1 - true_j**cfg.rows) ** cfg.bands
        assert lo <= cand <= hi, (J, cand, expected)


def test_band_hashes_shape_and_sentinel():
    mh = M.MinHasher(MinHashConfig(bands=4, rows=3))
    sig = mh.signatures(pa.array(["a b c d e f g", "", "a b c d e f g"]))
    bh = mh.band_hashes(sig)
    assert bh.shape == (3, 4) and bh.dtype == np.uint64
    assert np.array_equal(bh[0], bh[2]) and len(set(bh[0].tolist())) == 4


# -------------------------------------------------------------------------------- clusters


def test_candidate_edges():
    band = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 3], dtype=np.uint8)
    bh = np.array([7, 7, 7, 9, 7, 7, 7, 5, 5, 7], dtype=np.uint64)
    doc = np.array([30, 10, 20, 40, 30, 20, 30, 50, 50, 60], dtype=np.uint64)
    src, dst = C.candidate_edges(band, bh, doc)
    # band 0 bucket 7: {10,20,30} -> 20->10, 30->10; band 1: {20,30,30} -> 30->20; band 2: only doc 50
    assert list(zip(src.tolist(), dst.tolist())) == [(20, 10), (30, 10), (30, 20)]
    assert src.dtype == dst.dtype == np.uint64
    # order of the bucket rows does not matter
    p = np.random.default_rng(0).permutation(len(doc))
    s2, d2 = C.candidate_edges(band[p], bh[p], doc[p])
    assert np.array_equal(src, s2) and np.array_equal(dst, d2)
    # same band hash in different bands links nothing
    s3, _ = C.candidate_edges(np.array([0, 1]), np.array([1, 1], np.uint64), np.array([1, 2], np.uint64))
    assert len(s3) == 0
    e = C.candidate_edges(np.zeros(0, np.uint8), np.zeros(0, np.uint64), np.zeros(0, np.uint64))
    assert len(e[0]) == len(e[1]) == 0
    big = np.uint64((7 << 32) | 5)
    s4, d4 = C.candidate_edges(np.array([0, 0]), np.array([1, 1], np.uint64), np.array([big, 3], np.uint64))
    assert s4.tolist() == [int(big)] and d4.tolist() == [3]


def _reference_components(src, dst):
    parent: dict[int, int] = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(src.tolist(), dst.tolist()):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for x in list(parent):
        groups.setdefault(find(x), []).append(x)
    return {x: min(g) for g in groups.values() for x in g}


@pytest.mark.parametrize("shape", ["chain", "reverse_chain", "star", "random", "two_stars_joined"])
def test_connected_components(shape):
    rng = np.random.default_rng(1)
    if shape == "chain":
        p = rng.permutation(5000).astype(np.uint64) * np.uint64(3) + np.uint64(1 << 40)
        src, dst = p[:-1], p[1:]
    elif shape == "reverse_chain":
        src, dst = np.arange(3000, 0, -1, dtype=np.uint64), np.arange(2999, -1, -1, dtype=np.uint64)
    elif shape == "star":
        src = rng.choice(10**9, 2000, replace=False).astype(np.uint64)
        dst = np.full(2000, 5 * 10**8, dtype=np.uint64)
    elif shape == "two_stars_joined":
        src = np.concatenate([np.arange(10, 20), np.arange(30, 40), [19]]).astype(np.uint64)
        dst = np.concatenate([np.full(10, 100), np.full(10, 5), [39]]).astype(np.uint64)
    else:
        src = rng.integers(0, 3000, 2000).astype(np.uint64)
        dst = rng.integers(0, 3000, 2000).astype(np.uint64)
    nodes, roots = C.connected_components(src, dst)
    ref = _reference_components(src, dst)
    assert nodes.tolist() == sorted(ref)
    assert roots.tolist() == [ref[x] for x in nodes.tolist()]
    if shape in ("chain", "reverse_chain", "star", "two_stars_joined"):
        assert len(set(roots.tolist())) == 1
    # edge order and direction do not matter
    p = rng.permutation(len(src))
    n2, r2 = C.connected_components(dst[p], src[p])
    assert np.array_equal(nodes, n2) and np.array_equal(roots, r2)


def test_connected_components_empty_and_self_loops():
    n, r = C.connected_components(np.zeros(0, np.uint64), np.zeros(0, np.uint64))
    assert len(n) == len(r) == 0
    n, r = C.connected_components(np.array([4, 2], np.uint64), np.array([4, 9], np.uint64))
    assert n.tolist() == [2, 4, 9] and r.tolist() == [2, 4, 2]


def test_transitive_cluster_through_minhash():
    """A~B and B~C but A not~C (verified away): still one cluster of three."""
    rng = random.Random(8)
    a = words(rng, 1000)
    b = replace_words(a, rng, 0, positions=list(range(100, 1000, 40)))  # 23 words
    c = replace_words(b, rng, 0, positions=list(range(120, 1000, 40)))  # 22 more
    d = words(rng, 1000)
    texts = [" ".join(x) for x in (a, b, c, d)]
    cfg = MinHashConfig(bands=32, rows=8)
    sig, (src, dst), comp = pipeline(texts, cfg)
    j = M.estimated_jaccard(sig[[0, 1, 0]], sig[[1, 2, 2]])
    assert j[0] >= cfg.threshold and j[1] >= cfg.threshold and j[2] < cfg.threshold, j
    assert (2, 0) not in set(zip(src.tolist(), dst.tolist()))
    assert comp == {0: 0, 1: 0, 2: 0}
    keep = C.choose_keepers(
        np.array(list(comp), np.uint64),
        np.array(list(comp.values()), np.uint64),
        "longest",
        np.array([len(texts[i]) for i in comp]),
    )
    assert keep.size.tolist() == [3, 3, 3] and keep.is_kept.sum() == 1


def test_choose_keepers_rules_and_ties():
    nodes = np.array([1, 2, 3, 4, 10, 11, 12, 20, 21], dtype=np.uint64)
    roots = np.array([1, 1, 1, 1, 10, 10, 10, 20, 20], dtype=np.uint64)
    score = np.array([0.1, 0.5, 0.5, np.nan, 1.0, 1.0, 0.0, np.nan, np.nan])
    ids = ["e", "d", "c", "b", "a", "z", "y", "q", "p"]
    a = C.choose_keepers(nodes, roots, "highest", score, ids)
    # 2 and 3 tie on 0.5 -> smaller id "c" (node 3); 10/11 tie -> "a"; all-NaN cluster -> id "p"
    assert a.kept.tolist() == [3, 3, 3, 3, 10, 10, 10, 21, 21]
    assert a.is_kept.tolist() == [False, False, True, False, True, False, False, False, True]
    assert a.size.tolist() == [4] * 4 + [3] * 3 + [2] * 2
    assert a.cluster.tolist() == roots.tolist()
    # without ids, ties go to the smallest node
    assert C.choose_keepers(nodes, roots, "highest", score).kept.tolist() == [2, 2, 2, 2, 10, 10, 10, 20, 20]
    ts = np.array([5, 3, 3, 1, 9, 8, 8, 0, 0])
    assert C.choose_keepers(nodes, roots, "earliest", ts).kept.tolist() == [4] * 4 + [11] * 3 + [20] * 2
    assert C.choose_keepers(nodes, roots, "earliest", ts, ids).kept.tolist() == [4] * 4 + [12] * 3 + [21] * 2
    lengths = pa.array([10, 30, 30, 5, None, 2, 2, 1, 1])
    assert C.choose_keepers(nodes, roots, "longest", lengths).kept.tolist() == [2] * 4 + [11] * 3 + [20] * 2
    by_id = C.choose_keepers(nodes, roots, "smallest_id", ids=pa.array(ids))
    assert by_id.kept.tolist() == [4] * 4 + [10] * 3 + [21] * 2
    assert C.choose_keepers(nodes, roots).kept.tolist() == [1] * 4 + [10] * 3 + [20] * 2
    with pytest.raises(ValueError):
        C.choose_keepers(nodes, roots, "highest")
    # input order does not matter
    p = np.random.default_rng(0).permutation(len(nodes))
    b = C.choose_keepers(nodes[p], roots[p], "highest", score[p], [ids[i] for i in p])
    assert b.kept.tolist() == [a.kept[i] for i in p] and b.size.tolist() == [a.size[i] for i in p]


def test_exact_dedup_through_candidate_edges():
    texts = ["Same text", "same   TEXT", "other", "same text", None, None, "", ""]
    h = H.exact_hashes(pa.array(texts))
    valid = np.array([t is not None and t.strip() != "" for t in texts])
    keys = np.arange(len(texts), dtype=np.uint64)
    src, dst = C.candidate_edges(np.zeros(valid.sum(), np.uint8), h[valid], keys[valid])
    nodes, roots = C.connected_components(src, dst)
    assert dict(zip(nodes.tolist(), roots.tolist())) == {0: 0, 1: 0, 3: 0}


# ----------------------------------------------------------------------------- boilerplate


def test_boilerplate_lines():
    from mixforge.dedup import boilerplate as B
    from mixforge.dedup.config import BoilerplateConfig

    cfg = BoilerplateConfig(min_docs=3, min_chars=5)
    nav, foot = "Home | About | Contact", "Copyright 2024 Example Ltd"
    shard1 = [f"{nav}\nstory one\n{foot}", f"  {nav}  \nstory two\n{foot}\n{foot}", None]
    shard2 = [f"{nav}\nstory three", "ok\nshort lines stay\nok", f"story four\n{foot.upper()}"]
    parts = []
    for shard in (shard1, shard2):
        doc, h = B.line_hashes(pa.array(shard), cfg)
        parts.append(B.count_line_docs(h))
    hashes, counts = B.merge_line_counts(parts)
    bp = B.boilerplate_hashes(hashes, counts, cfg)
    assert len(bp) == 1  # nav in 3 documents; the footer in only 2 (case differs in the third)
    out, removed = B.remove_lines(pa.array(shard1 + shard2), bp, cfg)
    assert out.to_pylist() == [
        f"story one\n{foot}",
        f"story two\n{foot}\n{foot}",
        None,
        "story three",
        "ok\nshort lines stay\nok",
        f"story four\n{foot.upper()}",
    ]
    assert removed.tolist() == [1, 1, 0, 1, 0, 0]
    # case-insensitive: the footer now counts three documents too
    lower = BoilerplateConfig(min_docs=3, min_chars=5, lowercase=True)
    h_all = B.line_hashes(pa.array(shard1 + shard2), lower)[1]
    assert len(B.boilerplate_hashes(*B.count_line_docs(h_all), lower)) == 2
    same, none_removed = B.remove_lines(pa.array(shard2), np.zeros(0, np.uint64), cfg)
    assert same.to_pylist() == shard2 and none_removed.tolist() == [0, 0, 0]
