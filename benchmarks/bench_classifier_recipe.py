#!/usr/bin/env python
"""Benchmark: mixforge's default classifier recipe against bare fastText, by repeated stratified k-fold.

    .venv/bin/python -m benchmarks.bench_classifier_recipe                       # 5 folds x 3 repeats
    .venv/bin/python -m benchmarks.bench_classifier_recipe --json-out /tmp/recipe.json
    .venv/bin/python -m benchmarks.bench_classifier_recipe --recipe '{"fasttext": {"epoch": 10}}'   # try a recipe

Labelled data (built here from ../shared/corpus, never committed: it holds third-party web pages): a
binary quality label on passages of 300-3,000 characters cut at seeded random places:
  positive  edited prose and reference text: Jane Austen, the King James Bible, Project Gutenberg books
            (.txt editions), the English Debian Reference, Wikipedia (raw wikitext), ABC news texts
            (gensim's lee corpora), Jargon File entries;
  negative  web pages with their navigation and boilerplate (readability, goose3, article-extraction
            test pages, dolma's Common Crawl records), Debian copyright/licence files, Usenet posts.
The label is noisy the way human quality labels are: a passage of a web page may be its article body.
At most --per-source passages per source; a long document gives several passages, and folds are
grouped by document, so no document is on both sides of a split.

Variants, trained and scored on the SAME folds in one run (every fold: train on k-1 parts, AUC on the
held-out part; --repeats reshuffles the folds with a fixed seed; mean and standard deviation over all
folds, never a chosen seed):
  mixforge          the library call as `mixforge train-classifier --positive P --negative N` runs it
                    (`train_classifier` with `TrainClassifierConfig()`, or --recipe overrides) on the
                    fold's training documents written as Parquet shards; the published model version
                    is then applied as the classify stage applies it (its card's preprocessing,
                    `FastTextClassifier.probabilities`) to the held-out documents
  fasttext-default  bare fastText `train_supervised` with its defaults on lower-cased, whitespace-joined
                    text, the training lines in a seeded random order (as `shuf` gives them); one
                    training per child process, as mixforge does (fasttext-numpy2 diverges at random
                    on a second training in one process)
  fasttext-2gram    the same with wordNgrams=2, epoch=25

A training that fails (fastText's "Encountered NaN") counts as a failure of its variant (AUC 0.5 for
that fold, reported in `failures`). The goals: mixforge's mean AUC minus each bare variant's, paired by
fold, >= 0. The load average (/proc/loadavg) is reported beside the figures: the AUCs do not depend on
load (one thread), the seconds do.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # also run as a script
from benchmarks import harness  # noqa: E402

POSITIVE_SOURCES = ("austen", "kjv", "gutenberg", "debian-reference-en", "wikipedia", "abc-news", "jargon")
NEGATIVE_SOURCES = ("web-readability", "web-goose3", "web-articles", "common-crawl", "licence-files", "usenet")
BARE_2GRAM = {"wordNgrams": 2, "epoch": 25}


@dataclass
class Example:
    group: str  # the document it was cut from (folds never split a group)
    source: str
    label: bool  # True: positive
    text: str


def _source_of(file_stem: str, row: dict) -> str | None:
    """The benchmark's source name of a corpus row (None: not used)."""
    doc_id = str(row.get("id", ""))
    if file_stem == "gensim-wikipedia-news":
        prefix = doc_id.split(":")[0]
        return {"enwiki": "wikipedia", "20ng": "usenet", "lee.cor": "abc-news", "lee_background.cor": "abc-news"}.get(
            prefix
        )
    if file_stem == "gitenberg":
        return "gutenberg" if doc_id.endswith(".txt") else None
    if file_stem == "debian-reference":
        return "debian-reference-en" if row.get("lang") == "en" else None
    return {
        "janeaustenr": "austen",
        "kjv-bible": "kjv",
        "jargon-file": "jargon",
        "readability-testpages": "web-readability",
        "goose3-testpages": "web-goose3",
        "article-extraction-benchmark": "web-articles",
        "dolma-tests": "common-crawl",
        "debian-copyright-files": "licence-files",
    }.get(file_stem)


