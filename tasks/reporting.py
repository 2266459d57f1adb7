"""Run summaries as Prefect artifacts: a table of per-stage counts and a markdown summary; the
helpers every markdown artifact goes through so a person can see it in the Prefect UI: images
embedded as data URIs (`embed_images`) and links a browser opens (`location`)."""

from __future__ import annotations

import base64
import io
import logging
import os
import posixpath
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from mixforge import storage
from mixforge.names import artifact_key
from mixforge.runner import quarantine_rows

log = logging.getLogger(__name__)

# Prefect 3.9's server sets no limit on an artifact's data (its size settings bound flow parameters,
# `server.api.max_parameter_size` = 512 KiB, and events, `server.events.maximum_size_bytes` = 1.5 MB),
# but the UI loads an artifact whole and the database keeps every version: the images of one artifact
# stay under 1 MiB of base64, each under 256 KiB of PNG (downscaled above that).
MAX_IMAGE_BYTES = 256 << 10
MAX_EMBEDDED_CHARS = 1 << 20
# S3 presigned URLs (SigV4) are valid for at most 7 days.
LINK_EXPIRY = timedelta(days=7)

_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def embed_images(markdown: str, base_uri: str, storage_options: Mapping[str, Any] | None = None) -> str:
    """`markdown` with every stored image (`![alt](target)`, target relative to the folder of
    `base_uri`, the file the markdown came from, or a full URI) replaced by a PNG data URI, read
    through the store: the Prefect UI cannot resolve paths. An image too big or missing becomes a note."""
    folder = base_uri.rstrip("/").rsplit("/", 1)[0] if "/" in base_uri else "."
    embedded = 0

    def replace(m: re.Match) -> str:
        nonlocal embedded
        alt, target = m.group(1), m.group(2)
        if target.startswith(("data:", "http://", "https://")):
            return m.group(0)
        uri = target if "://" in target or posixpath.isabs(target) else storage.join(folder, target)
        try:
            png = _png_within(_read(uri, storage_options), MAX_IMAGE_BYTES)
        except FileNotFoundError:
            return f"*(plot {alt or target} not found: `{uri}`)*"
        if png is None:
            return f"*(plot {alt or target} not embedded: not a PNG, or too large even downscaled: `{uri}`)*"
        data = base64.b64encode(png).decode()
        if embedded + len(data) > MAX_EMBEDDED_CHARS:
            return f"*(plot {alt or target} not embedded: this artifact holds its size limit of images: `{uri}`)*"
        embedded += len(data)
        return f"![{alt}](data:image/png;base64,{data})"

    return _IMAGE.sub(replace, markdown)


def _read(uri: str, storage_options: Mapping[str, Any] | None) -> bytes:
    return storage.read_bytes(uri, storage_options)


