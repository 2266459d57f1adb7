"""The artifacts a person opens in the Prefect UI, in a real browser: a `prefect server start`
subprocess with its UI, a small flow that publishes a mixture (card, weights, manifest), a classify
report and a run's table, and Debian's headless `chromium` driven over the DevTools protocol (no
browser download: the `websockets` client Prefect already depends on). Screenshots of each page are
left in the test's tmp_path (`--basetemp DIR` keeps them where you want them).

Chromium missing: skipped on a workstation, a failure under CI=true (.ci/run installs it)."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import free_port
from tests.helpers import prose

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1280,3200",
]


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        message = "Debian's chromium is not installed (apt-get install -y --no-install-recommends chromium)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_for(probe, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = probe()
            if value:
                return value
        except OSError:
            pass
        if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
            raise RuntimeError(f"{what}: gave up" + (f"\n{log.read_text()[-3000:]}" if log else ""))
        time.sleep(0.3)


@pytest.fixture(scope="module")
def prefect_ui(tmp_path_factory):
    """`prefect server start` with its UI on a free loopback port and its own SQLite database; the
    UI is told where the API is (it would assume port 4200)."""
    home = tmp_path_factory.mktemp("prefect-ui")
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        DO_NOT_TRACK="1",
        PREFECT_HOME=str(home / "home"),
        PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_API_URL=f"{origin}/api",
    )
    log = home / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
            + ["--ui", "--no-services"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(
            lambda: urllib.request.urlopen(f"{origin}/api/health", timeout=2).status == 200, 150, "server", proc, log
        )
        yield origin
    finally:
        stop(proc)


class Browser:
    """A headless chromium and one page of it, over the DevTools protocol."""

    def __init__(self, executable: str, profile: Path):
        from websockets.sync.client import connect

        self.proc = subprocess.Popen(
            [executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        active = profile / "DevToolsActivePort"  # chromium writes the port it chose here
        port = wait_for(lambda: active.is_file() and active.read_text().split("\n")[0], 30, "chromium", self.proc)

        def page():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                return next((t for t in json.load(r) if t["type"] == "page"), None)

        self.ws = connect(wait_for(page, 30, "chromium page", self.proc)["webSocketDebuggerUrl"], max_size=None)
        self.next_id = 0

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:  # events in between are not needed
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def open(self, url: str, ready: str, timeout: float = 60) -> object:
        """Navigate and wait until the JS expression `ready` is truthy; returns its value."""
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(ready)
            if value or time.monotonic() > deadline:
                return value
            time.sleep(0.3)

    def screenshot(self, path: Path) -> bytes:
        data = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        path.write_bytes(data)
        return data

    def close(self) -> None:
        self.ws.close()
        stop(self.proc)


# The PNG data-URI images on the page, once decoded by the browser (naturalWidth) and laid out (width).
IMAGES = """[...document.querySelectorAll('img')].filter(i => i.src.startsWith('data:image/png;base64,'))
  .map(i => ({alt: i.alt, loaded: i.complete && i.naturalWidth > 0, width: i.getBoundingClientRect().width}))"""


def images_ready(count: int) -> str:
    return f"(() => {{ const a = {IMAGES}; return a.length >= {count} && a.every(i => i.loaded) ? a : null; }})()"


def text_ready(*needles: str) -> str:
    test = " && ".join(f"t.includes({json.dumps(n)})" for n in needles)
    return f"(() => {{ const t = document.body ? document.body.innerText : ''; return {test} ? t : null; }})()"


def write_pool(root: Path) -> str:
    """A small curated pool: one Parquet shard of two sources."""
    rows = [
        {
            "id": f"d{k}",
            "text": prose(k, 2 + k % 6),
            "source": ("web", "books")[k % 2],
            "url": f"https://example.org/{k}",
            "quality_score": (k * 37 % 100) / 100,
        }
        for k in range(120)
    ]
    pool = root / "runs" / "run-ui" / "dedup"
    pool.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), pool / "part-00000.parquet")
    return str(pool)


def publish_everything(store: Path, pool: str) -> None:
    """A flow run on the server under test that publishes each kind of artifact the UI shows."""
    from prefect import flow

    from mixforge.classify import report as rp
    from mixforge.mixtures.build import build_mixture
    from mixforge.mixtures.spec import MixSpec
    from mixforge.mixtures.versions import read_manifest
    from tasks.mix import publish_mixture_artifacts
    from tasks.reporting import publish_classify_report, publish_run_artifacts

    @flow(name="ui-artifacts")
    def ui_artifacts():
        spec = MixSpec.model_validate(
            {
                "name": "ui-mix",
                "pool": pool,
                "store": str(store),
                "seed": 3,
                "budget_tokens": 3_000,
                "groups": [
                    {"name": "web", "where": {"source": "web"}, "weight": 0.6},
                    {"name": "books", "where": {"source": "books"}, "weight": 0.4},
                ],
            }
        )
        build_mixture(spec)  # in-process (SerialExecutor): the publishing is what is under test
        publish_mixture_artifacts(read_manifest(str(store), "ui-mix"), str(store))

        table = pq.read_table(pool, columns=["source", "quality_score"])
        figures = rp.table_figures(table, ["quality_score"], ["source"], bins=10)
        report = rp.final_report(figures, ["quality_score"], ["source"], bins=10, max_sources=5)
        stage_dir = store / "runs" / "run-ui" / "classify"
        plots = rp.write_plots(report, str(stage_dir / "_plots"))
        markdown = stage_dir / "_report.md"
        markdown.write_text(rp.markdown_report(report, {}, plots))
        publish_classify_report("run-ui", str(markdown), plots)

        stage = {"docs_in": 120, "quarantined": [], "seconds": 1.0, "workers": 2, "worker_busy_share": 0.9}
        summary = {
            "run_id": "run-ui",
            "output": str(stage_dir),
            "stages": [
                {**stage, "name": "normalize", "docs_kept": 117, "docs_dropped": {"empty_text": 3}},
                {**stage, "name": "filter", "docs_in": 117, "docs_kept": 110, "docs_dropped": {"gopher.short": 7}},
            ],
        }
        publish_run_artifacts("curate", summary)

    ui_artifacts()


def test_artifacts_render_in_the_prefect_ui(chromium, prefect_ui, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    store = tmp_path / "store"
    with temporary_settings(updates={PREFECT_API_URL: f"{prefect_ui}/api"}):
        publish_everything(store, write_pool(tmp_path / "pool"))
        with get_client(sync_client=True) as client:
            latest = {a.key: a for a in client.read_artifacts() if a.key}
    assert {"mixture-ui-mix", "mixture-ui-mix-card", "mixture-ui-mix-manifest", "classify-run-ui"} <= set(latest)

    browser = Browser(chromium, tmp_path / "chromium-profile")
    try:
        shots = {}
        for key, count in (("mixture-ui-mix-card", 4), ("classify-run-ui", 2)):
            page = f"{prefect_ui}/artifacts/artifact/{latest[key].id}"
            images = browser.open(page, images_ready(count))
            shots[key] = browser.screenshot(tmp_path / f"{key}.png")
            # every plot decoded by the browser and laid out at a readable size
            assert images and len(images) == count, (key, browser.evaluate("document.body.innerText")[:2000])
            assert all(i["loaded"] and i["width"] >= 300 for i in images), images
        assert {i["alt"] for i in browser.open(page, images_ready(2))} == {"hist_quality_score", "dist_source"}

        manifest = str(store / "mixtures" / "ui-mix" / "v0001" / "manifest.json")
        text = browser.open(
            f"{prefect_ui}/artifacts/artifact/{latest['mixture-ui-mix-manifest'].id}", text_ready(manifest)
        )
        shots["manifest"] = browser.screenshot(tmp_path / "mixture-ui-mix-manifest.png")
        assert text and "file://" not in text and "Can't connect" not in text

        table = f"{prefect_ui}/artifacts/artifact/{latest['curate-run-ui'].id}"
        text = browser.open(table, text_ready("dropped: empty_text", "dropped: gopher.short"))
        shots["table"] = browser.screenshot(tmp_path / "curate-run-ui.png")
        assert text, browser.evaluate("document.body.innerText")[:2000]
    finally:
        browser.close()

    from PIL import Image

    for name, png in shots.items():  # real renders: a full window, not a blank one
        image = Image.open(io.BytesIO(png))
        assert image.width == 1280 and image.height > 2000, (name, image.size)
        assert len(image.convert("L").getcolors(1 << 16) or []) > 50, name
