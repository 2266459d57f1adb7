"""A local Prefect server that `mixforge` commands share, so a small job does not pay a server's start.

Without `PREFECT_API_URL`, Prefect starts a temporary API server for every command and stops it at
exit: 10-20 s of a command whose work may take 3. Instead, the first command starts one server in
the background (its own session: it outlives the command) and records it in
`$PREFECT_HOME/mixforge-server.json`; later commands find it there and connect at once. It stops
by itself after `MIXFORGE_PREFECT_SERVER_IDLE_S` seconds (default 900) without a request, while a
command keeps it alive by asking its health every few seconds. Its UI shows every local run.

    MIXFORGE_PREFECT_SERVER=shared     (default) start or reuse the shared local server
    MIXFORGE_PREFECT_SERVER=temporary  Prefect's own temporary server, stopped at exit (as before 0.3)
    PREFECT_API_URL=...                a server you run: used as is, nothing is started

`mixforge server status` says which server the commands use; `mixforge server stop` stops it.
Prefect itself is imported only in the server process: the check that a server is running (a
state file, a process check shared with the run leases, one health request) costs milliseconds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from mixforge.lease import pid_alive

log = logging.getLogger("mixforge")

MODE_ENV = "MIXFORGE_PREFECT_SERVER"
IDLE_ENV = "MIXFORGE_PREFECT_SERVER_IDLE_S"
IDLE_DEFAULT_S = 900.0
# Set in a command's environment when it talks to the shared server (heartbeats stay off, as with
# a temporary server: nothing there watches for crashed runs).
SHARED_MARK_ENV = "MIXFORGE_SHARED_PREFECT_SERVER"
KEEPALIVE_S = 20.0


def mode() -> str:
    """`external` (PREFECT_API_URL is set), `shared` or `temporary`."""
    if os.environ.get("PREFECT_API_URL") and not os.environ.get(SHARED_MARK_ENV):
        return "external"
    asked = os.environ.get(MODE_ENV, "shared").strip().lower() or "shared"
    if asked not in ("shared", "temporary"):
        raise ValueError(f"{MODE_ENV}={asked!r}: expected shared or temporary")
    return asked


def prefect_home() -> Path:
    return Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()


def state_path() -> Path:
    return prefect_home() / "mixforge-server.json"


def _prefect_version() -> str:
    from importlib.metadata import version

    return version("prefect")


@dataclass(frozen=True)
class Server:
    pid: int
    port: int
    prefect: str  # the Prefect version that serves it: another version's client starts its own

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"


def _read_state() -> Server | None:
    try:
        data = json.loads(state_path().read_text())
        return Server(int(data["pid"]), int(data["port"]), str(data["prefect"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def healthy(server: Server, timeout_s: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{server.api_url}/health", timeout=timeout_s) as response:
            return response.status == 200
    except OSError:
        return False


def running() -> Server | None:
    """The shared server of this PREFECT_HOME when it is up and of this Prefect version."""
    server = _read_state()
    if server is None or server.prefect != _prefect_version() or not pid_alive(server.pid):
        return None
    return server if healthy(server) else None


@contextlib.contextmanager
def _locked():
    """One command at a time decides whether to start the server (two would start two)."""
    import fcntl

    prefect_home().mkdir(parents=True, exist_ok=True)
    with open(prefect_home() / "mixforge-server.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Starting:
    """A server being started: `wait()` returns it once it answers (or raises with its log)."""

    def __init__(self, server: Server, process: subprocess.Popen | None, log_path: Path) -> None:
        self.server, self.process, self.log_path = server, process, log_path

    def wait(self, timeout_s: float | None = None) -> Server:
        timeout_s = timeout_s or float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", 240))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if healthy(self.server, timeout_s=2.0):
                return self.server
            if self.process is not None and self.process.poll() is not None:
                break
            time.sleep(0.05)
        tail = self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""
        exited = self.process is not None and self.process.poll() is not None
        raise RuntimeError(
            "the shared local Prefect server "
            + (f"exited with code {self.process.returncode}" if exited else f"did not start within {timeout_s:.0f} s")
            + f" (log: {self.log_path}); set {MODE_ENV}=temporary to use Prefect's temporary server.\n{tail}"
            f"(log: {self.log_path}); set {MODE_ENV}=temporary to use Prefect's temporary server.\n{tail}"
        )


def start_or_reuse() -> Starting:
    """The running shared server, or one started now in the background (not waited for: call
    `.wait()` when the API is needed, so the start overlaps the command's own start-up)."""
    with _locked():
        server = running()
        if server is not None:
            return Starting(server, None, prefect_home() / "mixforge-server.log")
        server = Server(pid=0, port=_free_port(), prefect=_prefect_version())
        log_path = prefect_home() / "mixforge-server.log"
        idle_s = float(os.environ.get(IDLE_ENV, IDLE_DEFAULT_S))
        env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", SHARED_MARK_ENV)}
        with open(log_path, "ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "mixforge.prefect_server", "serve", str(server.port), str(idle_s)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=env,
                start_new_session=True,  # not in the command's process group: Ctrl-C stops the run only
                close_fds=True,
            )
        server = Server(process.pid, server.port, server.prefect)
        tmp = state_path().with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"pid": server.pid, "port": server.port, "prefect": server.prefect}))
        os.replace(tmp, state_path())
        log.info(
            "starting the shared local Prefect server at %s (later commands reuse it; it stops after %.0f s idle)",
            server.url,
            idle_s,
        )
        return Starting(server, process, log_path)


