"""The export's vectorised paths (metadata prefixes, URL hosts, run ids and group figures) give exactly what
the previous row-by-row implementation gave: a whole export with metadata conditioning byte for byte, and
the pieces on values chosen to reach every fallback."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from mixforge.export import shuffle as X
from mixforge.export.build import ExportConfig, run_export
from mixforge.shards import read_parquet
from tests.mixforge.export import previous_shuffle as previous
from tests.mixforge.export.test_export import NAME, build, part_hashes

URLS = [
    "https://Web.Example.org/a/b?q=1#x",
    "http://example.com",
    "http://example.com:8080/",
    "HTTP://UPPER.EXAMPLE/",
    "ftp://files.example.net/pub",
    "https://user:pw@login.example.com/x",
    "http://[2001:db8::1]:80/p",
    "http://[::1",  # malformed: no host
    "https://bücher.example/",
    "https://xn--bcher-kva.example/ü",
    "//no-scheme.example/path",
    "no-scheme.example/path",
    "mailto:someone@example.com",
    "https://host.example:abc/",
    " https://spaced.example/ ",
    "https://tab\t.example/",
    "https://host.example/path with space",
    "https://%65xample.com/",
    "https://host.example%25eth0/",
    "",
    None,
    "https://",
    "https://a.b.c.d.e.example.co.uk/deep/path/..//x",
]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return build(str(tmp_path_factory.mktemp("vectorised")))


def test_export_with_metadata_conditioning_is_byte_identical_to_the_previous_implementation(store, monkeypatch):
    config = ExportConfig(
        format="megatron",
        metadata={"template": "{source} {{{domain}}}: {mix_group}\n\n", "phases": ["main"]},
        file_tokens=4_000,
        tag="new",
    )
    new = run_export(store, NAME, None, config)
    monkeypatch.setattr(X, "scatter", previous.scatter)
    monkeypatch.setattr(X, "gather", previous.gather)
    old = run_export(store, NAME, None, config.model_copy(update={"tag": "old"}))
    assert len(new["files"]) > 2 and part_hashes(new) == part_hashes(old)
    keep = ("phase", "part", "docs", "tokens", "groups", "group_docs", "lineage_sha256")
    assert [{k: e[k] for k in keep} for e in new["files"]] == [{k: e[k] for k in keep} for e in old["files"]]
    prefixes = {e["phase"]: pc.sum(read_parquet(e["lineage"]).column("prefix_tokens")).as_py() for e in new["files"]}
    assert prefixes["main"] > 0 and prefixes["anneal"] == 0  # conditioned in main only


def test_url_hosts_by_column_equal_urlsplit():
    got = X.url_host_array(pa.chunked_array([URLS[:7], URLS[7:]])).to_pylist()
    assert got == previous.url_hosts(URLS)
    assert got[:4] == ["web.example.org", "example.com", "example.com", "upper.example"]
    assert X.url_host_array(pa.array([], pa.string())).to_pylist() == []


def test_prefixes_by_column_equal_format_map_for_every_kind_of_field():
    n = len(URLS)
    table = pa.table(
        {
            "url": URLS,
            "source": pa.array([f"src-{i % 3}" if i % 5 else None for i in range(n)]).dictionary_encode(),
            "mix_group": [f"g{i}" if i % 4 else None for i in range(n)],
            "count": pa.array([i - 3 if i % 6 else None for i in range(n)], pa.int32()),
            "score": [i / 7 if i % 2 else None for i in range(n)],
            "flag": [bool(i % 2) if i % 3 else None for i in range(n)],
            "domain": ["column-not-used"] * n,  # {domain} is the URL's host, never this column
        }
    )
    templates = [
        "{domain}\n\n",
        "{source} | {mix_group} | {count} | {{literal}} ü\n",
        "{score} {flag}",  # floats and booleans: str() row by row
        "{count:>5}|{source!r}",  # a format spec, a conversion
        "no fields at all {{}}",
        "",
    ]
    for template in templates:
        got = X.render_prefixes(template, table)
        assert got == previous.render_prefixes(template, table), template
    assert X.render_prefixes("{domain}", table)[0] == "web.example.org"


def test_group_figures_and_run_ids_equal_the_loops():
    groups = pa.chunked_array([["b", None, "a"], ["b", "ä", None, "a"]])
    lengths = np.array([5, 1, 2, 3, 4, 6, 7], np.int64)
    assert X._group_figures(groups, lengths) == previous._group_figures(groups.to_pylist(), lengths)
    assert X._group_figures(pa.array([], pa.string()), np.zeros(0, np.int64)) == ({}, {})
    run_ids = ("run-a", None, "run-c")
    shards = pa.array([2, None, 0, 1, 2], pa.int32())
    got = pa.array(run_ids, pa.string()).take(shards).to_pylist()
    assert got == [None if s is None else run_ids[s] for s in shards.to_pylist()]
