"""Decontamination benchmark: mixforge's `decontaminate` against datatrove's NGramsDecontIndexer + NGramsDecontFilter.

    .venv/bin/python -m benchmarks.bench_decontam --datatrove-python /tmp/dt-venv/bin/python --json-out PATH
    .venv/bin/python -m benchmarks.bench_decontam --skip-datatrove          # our side only

Corpus: the real documents of ../shared/corpus (`--corpus-dir`) cut on paragraph boundaries into documents of at
most 4,000 characters (benchmarks.bench_dedup.split_document), written as contract Parquet shards.

Benchmark sets (JSONL files, fields `question` and `answer`), seeded:
- `quotes`: `--items` items whose question is a window of 25-40 words of a random corpus document (with enough
  words) and whose answer is the 8 words after it: questions-like real text, found in the corpus by construction;
- `unrelated`: as many items of synthetic text (harness.synthetic_documents), which no corpus document holds.
Planted: `--planted` other documents get a `quotes` item (question + answer) inserted at a paragraph break in
their middle, half verbatim, half lightly edited (the question's third word replaced: the 13-word windows after
it still match).

Both sides index the same items and scan the same shards, 13-grams:
- datatrove 0.10.1 in its own venv (subprocess): NGramsDecontIndexer fed the items as documents (text = answer,
  metadata query = question; find_query_ngrams and find_overlap_ngrams on: every 13-gram of question + answer,
  as ours), its lighteval task loading stubbed out (nothing downloaded); NGramsDecontFilter.filter over every
  document of every shard (read with pyarrow) in a spawn pool of `--workers` processes; its indexer refuses more
  than one worker.
- mixforge: `mixforge.decontam.composite.decontaminate` in drop mode (max_benchmark_items off: datatrove has no
  frequency rule) on a LocalPoolExecutor of `--workers`; the stage timed with its index already built, and the
  index build timed apart at 1 worker (SerialExecutor) and 2 (LocalPoolExecutor) on a larger set
  (`--index-items` synthetic items in 8 files; the pool warmed first, untimed), next to datatrove's
  one-worker indexer on the same items.

Agreement: Jaccard of the two sets of contaminated document ids (goal >= 0.99), with the disagreements listed;
recall of the planted documents for each. Speed: documents/s of the scan (goal >= 5x datatrove's). Differences
of method that can make them disagree: datatrove maps every number to 0 and strips accents, and tokenises with
spaCy after removing its punctuation list; mixforge keeps digits and accents (mixforge.decontam.ngrams).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.harness import (  # noqa: E402
    MB,
    Measurement,
    add_run_args,
    configure_environment,
    fresh_dir,
    load_base_documents,
    measure,
    report,
    synthetic_documents,
)

N = 13


# ----------------------------------------------------------------------------- data


def build_data(args, work: Path) -> dict:
    """Corpus shards, benchmark files and the planted ids (seeded)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from benchmarks.bench_dedup import split_document
    from mixforge import schema as S

    rng = random.Random(args.seed)
    base, origin = load_base_documents(args.corpus_dir)
    docs = []
    for d in base:
        for k, chunk in enumerate(split_document(d["text"], 4000)):
            docs.append({"id": f"d{len(docs)}-{k}", "text": chunk, "source": d["source"], "url": None, "meta": None})
    order = list(range(len(docs)))
    rng.shuffle(order)
    sources = [i for i in order if len(docs[i]["text"].split()) >= 60][: args.items]
    taken = set(sources)
    quotes = []
    for i in sources:
        words = docs[i]["text"].split()
        length = rng.randint(25, 40)
        at = rng.randrange(0, len(words) - length - 8)
        quotes.append(
            {"question": " ".join(words[at : at + length]), "answer": " ".join(words[at + length : at + length + 8])}
        )
    unrelated = [
        {"question": " ".join(d["text"].split()[:30]), "answer": " ".join(d["text"].split()[30:38])}
        for d in synthetic_documents(args.items, seed=args.seed + 1)
    ]
    planted = {}
    for j, i in enumerate([i for i in order if i not in taken][: args.planted]):
        item = quotes[j % len(quotes)]
        question = item["question"].split()
        if j % 2:
            question[2] = "zebra"  # lightly edited
        text = docs[i]["text"]
        cut = text.find("\n", len(text) // 2)
        cut = len(text) if cut < 0 else cut
        docs[i]["text"] = f"{text[:cut]}\n{' '.join(question)} {item['answer']}\n{text[cut:]}"
        planted[docs[i]["id"]] = "edited" if j % 2 else "exact"
    bench_dir = Path(fresh_dir(work / "benchmarks"))
    files = {}
    for name, items in (("quotes", quotes), ("unrelated", unrelated)):
        half = len(items) // 2
        files[name] = []
        for k, part in enumerate((items[:half], items[half:])):
            path = bench_dir / f"{name}-{k}.jsonl"
            path.write_text("".join(json.dumps(x) + "\n" for x in part))
            files[name].append(str(path))
    corpus_dir = Path(fresh_dir(work / "corpus"))
    shards = []
    per = -(-len(docs) // args.shards)
    for s in range(args.shards):
        path = corpus_dir / f"part-{s:05d}.parquet"
        pq.write_table(pa.Table.from_pylist(docs[s * per : (s + 1) * per], schema=S.CORE_SCHEMA), path)
        shards.append(str(path))
    big = []
    synth = synthetic_documents(args.index_items, seed=args.seed + 2)
    big_dir = Path(fresh_dir(work / "index-set"))
    for k in range(8):
        path = big_dir / f"synthetic-{k}.jsonl"
        path.write_text(
            "".join(
                json.dumps(
                    {"question": " ".join(d["text"].split()[:40]), "answer": " ".join(d["text"].split()[40:48])}
                )
                + "\n"
                for d in synth[k::8]
            )
        )
        big.append(str(path))
    return {
        "origin": origin,
        "docs": len(docs),
        "text_bytes": sum(len(d["text"].encode()) for d in docs),
        "shards": shards,
        "files": files,
        "planted": planted,
        "index_files": big,
    }


# ----------------------------------------------------------------------------- datatrove side (its own venv)


def _dt_stub_lighteval() -> None:
    """datatrove's indexer always loads lighteval tasks after the given documents: an empty registry instead
    (no download), and its dependency check told lighteval is there."""
    import importlib.machinery
    import types

    import datatrove.utils._import_utils as import_utils

    for name in ("lighteval", "lighteval.tasks", "lighteval.tasks.lighteval_task", "lighteval.tasks.registry"):
        module = types.ModuleType(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        sys.modules[name] = module

    class Registry:
        def __init__(self, *a, **k) -> None:
            pass

        def get_task_dict(self, tasks):
            return {}

    class LightevalTask:
        @staticmethod
        def load_datasets(tasks) -> None:
            pass

    sys.modules["lighteval.tasks.registry"].Registry = Registry
    sys.modules["lighteval.tasks.lighteval_task"].LightevalTask = LightevalTask
    available, dist = import_utils._is_package_available, import_utils._is_distribution_available
    import_utils._is_package_available = lambda name: name == "lighteval" or available(name)
    import_utils._is_distribution_available = lambda name: name == "lighteval" or dist(name)


def _dt_config():
    from datatrove.pipeline.decont.n_grams import NGramsDecontConfig

    return NGramsDecontConfig(n_grams=N, find_query_ngrams=True, find_overlap_ngrams=True)


def _dt_index(files: dict[str, list[str]], out: str) -> float:
    from datatrove.data import Document
    from datatrove.pipeline.decont.n_grams import NGramsDecontIndexer

    docs = []
    for task, paths in files.items():
        for path in paths:
            with open(path) as f:
                for i, line in enumerate(f):
                    item = json.loads(line)
                    docs.append(
                        Document(
                            text=item["answer"], id=f"{task}-{i}", metadata={"query": item["question"], "task": task}
                        )
                    )
    t = time.perf_counter()
    NGramsDecontIndexer(out, lighteval_tasks=[], config=_dt_config()).run(iter(docs))
    return time.perf_counter() - t


def _dt_shard(task):
    path, index_dir = task
    global _DT_FILTER
    import pyarrow.parquet as pq
    from datatrove.data import Document

    if "_DT_FILTER" not in globals():
        from datatrove.pipeline.decont.n_grams import NGramsDecontFilter

        _DT_FILTER = NGramsDecontFilter(index_dir, config=_dt_config())
        _DT_FILTER.load_index_hashes()
    table = pq.read_table(path, columns=["id", "text"])
    found = []
    for doc_id, text in zip(table.column("id").to_pylist(), table.column("text").to_pylist()):
        doc = Document(text=text or "", id=doc_id)
        if _DT_FILTER.filter(doc) is not True:
            found.append([doc_id, doc.metadata.get("contaminated_task")])
    return found


def datatrove_worker_main(spec_path: str) -> None:
    import multiprocessing as mp

    _dt_stub_lighteval()
    spec = json.loads(Path(spec_path).read_text())
    result = {"index_build_s": _dt_index(spec["files"], spec["index_dir"])}
    result["index_build_large_s"] = _dt_index({"synthetic": spec["index_files"]}, spec["index_dir"] + "-large")
    t = time.perf_counter()
    with mp.get_context("spawn").Pool(spec["workers"], initializer=_dt_stub_lighteval) as pool:
        parts = pool.map(_dt_shard, [(p, spec["index_dir"]) for p in spec["shards"]], chunksize=1)
    result["scan_s"] = time.perf_counter() - t
    result["contaminated"] = [x for part in parts for x in part]
    Path(spec["result"]).write_text(json.dumps(result))


def run_datatrove(python: str, data: dict, work: Path, workers: int) -> dict:
    out = Path(fresh_dir(work / "datatrove"))
    spec = {
        "files": data["files"],
        "index_files": data["index_files"],
        "shards": data["shards"],
        "index_dir": str(out / "index"),
        "workers": workers,
        "result": str(out / "result.json"),
    }
    (out / "spec.json").write_text(json.dumps(spec))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    subprocess.run(
        [python, str(Path(__file__).resolve()), "--datatrove-worker", str(out / "spec.json")], check=True, env=env
    )
    return json.loads((out / "result.json").read_text())


# ----------------------------------------------------------------------------- our side


def _config(files: dict[str, list[str]], index: str):
    from mixforge.decontam.config import DecontamConfig

    return DecontamConfig(
        benchmarks=[
            {"name": name, "uri": str(Path(paths[0]).parent / f"{name}-*.jsonl"), "fields": ["question", "answer"]}
            for name, paths in files.items()
        ],
        mode="drop",
        ngram=N,
        max_benchmark_items=None,
        index=index,
    )


def _warm(i: int) -> int:
    import mixforge.decontam.index  # noqa: F401 - what an index step imports

    return i


def run_ours(data: dict, work: Path, workers: int) -> tuple[Measurement, dict]:
    import pyarrow.parquet as pq

    from mixforge.decontam.composite import decontaminate
    from mixforge.decontam.index import build_index, plan_index
    from mixforge.executor import LocalPoolExecutor, SerialExecutor
    from mixforge.runs import StageLayout

    out = Path(fresh_dir(work / "mixforge"))
    cfg = _config(data["files"], str(out / "index"))
    inputs = list(enumerate(data["shards"]))
    t = time.perf_counter()
    build_index(plan_index(cfg, str(out)), SerialExecutor())
    index_small = time.perf_counter() - t
    summary = {}

    def scan() -> int:
        layout = StageLayout(fresh_dir(out / "stage"))
        summary.update(decontaminate(str(out), layout, inputs, cfg, LocalPoolExecutor(workers)))
        return summary["docs_in"]

    m = measure(
        "mixforge-decontaminate",
        scan,
        text_bytes=data["text_bytes"],
        description=f"drop mode, {workers} worker processes (LocalPoolExecutor), index already built",
        workers=workers,
    )
    removed_dir = out / "stage" / "_removed"
    ids = []
    for f in sorted(removed_dir.glob("*.parquet")) if removed_dir.exists() else []:
        ids += pq.read_table(f, columns=["id"]).column("id").to_pylist()
    builds = {}
    big = _config({"synthetic": data["index_files"]}, "")
    pool = LocalPoolExecutor(2)
    pool.map(_warm, [(i,) for i in range(2)], step="warm-up")  # workers started and imports done, untimed
    for w, executor in ((1, SerialExecutor()), (2, pool)):
        cfg_big = big.model_copy(update={"index": str(out / f"index-large-{w}")})
        t = time.perf_counter()
        manifest = build_index(plan_index(cfg_big, str(out)), executor)
        builds[w] = {"seconds": round(time.perf_counter() - t, 3), "ngrams": manifest["ngrams"]}
    return m, {"contaminated": ids, "index_build_s": index_small, "index_builds": builds, "summary": summary}


# ----------------------------------------------------------------------------- main


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(parser, workers=2, repeat=None, json_out="benchmarks/out/bench_decontam.json")
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--items", type=int, default=300, help="items per benchmark set (default 300)")
    parser.add_argument("--planted", type=int, default=400, help="documents given a benchmark item (default 400)")
    parser.add_argument("--index-items", type=int, default=320_000, help="items of the index-scaling set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--datatrove-python", default="/tmp/dt-venv/bin/python")
    parser.add_argument("--skip-datatrove", action="store_true")
    parser.add_argument("--datatrove-worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.datatrove_worker:
        datatrove_worker_main(args.datatrove_worker)
        return {}
    configure_environment()
    work = Path(args.work_dir) / "decontam"
    data = build_data(args, work)
    ours_m, ours = run_ours(data, work, args.workers)
    results = [ours_m]
    ours_set = set(ours["contaminated"])
    planted = set(data["planted"])
    extra = {
        "docs": data["docs"],
        "text_mb": round(data["text_bytes"] / MB, 2),
        "planted": len(planted),
        "mixforge_contaminated": len(ours_set),
        "mixforge_planted_recall": round(len(planted & ours_set) / len(planted), 4),
        "mixforge_index_build_s": round(ours["index_build_s"], 3),
        "mixforge_index_build_large_1_worker_s": ours["index_builds"][1]["seconds"],
        "mixforge_index_build_large_2_workers_s": ours["index_builds"][2]["seconds"],
        "index_large_ngrams": ours["index_builds"][1]["ngrams"],
        "index_build_speedup_2_workers": round(
            ours["index_builds"][1]["seconds"] / ours["index_builds"][2]["seconds"], 3
        ),
    }
    goals = []
    if not args.skip_datatrove:
        dt = run_datatrove(args.datatrove_python, data, work, args.workers)
        dt_set = {doc_id for doc_id, _ in dt["contaminated"]}
        results.append(
            Measurement(
                "datatrove-decont-filter",
                data["docs"],
                data["text_bytes"],
                dt["scan_s"],
                0.0,
                description=f"NGramsDecontFilter over the same shards, spawn pool of {args.workers}",
            )
        )
        agreement = len(ours_set & dt_set) / len(ours_set | dt_set) if ours_set | dt_set else 1.0
        extra.update(
            {
                "datatrove_contaminated": len(dt_set),
                "datatrove_planted_recall": round(len(planted & dt_set) / len(planted), 4),
                "agreement_jaccard": round(agreement, 4),
                "only_mixforge": sorted(ours_set - dt_set)[:20],
                "only_datatrove": sorted(dt_set - ours_set)[:20],
                "datatrove_index_build_s": round(dt["index_build_s"], 3),
                "datatrove_index_build_large_1_worker_s": round(dt["index_build_large_s"], 3),
            }
        )
        goals = [
            ("mixforge-decontaminate", 5.0),
            ("agreement", 0.99, "Jaccard of contaminated document ids", round(agreement, 4)),
        ]
    return report(
        results,
        None if args.skip_datatrove else "datatrove-decont-filter",
        benchmark="decontaminate",
        params={k: v for k, v in vars(args).items() if k != "datatrove_worker"},
        goals=goals,
        extra=extra,
        notes=[
            "scan: documents/s over the same Parquet shards; the index build is timed apart",
            "index build at 1 and 2 workers on the large synthetic set (8 files); datatrove's indexer: 1 worker only",
        ],
        json_out=args.json_out,
        print_json=args.json,
    )


if __name__ == "__main__":
    main()