def use(server: Server) -> None:
    """Point this process (and the processes it starts) at the shared server. Must run before
    Prefect is imported: its settings are read from the environment then."""
    os.environ["PREFECT_API_URL"] = server.api_url
    os.environ[SHARED_MARK_ENV] = "1"


class KeepAlive:
    """While a command runs, ask the server's health now and then, so its idle clock never stops a
    long stage whose tasks talk to the API only at their ends."""

    def __init__(self, server: Server, every_s: float = KEEPALIVE_S) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(server, every_s), daemon=True, name="prefect-keepalive"
        )
        self._thread.start()

    def _run(self, server: Server, every_s: float) -> None:
        while not self._stop.wait(every_s):
            healthy(server, timeout_s=5.0)

    def stop(self) -> None:
        self._stop.set()


def stop() -> Server | None:
    """Stop the shared server of this PREFECT_HOME (the one it records); None when none was running."""
    import signal

    with _locked():
        server = _read_state()
        with contextlib.suppress(FileNotFoundError):
            state_path().unlink()
        if server is None or not pid_alive(server.pid):
            return None
        os.kill(server.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while pid_alive(server.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_alive(server.pid):
            os.kill(server.pid, signal.SIGKILL)
        return server


def serve(port: int, idle_s: float) -> None:
    """The server process: Prefect's API app (as its temporary server runs it) under uvicorn, stopping
    after `idle_s` seconds without a request."""
    os.environ.setdefault("PREFECT__SERVER_EPHEMERAL", "1")  # the services a temporary server runs
    os.environ.setdefault("PREFECT__SERVER_FINAL", "1")
    import uvicorn
    from prefect.server.api.server import create_app

    app = create_app()
    last_request = [time.monotonic()]

    async def counted(scope, receive, send):
        if scope["type"] == "http":
            last_request[0] = time.monotonic()
        await app(scope, receive, send)

    server = uvicorn.Server(uvicorn.Config(counted, host="127.0.0.1", port=port, log_level="error", lifespan="on"))

    def idle_watch() -> None:
        while not server.started and not server.should_exit:  # the idle clock starts once it serves
            time.sleep(0.1)
        last_request[0] = max(last_request[0], time.monotonic())
        while not server.should_exit:
            time.sleep(min(5.0, idle_s / 4))
            if time.monotonic() - last_request[0] > idle_s:
                server.should_exit = True

    threading.Thread(target=idle_watch, daemon=True).start()
    server.run()
    with contextlib.suppress(OSError, ValueError):  # forget it, unless a newer server took its place
        if json.loads(state_path().read_text()).get("pid") == os.getpid():
            state_path().unlink()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "serve":
        serve(int(sys.argv[2]), float(sys.argv[3]))
    else:
        raise SystemExit("usage: python -m mixforge.prefect_server serve PORT IDLE_S")