def _png_within(data: bytes, max_bytes: int) -> bytes | None:
    """The PNG itself when small enough, else downscaled by halves until it is (None: not a PNG, or
    still too large at 200 pixels wide)."""
    if not data.startswith(_PNG_SIGNATURE):
        return None
    if len(data) <= max_bytes:
        return data
    from PIL import Image  # matplotlib's own dependency

    image = Image.open(io.BytesIO(data))
    while image.width > 200:
        image = image.resize((image.width // 2, max(1, image.height // 2)), Image.LANCZOS)
        buf = io.BytesIO()
        image.save(buf, format="PNG", optimize=True)
        if buf.tell() <= max_bytes:
            return buf.getvalue()
    return None


def location(uri: str, storage_options: Mapping[str, Any] | None = None, now: datetime | None = None) -> str:
    """Markdown for a stored file that a person can open from the Prefect UI: on a local store its
    absolute path in backticks, to copy (a web page's file:// links do not open); on an object store
    a presigned https URL, its expiry stated beside it, and the URI."""
    fs, path = storage.filesystem(uri, storage_options)
    if storage.is_local(fs):
        return f"`{os.path.abspath(path)}`"
    try:
        url = fs.sign(path, expiration=int(LINK_EXPIRY.total_seconds()))
    except Exception as e:  # a store or credentials that cannot sign: the link is a convenience, the run is done
        log.warning("no presigned link for %s (%s: %s)", uri, type(e).__name__, e)
        return f"`{uri}` (no presigned link: {type(e).__name__})"
    expires = (now or datetime.now(UTC)) + LINK_EXPIRY
    return (
        f"[{posixpath.basename(path)}]({url}) (presigned link, valid until {expires:%Y-%m-%d %H:%M} UTC, "
        f"or sooner if the credentials that signed it expire first): `{uri}`"
    )


def stage_rows(summary: dict) -> list[dict]:
    """One row per stage, one column per number: each drop (and skip) reason of the run is a column
    of every row (0 where that stage did not use it), so the table sorts and compares."""
    dropped = list(dict.fromkeys(k for s in summary["stages"] for k in s["docs_dropped"]))
    skipped = list(dict.fromkeys(k for s in summary["stages"] for k in s.get("docs_skipped", {})))
    rows = []
    for s in summary["stages"]:
        rows.append(
            {
                "stage": s["name"],
                "docs_in": s["docs_in"],
                "docs_kept": s["docs_kept"],
                "docs_dropped": sum(s["docs_dropped"].values()),
                "shards_quarantined": len(s["quarantined"]),
                "seconds": s["seconds"],
                # the workers that ran shards this time and how busy they were (low: stragglers, uneven shards)
                "workers": s.get("workers"),
                "worker_busy_share": s.get("worker_busy_share"),
                "worker_peak_rss_mb": s.get("worker_peak_rss_mb"),
                # after the totals, which stay in view in the UI however many reasons there are
                **{f"dropped: {k}": s["docs_dropped"].get(k, 0) for k in dropped},
                # a generating stage (rephrase) passes some inputs over without dropping them
                **{f"skipped: {k}": s.get("docs_skipped", {}).get(k, 0) for k in skipped},
            }
        )
    return rows


def markdown_summary(summary: dict) -> str:
    lines = [f"# Run `{summary['run_id']}`", "", f"Final output: `{summary['output']}`", ""]
    lines += [
        "| stage | docs in | kept | dropped | quarantined shards | seconds | workers busy |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in stage_rows(summary):
        busy = "-" if r["worker_busy_share"] is None else f"{r['worker_busy_share']:.0%} of {r['workers']}"
        lines.append(
            f"| {r['stage']} | {r['docs_in']:,} | {r['docs_kept']:,} | {r['docs_dropped']:,} "
            f"| {r['shards_quarantined']} | {r['seconds']:.1f} | {busy} |"
        )
    for s in summary["stages"]:
        if s["docs_dropped"] or s.get("docs_skipped"):
            lines += [
                "",
                f"## {s['name']}: dropped (or skipped) by reason, in check order (the funnel)",
                "",
                "| reason | docs | chars | docs remaining |",
                "|---|---:|---:|---:|",
            ]
            for step in s.get("funnel", []):
                reason = f"`{step['reason']}`" + (" (skipped)" if step.get("skipped") else "")
                lines.append(f"| {reason} | {step['docs']:,} | {step['chars']:,} | {step['docs_remaining']:,} |")
        if s["quarantined"]:
            lines += ["", f"## {s['name']}: quarantined shards", ""]
            lines += [f"- `{q['shard']}`: {q['error']} ({quarantine_rows(q)})" for q in s["quarantined"]]
    inputs = summary.get("inputs") or {}
    if inputs.get("skipped"):
        # what input discovery left out (storage.discover_inputs), so nothing is missing without a word
        lines += ["", f"## Inputs skipped ({len(inputs['skipped'])})", "", "| input | reason |", "|---|---|"]
        lines += [f"| `{s['uri']}` | {s['reason']} |" for s in inputs["skipped"][:200]]
        if len(inputs["skipped"]) > 200:
            lines.append(f"| ... | {len(inputs['skipped']) - 200} more |")
    return "\n".join(lines) + "\n"


@task(name="publish-run-artifacts", cache_policy=NO_CACHE)
def publish_run_artifacts(flow_name: str, summary: dict) -> None:
    key = artifact_key(flow_name, summary["run_id"])
    create_table_artifact(
        key=key, table=stage_rows(summary), description=f"{flow_name} {summary['run_id']}: per-stage counts"
    )
    create_markdown_artifact(
        key=artifact_key(key, "summary"), markdown=markdown_summary(summary), description=f"{flow_name} run summary"
    )


def publish_stage_report(run_id: str, summary: dict, storage_options: Mapping[str, Any] | None = None) -> None:
    """A stage's own report as a markdown artifact, for stages that write one (classify's
    `_report.md`: score histograms per source, domain/cluster distribution, its plots;
    decontaminate's: contamination per benchmark and source, with examples)."""
    info = summary.get("classify") or {}
    if info.get("markdown"):
        publish_classify_report(run_id, info["markdown"], info.get("plots") or [], storage_options)
    decontam = summary.get("decontaminate") or {}
    if decontam.get("markdown"):
        publish_markdown_report(
            "decontaminate",
            run_id,
            decontam["markdown"],
            "contaminated documents and tokens per benchmark and source, with examples",
            storage_options,
        )


@task(name="publish-markdown-report", cache_policy=NO_CACHE)
def publish_markdown_report(
    stage: str, run_id: str, markdown_uri: str, description: str, storage_options: Mapping[str, Any] | None = None
) -> None:
    """A stage's `_report.md` as it is (no plots) as the markdown artifact `<stage>-<run id>`."""
    create_markdown_artifact(
        key=artifact_key(stage, run_id),
        markdown=_read(markdown_uri, storage_options).decode(),
        description=f"{stage} {run_id}: {description}",
    )


def classify_report_markdown(
    markdown_uri: str, plots: Sequence[str] = (), storage_options: Mapping[str, Any] | None = None
) -> str:
    """The classify report as the UI shows it: each plot the report lists by URI shown as the image
    (embedded), with where it is stored beneath."""
    text = _read(markdown_uri, storage_options).decode()
    for uri in plots:
        name = posixpath.basename(uri).removesuffix(".png")
        text = text.replace(f"- `{uri}`\n", f"![{name}]({uri})\n\n{location(uri, storage_options)}\n\n", 1)
    return embed_images(text, markdown_uri, storage_options)


@task(name="publish-classify-report", cache_policy=NO_CACHE)
def publish_classify_report(
    run_id: str, markdown_uri: str, plots: Sequence[str] = (), storage_options: Mapping[str, Any] | None = None
) -> None:
    create_markdown_artifact(
        key=artifact_key("classify", run_id),
        markdown=classify_report_markdown(markdown_uri, plots, storage_options),
        description=f"classify {run_id}: score histograms per source, domain/cluster distribution",
    )
