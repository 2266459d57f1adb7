"""Connecting to Ray: a local Ray by default, an existing cluster when one is named.

When a cluster address is given (config or RAY_ADDRESS) and cannot be reached, this fails;
it never silently falls back to a local Ray.
"""

from __future__ import annotations

import logging
import os
import socket

from mixforge import interrupts
from mixforge.config import RayConfig

log = logging.getLogger("mixforge")


def resolve_address(cfg: RayConfig) -> str | None:
    address = cfg.address or os.environ.get("RAY_ADDRESS") or None
    return None if address in (None, "", "local") else address


class RayClusterUnreachable(ConnectionError):
    pass


def check_reachable(address: str, timeout_s: float | None = None) -> None:
    """Fail fast when nothing listens at a cluster address.

    `ray.init(address=...)` on an address with nothing behind it retries for many minutes
    before giving up; a run that asked for a cluster must fail clearly instead (and never fall
    back to a local Ray). `auto` needs no check: ray.init fails at once without a local cluster.
    """
    if address == "auto":
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"Ray address {address!r}: expected host:port, ray://host:port or auto")
    timeout_s = timeout_s if timeout_s is not None else float(os.environ.get("MIXFORGE_RAY_CONNECT_TIMEOUT_S", "10"))
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise RayClusterUnreachable(
            f"Ray cluster at {address} is not reachable ({e.strerror or e}); not starting a local Ray. "
            "Check RAY_ADDRESS / ray.address, or unset both to run on a local Ray."
        ) from None


def connect(cfg: RayConfig) -> None:
    """Initialise Ray once per process (idempotent)."""
    import ray  # here, not at the top: a job in the local pool never imports Ray

    if ray.is_initialized():
        return
    address = resolve_address(cfg)
    if address is None:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        # RAY_ADDRESS may be "local" here; ray.init would otherwise read it again.
        os.environ.pop("RAY_ADDRESS", None)
        ray.init(
            address="local",
            num_cpus=cfg.num_cpus,
            include_dashboard=False,
            object_store_memory=cfg.object_store_memory_mb << 20,
            log_to_driver=True,
            configure_logging=False,
            runtime_env=cfg.runtime_env,
        )
        log.info("started a local Ray with %s CPUs", int(ray.cluster_resources().get("CPU", 0)))
    else:
        check_reachable(address)
        # runtime_env (e.g. a working_dir) ships code to a cluster whose image predates it.
        ray.init(address=address, configure_logging=False, runtime_env=cfg.runtime_env)
        log.info("joined Ray cluster at %s (%s CPUs)", address, int(ray.cluster_resources().get("CPU", 0)))
    interrupts.reinstall()  # ray.init replaced the SIGTERM handler: a signal must still end the run cleanly
    if cfg.runtime_env:
        log.info("Ray job runtime_env: %s", sorted(cfg.runtime_env))


def cluster_cpus() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))