def _passages(text: str, rng: random.Random, n: int, min_chars: int, max_chars: int) -> list[str]:
    """Up to n non-overlapping passages of min_chars..max_chars characters, cut at spaces."""
    out, start = [], 0
    slots = max(1, len(text) // max(1, n))
    for k in range(n):
        lo = max(start, k * slots)
        length = rng.randint(min_chars, max_chars)
        if lo + min_chars > len(text):
            break
        begin = lo + rng.randrange(max(1, min(slots, len(text) - lo) - length + 1))
        space = text.find(" ", begin)
        begin = begin if space < 0 or space - begin > 50 else space + 1
        piece = text[begin : begin + length].strip()
        if len(piece) >= min_chars // 2:
            out.append(piece)
        start = begin + length
    return out


def build_examples(corpus_dir: str, per_source: int, seed: int, min_chars: int = 300, max_chars: int = 3000):
    import orjson
    import zstandard

    rng = random.Random(seed)
    by_source: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for path in sorted(glob.glob(os.path.join(corpus_dir, "*.jsonl.zst"))):
        stem = os.path.basename(path)[: -len(".jsonl.zst")]
        with open(path, "rb") as f:
            data = zstandard.ZstdDecompressor().decompressobj().decompress(f.read())
        for line in data.split(b"\n"):
            if line.strip():
                row = orjson.loads(line)
                source = _source_of(stem, row)
                if source and isinstance(row.get("text"), str) and len(row["text"]) >= min_chars // 2:
                    by_source[source].append((f"{stem}/{row['id']}", row["text"]))
    missing = [s for s in POSITIVE_SOURCES + NEGATIVE_SOURCES if not by_source.get(s)]
    if missing:
        raise SystemExit(f"{corpus_dir}: no documents for the sources {missing} (is it ../shared/corpus?)")
    examples = []
    for source in sorted(by_source):
        docs = sorted(by_source[source])
        rng.shuffle(docs)
        per_doc = max(1, -(-per_source // len(docs)))  # few long documents (books): several passages each
        taken = []
        for group, text in docs:
            for piece in _passages(text, rng, per_doc, min_chars, max_chars):
                taken.append(Example(group, source, source in POSITIVE_SOURCES, piece))
            if len(taken) >= per_source:
                break
        examples += taken[:per_source]
    return examples


def grouped_stratified_folds(examples: list[Example], k: int, seed: int) -> list[int]:
    """Fold of every example: documents shuffled (seeded), each label's put on the emptiest fold for it."""
    rng = random.Random(seed)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        groups[ex.group].append(i)
    fold_of = [0] * len(examples)
    for label in (True, False):
        names = sorted(g for g, idx in groups.items() if examples[idx[0]].label == label)
        rng.shuffle(names)
        filled = [0] * k
        for name in sorted(names, key=lambda g: -len(groups[g])):  # stable sort keeps the shuffle among equals
            fold = min(range(k), key=lambda f: (filled[f], f))
            for i in groups[name]:
                fold_of[i] = fold
            filled[fold] += len(groups[name])
    return fold_of


# ----------------------------------------------------------------------------- variants


def bare_text(text: str) -> str:
    return " ".join(text.lower().split())


def run_bare(train: list[Example], test: list[Example], params: dict, tmp: str, seed: int) -> list[float]:
    from mixforge.classify.fasttext_model import LABEL_PREFIX, load_fasttext
    from mixforge.classify.train import _train_fasttext

    train_path, model_path = os.path.join(tmp, "bare-train.txt"), os.path.join(tmp, "bare-model.bin")
    train = list(train)
    random.Random(seed).shuffle(train)  # as `shuf` would: fastText reads its file in order
    with open(train_path, "w", encoding="utf-8") as f:
        for ex in train:
            f.write(f"{LABEL_PREFIX}{'pos' if ex.label else 'neg'} {bare_text(ex.text)}\n")
    _train_fasttext(train_path, params, model_path, tmp)  # a child process, as for mixforge (see its docstring)
    model = load_fasttext(model_path)
    labels, probs = model.predict([bare_text(ex.text) for ex in test], k=2)
    return [float(p[list(lab).index(f"{LABEL_PREFIX}pos")]) for lab, p in zip(labels, probs)]


def _write_docs(path: str, examples: list[Example]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "id": [f"{ex.group}#{i}" for i, ex in enumerate(examples)],
            "text": [ex.text for ex in examples],
            "source": [ex.source for ex in examples],
        }
    )
    pq.write_table(table, path)


def run_mixforge(train: list[Example], test: list[Example], recipe: dict, tmp: str, name: str) -> tuple[list, dict]:
    import pyarrow as pa

    from mixforge.classify import store
    from mixforge.classify.config import TrainClassifierConfig
    from mixforge.classify.fasttext_model import FastTextClassifier
    from mixforge.classify.preprocess import preprocess
    from mixforge.classify.train import train_classifier

    pos, neg = os.path.join(tmp, "pos.parquet"), os.path.join(tmp, "neg.parquet")
    _write_docs(pos, [ex for ex in train if ex.label])
    _write_docs(neg, [ex for ex in train if not ex.label])
    config = TrainClassifierConfig.model_validate(recipe)
    version = train_classifier(name, os.path.join(tmp, "store"), positive=pos, negative=neg, config=config)
    scorer = FastTextClassifier(store.resolve(version.uri))  # as the classify stage applies a model version
    scorer.load()
    prepared = preprocess(pa.array([ex.text for ex in test], pa.string()), scorer.preprocess).to_pylist()
    probs = scorer.probabilities(prepared)
    return [float(p) for p in probs[:, scorer.labels.index(version.card["positive_label"])]], version.card


# ----------------------------------------------------------------------------- main


def _loadavg() -> str | None:
    try:
        with open("/proc/loadavg") as f:
            return f.read().strip()
    except OSError:
        return None


def _stats(values: list[float]) -> dict:
    return {
        "mean": round(statistics.fmean(values), 4),
        "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus-dir", default=str(harness.DEFAULT_CORPUS_DIR), help="../shared/corpus")
    parser.add_argument("--per-source", type=int, default=120, help="passages per source (default 120)")
    parser.add_argument("--folds", type=int, default=5, help="k of the k-fold (default 5)")
    parser.add_argument("--repeats", type=int, default=3, help="k-fold repeats, each reshuffled (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the passages and of the first repeat's folds")
    parser.add_argument(
        "--recipe",
        default="{}",
        help="TrainClassifierConfig overrides as JSON for the mixforge variant (default {}: the shipped defaults)",
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON report on stdout")
    parser.add_argument("--json-out", metavar="PATH", help="also write the JSON report to PATH")
    args = parser.parse_args(argv)
    harness.configure_environment()
    import logging

    logging.getLogger("mixforge").setLevel(logging.WARNING)
    recipe = json.loads(args.recipe)
    load_start = _loadavg()

    examples = build_examples(args.corpus_dir, args.per_source, args.seed)
    counts = Counter(ex.label for ex in examples)
    variants = {
        "mixforge": None,
        "fasttext-default": {},
        "fasttext-2gram": dict(BARE_2GRAM),
    }
    aucs: dict[str, list[float]] = {v: [] for v in variants}
    seconds: dict[str, float] = dict.fromkeys(variants, 0.0)
    failures: dict[str, list[str]] = {v: [] for v in variants}
    inner_aucs, card = [], None
    from mixforge.classify.metrics import roc_auc

    for repeat in range(args.repeats):
        fold_of = grouped_stratified_folds(examples, args.folds, seed=args.seed * 1000 + repeat)
        for fold in range(args.folds):
            train = [ex for ex, f in zip(examples, fold_of) if f != fold]
            test = [ex for ex, f in zip(examples, fold_of) if f == fold]
            y = [ex.label for ex in test]
            for variant, params in variants.items():
                with tempfile.TemporaryDirectory(prefix="mixforge-recipe-") as tmp:
                    started = time.perf_counter()
                    try:
                        if params is None:
                            scores, card = run_mixforge(train, test, recipe, tmp, f"r{repeat}-f{fold}")
                            if card["metrics"].get("auc") is not None:
                                inner_aucs.append(card["metrics"]["auc"])
                        else:
                            scores = run_bare(train, test, params, tmp, seed=repeat * 1000 + fold)
                        auc = roc_auc(y, scores)
                    except RuntimeError as e:  # fastText diverged ("Encountered NaN"): counted, scored as chance
                        failures[variant].append(f"repeat {repeat} fold {fold}: {e}")
                        auc = 0.5
                    seconds[variant] += time.perf_counter() - started
                aucs[variant].append(auc)
            print(
                f"repeat {repeat} fold {fold}: "
                + "  ".join(f"{v} {aucs[v][-1]:.4f}" for v in variants)
                + f"  (load {(_loadavg() or '?').split(' ')[0]})",
                file=sys.stderr,
            )

    n_folds = args.folds * args.repeats
    measurements = [
        harness.Measurement(
            v,
            docs=len(examples) * args.repeats,  # every example is scored once per repeat
            text_bytes=sum(len(ex.text.encode()) for ex in examples) * args.repeats,
            seconds=seconds[v],
            peak_rss_mb=0.0,
            description=f"AUC mean {statistics.fmean(aucs[v]):.4f} std {statistics.stdev(aucs[v]):.4f} "
            f"over {n_folds} folds; {len(failures[v])} failed trainings; seconds = train + score, all folds",
        )
        for v in variants
    ]
    auc_summary = {v: _stats(a) for v, a in aucs.items()}
    paired = {
        f"mixforge - {v}": _stats([a - b for a, b in zip(aucs["mixforge"], aucs[v])])
        for v in variants
        if v != "mixforge"
    }
    goals = [
        ("mixforge", 0.0, f"mean AUC minus {v}'s, paired by fold", paired[f"mixforge - {v}"]["mean"])
        for v in variants
        if v != "mixforge"
    ]
    params = {
        "folds": args.folds,
        "repeats": args.repeats,
        "per_source": args.per_source,
        "seed": args.seed,
        "recipe": recipe or "defaults",
    }
    extra = {
        "auc": auc_summary,
        "auc_paired_difference": paired,
        "auc_per_fold": {v: [round(a, 4) for a in values] for v, values in aucs.items()},
        "failures": failures,
        "mixforge_card_heldout_auc": _stats(inner_aucs) if inner_aucs else None,
        "mixforge_recipe": {"fasttext": card["fasttext"], "preprocess": card["preprocess"]} if card else None,
        "bare_params": {v: p for v, p in variants.items() if p is not None},
        "data": {
            "examples": len(examples),
            "positive": counts[True],
            "negative": counts[False],
            "documents": len({ex.group for ex in examples}),
            "per_source": dict(sorted(Counter(ex.source for ex in examples).items())),
        },
        "loadavg": {"start": load_start, "end": _loadavg()},
    }
    notes = [
        "AUCs of one-thread trainings do not depend on the load; fastText trains on cpu_count - 1 threads by default "
        f"(here {max(1, (os.cpu_count() or 2) - 1)}; more than one is not reproducible bit for bit).",
    ]
    return harness.report(
        measurements,
        "fasttext-default",
        benchmark="classifier-recipe",
        params=params,
        goals=goals,
        notes=notes,
        extra=extra,
        json_out=args.json_out,
        print_json=args.json,
    )


if __name__ == "__main__":
    main()
