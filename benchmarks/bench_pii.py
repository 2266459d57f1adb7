"""The `pii` stage against datatrove's `PIIFormatter` (e-mail and IP, the entities it has), issue #19.

    .venv/bin/python -m benchmarks.bench_pii --datatrove-python /tmp/dt-venv/bin/python --json-out out/pii.json

* Speed on the real corpus (../shared/corpus, repeated to --target-mb): documents/s of `PIIStage.process`
  (redact mode, e-mail and IP only: the same work as datatrove's; then all five entities) against
  `PIIFormatter.format` over the same texts, each on one core (Polars on one thread, datatrove in its own
  venv: benchmarks/requirements-datatrove.txt, `python -m venv /tmp/dt-venv && /tmp/dt-venv/bin/pip install -r
  benchmarks/requirements-datatrove.txt`). Goal: >= 5x.
* Quality on the frozen labelled set (tests/mixforge/pii/pii_eval.jsonl, built before the detector by
  benchmarks/make_pii_eval.py): exact-span precision and recall per entity of both (datatrove's spans are
  the matches its replacer would replace: every e-mail match, the IPv4 matches its validator accepts).
* On the corpus itself (no labels): e-mails and IPs each finds, and how many spans both find.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EVAL = REPO / "tests" / "mixforge" / "pii" / "pii_eval.jsonl"


# ----------------------------------------------------------------------------- datatrove side (its own venv)


def datatrove_worker(spec_path: str) -> None:
    """Run in the datatrove venv: time PIIFormatter over the corpus texts, and list its spans on the eval set
    and the corpus. Imports nothing of mixforge."""
    from datatrove.pipeline.formatters.pii import PIIFormatter

    spec = json.loads(Path(spec_path).read_text())
    texts = [json.loads(line)["text"] for line in open(spec["corpus"], encoding="utf-8")]
    formatter = PIIFormatter()
    times = []
    for _ in range(spec["repeat"]):
        started = time.perf_counter()
        for text in texts:
            formatter.format(text)
        times.append(time.perf_counter() - started)

    def spans(docs: list[str]) -> list[list]:
        out = []
        for i, text in enumerate(docs):
            for m in formatter.emails_replacer.regex.finditer(text):
                out.append([i, "email", m.start(), m.end()])
            # datatrove replaces IPs in the text its e-mail pass left; spans of the original text here
            for m in formatter.ip_replacer.regex.finditer(text):
                if formatter.ip_replacer.validator(m.group(0)):
                    out.append([i, "ip_address", m.start(), m.end()])
        return out

    evaluation = [json.loads(line)["text"] for line in open(spec["eval"], encoding="utf-8")]
    base = texts[: spec["base_docs"]]
    result = {"seconds": times, "eval_spans": spans(evaluation), "corpus_spans": spans(base)}
    Path(spec["out"]).write_text(json.dumps(result))


# ----------------------------------------------------------------------------- our side


def scores(rows: list[dict], spans, entities) -> dict:
    predicted = {e: set() for e in entities}
    for doc, entity, start, end in spans:
        if entity in predicted:
            predicted[entity].add((doc, start, end))
    out = {}
    for entity in entities:
        gold = {(i, e["start"], e["end"]) for i, r in enumerate(rows) for e in r["entities"] if e["type"] == entity}
        hit = len(gold & predicted[entity])
        negatives = [
            (i, n["start"], n["end"]) for i, r in enumerate(rows) for n in r["negatives"]
        ]  # any span over a hard negative
        wrong = sum(1 for d, s, e in predicted[entity] if any(d == i and s < ne and ns < e for i, ns, ne in negatives))
        out[entity] = {
            "precision": round(hit / max(1, len(predicted[entity])), 4),
            "recall": round(hit / max(1, len(gold)), 4),
            "gold": len(gold),
            "predicted": len(predicted[entity]),
            "on_hard_negatives": wrong,
        }
    return out


def main(argv=None) -> None:
    if argv is None and len(sys.argv) == 3 and sys.argv[1] == "--datatrove-worker":
        return datatrove_worker(sys.argv[2])
    from benchmarks import harness

    harness.configure_environment()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    harness.add_run_args(parser, workers=1, repeat=3)
    parser.add_argument("--target-mb", type=float, default=30.0, help="MB of corpus text (the corpus repeated)")
    parser.add_argument("--batch-rows", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=1, help="Polars threads of our side (default 1: one core)")
    parser.add_argument("--datatrove-python", default=None, help="python of a venv with datatrove (else: ours only)")
    args = parser.parse_args(argv)
    os.environ["POLARS_MAX_THREADS"] = str(args.threads)  # before Polars is imported

    import polars as pl
    import pyarrow as pa

    from mixforge.pii.config import PIIConfig
    from mixforge.pii.detect import ENTITIES, detect
    from mixforge.pii.stage import PIIStage
    from mixforge.stage import ShardContext

    base, origin = harness.load_base_documents(args.corpus_dir)
    base_bytes = sum(len(d["text"].encode()) for d in base)
    copies = max(1, round(args.target_mb * harness.MB / base_bytes))
    texts = [d["text"] for d in base] * copies
    sources = [d["source"] for d in base] * copies
    text_bytes = base_bytes * copies
    work = Path(args.work_dir) / "pii"
    work.mkdir(parents=True, exist_ok=True)
    batches = [
        pa.table(
            {
                "id": [str(i) for i in range(at, min(at + args.batch_rows, len(texts)))],
                "text": texts[at : at + args.batch_rows],
                "source": sources[at : at + args.batch_rows],
            }
        )
        for at in range(0, len(texts), args.batch_rows)
    ]

    def ours(config: PIIConfig):
        stage = PIIStage(config)

        def run() -> int:
            ctx = ShardContext("bench", 0)
            return sum(stage.process(b, ctx).kept.num_rows for b in batches)

        return run

    email_ip = PIIConfig(phone="off", credit_card="off", iban="off")
    variants = [
        ("mixforge-email-ip", email_ip, "PIIStage.process, redact e-mail + public IP (datatrove's work)"),
        ("mixforge-all", PIIConfig(), "PIIStage.process, redact all five entities"),
    ]
    results = []
    for name, config, description in variants:
        runs = [
            harness.measure(name, ours(config), text_bytes=text_bytes, description=description, one_thread=True)
            for _ in range(args.repeat)
        ]
        results.append(harness.best_of(name, runs))

    rows = [json.loads(line) for line in EVAL.read_text(encoding="utf-8").splitlines()]
    eval_found = detect(pl.Series([r["text"] for r in rows]))
    quality = {"mixforge": scores(rows, eval_found.select("doc", "entity", "start", "end").rows(), ENTITIES)}
    corpus_found = detect(pl.Series([d["text"] for d in base]), ["email", "ip_address"])
    ours_corpus = {(d, e, s, t) for d, e, s, t in corpus_found.select("doc", "entity", "start", "end").rows()}

    baseline = None
    on_corpus = {"mixforge": {e: sum(1 for x in ours_corpus if x[1] == e) for e in ("email", "ip_address")}}
    if args.datatrove_python:
        corpus_path = work / "corpus.jsonl"
        with open(corpus_path, "w", encoding="utf-8") as f:
            for text in texts:
                f.write(json.dumps({"text": text}) + "\n")
        spec = {
            "corpus": str(corpus_path),
            "eval": str(EVAL),
            "repeat": args.repeat,
            "base_docs": len(base),
            "out": str(work / "datatrove.json"),
        }
        (work / "spec.json").write_text(json.dumps(spec))
        with harness.timed() as t:
            subprocess.run(
                [args.datatrove_python, str(Path(__file__).resolve()), "--datatrove-worker", str(work / "spec.json")],
                check=True,
            )
        dt = json.loads((work / "datatrove.json").read_text())
        baseline = "datatrove-PIIFormatter"
        results.insert(
            0,
            harness.Measurement(
                baseline,
                len(texts),
                text_bytes,
                min(dt["seconds"]),
                0.0,
                description="PIIFormatter.format per document (e-mail + public IPv4), own venv, one core",
                runs_seconds=[round(s, 3) for s in dt["seconds"]],
                others_busy_cores=t["others_busy_cores"],
            ),
        )
        quality["datatrove"] = scores(rows, dt["eval_spans"], ("email", "ip_address"))
        theirs = {tuple(x) for x in dt["corpus_spans"]}
        on_corpus["datatrove"] = {e: sum(1 for x in theirs if x[1] == e) for e in ("email", "ip_address")}
        on_corpus["both"] = {e: sum(1 for x in ours_corpus & theirs if x[1] == e) for e in ("email", "ip_address")}

    goals = [("mixforge-email-ip", 5.0)] if baseline else []
    for entity in ("email", "ip_address", "credit_card"):
        for metric in ("precision", "recall"):
            goals.append(("mixforge", 0.95, f"{entity} {metric} (frozen set)", quality["mixforge"][entity][metric]))
    harness.report(
        results,
        baseline,
        benchmark="pii",
        params={
            "target_mb": args.target_mb,
            "copies": copies,
            "docs": len(texts),
            "batch_rows": args.batch_rows,
            "threads": args.threads,
            "repeat": args.repeat,
            "corpus": origin,
        },
        goals=goals,
        extra={"quality": quality, "on_corpus": on_corpus},
        notes=[
            "one core each: Polars on --threads (default 1) and Arrow on one thread; datatrove is pure Python",
            "the frozen set was built before the detector, but by the same hand: its templates are synthetic "
            "(real sentences around them), so these figures are optimistic for web text",
            "datatrove has no IPv6, phone, card or IBAN: its IP recall counts IPv6 addresses it cannot find",
        ],
        json_out=args.json_out,
        print_json=args.json,
    )


if __name__ == "__main__":
    main()
