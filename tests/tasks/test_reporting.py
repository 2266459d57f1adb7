"""What the Prefect artifacts show a person (tasks/reporting.py, tasks/mix.py): images embedded as
PNG data URIs read through the store, links a browser opens, one table column per number. The
same artifacts in a real Prefect UI in a real browser: tests/test_ui_browser.py."""

from __future__ import annotations

import base64
import io
import re
import urllib.parse
import urllib.request
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from mixforge import storage
from mixforge.classify import report as rp
from tasks.reporting import (
    MAX_EMBEDDED_CHARS,
    MAX_IMAGE_BYTES,
    classify_report_markdown,
    embed_images,
    location,
    stage_rows,
)

DATA_URI = re.compile(r"!\[([^\]]*)\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)")


def png(width: int, height: int, noise: bool = False, seed: int = 0) -> bytes:
    """A PNG; random noise does not compress, so its size is about 3 bytes a pixel."""
    if noise:
        pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    else:
        pixels = np.full((height, width, 3), 200, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def embedded(markdown: str) -> dict[str, bytes]:
    return {alt: base64.b64decode(data) for alt, data in DATA_URI.findall(markdown)}


def test_stage_rows_one_column_per_reason():
    summary = {
        "stages": [
            {
                "name": "normalize",
                "docs_in": 10,
                "docs_kept": 7,
                "docs_dropped": {"empty_text": 2, "invalid_json": 1},
                "quarantined": [],
                "seconds": 1.5,
            },
            {
                "name": "rephrase",
                "docs_in": 7,
                "docs_kept": 9,
                "docs_dropped": {"empty_text": 1},
                "docs_skipped": {"too_long": 3},
                "quarantined": [{"shard": "x"}],
                "seconds": 2.0,
                "workers": 2,
                "worker_busy_share": 0.5,
            },
        ]
    }
    rows = stage_rows(summary)
    assert [list(r) for r in rows] == [list(rows[0])] * 2  # every row has every column, in one order
    assert rows[0]["dropped: empty_text"] == 2 and rows[0]["dropped: invalid_json"] == 1
    assert rows[1]["dropped: empty_text"] == 1 and rows[1]["dropped: invalid_json"] == 0
    assert rows[0]["skipped: too_long"] == 0 and rows[1]["skipped: too_long"] == 3
    assert rows[1]["docs_dropped"] == 1 and rows[1]["shards_quarantined"] == 1
    assert all(isinstance(v, str) is (k == "stage") for r in rows for k, v in r.items() if v is not None)


def test_embed_images_reads_relative_and_absolute_paths_and_notes_the_rest(tmp_path):
    folder = tmp_path / "v0001"
    folder.mkdir()
    weights, other = png(40, 30), png(20, 10)
    (folder / "weights.png").write_bytes(weights)
    (tmp_path / "other.png").write_bytes(other)
    (folder / "notes.txt").write_text("not an image")
    markdown = (
        "# card\n\n![weights](weights.png)\n![other](" + str(tmp_path / "other.png") + ")\n"
        "![gone](lengths.png)\n![text](notes.txt)\n![web](https://example.org/x.png)\n"
    )
    out = embed_images(markdown, str(folder / "README.md"))
    assert embedded(out) == {"weights": weights, "other": other}
    assert f"*(plot gone not found: `{folder}/lengths.png`)*" in out
    assert f"*(plot text not embedded: not a PNG, or too large even downscaled: `{folder}/notes.txt`)*" in out
    assert "![web](https://example.org/x.png)" in out  # already a link a browser opens
    assert out.startswith("# card\n\n")


def test_embed_images_downscales_a_large_plot_and_caps_the_artifact(tmp_path):
    big = png(1024, 768, noise=True)
    assert len(big) > MAX_IMAGE_BYTES
    (tmp_path / "big.png").write_bytes(big)
    (out,) = embedded(embed_images("![big](big.png)", str(tmp_path / "README.md"))).values()
    assert len(out) <= MAX_IMAGE_BYTES
    image = Image.open(io.BytesIO(out))
    assert image.format == "PNG" and image.width < 1024 and image.width / image.height == pytest.approx(4 / 3)

    # Each fits alone (about 200 KiB); together they pass the artifact's budget: the rest are named.
    names = [f"p{i}" for i in range(6)]
    for i, name in enumerate(names):
        (tmp_path / f"{name}.png").write_bytes(png(270, 250, noise=True, seed=i))
    out = embed_images("\n".join(f"![{n}]({n}.png)" for n in names), str(tmp_path / "README.md"))
    shown = embedded(out)
    assert 0 < len(shown) < len(names) and list(shown) == names[: len(shown)]
    assert sum(len(base64.b64encode(b)) for b in shown.values()) <= MAX_EMBEDDED_CHARS
    assert out.count("this artifact holds its size limit of images") == len(names) - len(shown)


def test_location_local_is_an_absolute_path_to_copy_and_unsigned_stores_the_uri(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert location("store/mixtures/m/v0001/manifest.json") == f"`{tmp_path}/store/mixtures/m/v0001/manifest.json`"
    assert "file://" not in location(f"file://{tmp_path}/manifest.json")
    # a store that cannot sign: the URI, and why there is no link (publishing goes on)
    assert (
        location("memory://m/manifest.json") == "`memory://m/manifest.json` (no presigned link: NotImplementedError)"
    )


def test_s3_presigned_link_opens_and_images_read_from_s3(s3_bucket):
    root, options = s3_bucket
    manifest = f"{root}/mixtures/m/v0001/manifest.json"
    storage.write_bytes(manifest, b'{"version": "v0001"}', options)
    plot = png(30, 20)
    storage.write_bytes(f"{root}/mixtures/m/v0001/weights.png", plot, options)

    when = datetime(2030, 1, 2, 3, 4, tzinfo=UTC)
    text = location(manifest, options, now=when)
    url = re.fullmatch(r"\[manifest\.json\]\((\S+)\) \(presigned link, valid until (.+?) UTC, .*: `(.+)`", text)
    assert url and url.group(2) == "2030-01-09 03:04" and url.group(3) == manifest
    # signed for 7 days (SigV4 states the lifetime, SigV2 the moment it ends)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url.group(1)).query)
    if "X-Amz-Expires" in query:
        assert query["X-Amz-Expires"] == ["604800"] and "X-Amz-Signature" in query
    else:
        assert abs(int(query["Expires"][0]) - (datetime.now(UTC).timestamp() + 604800)) < 120 and "Signature" in query
    with urllib.request.urlopen(url.group(1), timeout=10) as r:  # no credentials: the URL itself opens it
        assert r.read() == b'{"version": "v0001"}'

    out = embed_images("![weights](weights.png)", f"{root}/mixtures/m/v0001/README.md", options)
    assert embedded(out) == {"weights": plot}


def test_classify_report_shows_its_plots(tmp_path):
    table = pa.table(
        {
            "source": ["web", "web", "books", "books", "books"],
            "quality_score": [0.1, 0.8, 0.5, 0.55, 0.9],
            "domain": ["news", "science", "news", "news", "fiction"],
        }
    )
    figures = rp.table_figures(table, ["quality_score"], ["domain"], bins=10)
    report = rp.final_report(figures, ["quality_score"], ["domain"], bins=10, max_sources=5)
    plots = rp.write_plots(report, str(tmp_path / "_plots"))
    markdown_uri = str(tmp_path / "_report.md")
    models = {"quality": {"kind": "fasttext", "version": "v1", "uri": "/models/q"}}
    storage.write_bytes(markdown_uri, rp.markdown_report(report, models, plots).encode())

    out = classify_report_markdown(markdown_uri, plots)
    shown = embedded(out)
    assert shown == {"hist_quality_score": open(plots[0], "rb").read(), "dist_domain": open(plots[1], "rb").read()}
    for uri in plots:  # where each plot is stored, to copy, under its image; no bare URI list left
        assert f"\n`{uri}`\n" in out and f"- `{uri}`" not in out
    assert "| web | 2 |" in out  # the report's own tables are kept
