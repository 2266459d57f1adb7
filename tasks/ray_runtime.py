"""Connecting to Ray: a local Ray by default, an existing cluster when one is named.

When a cluster address is given (config or RAY_ADDRESS) and cannot be reached, this fails;
it never silently falls back to a local Ray.
"""

from __future__ import annotations

import logging
import os

import ray

from mixforge.config import RayConfig

log = logging.getLogger("mixforge")


def resolve_address(cfg: RayConfig) -> str | None:
    address = cfg.address or os.environ.get("RAY_ADDRESS") or None
    return None if address in (None, "", "local") else address


def connect(cfg: RayConfig) -> None:
    """Initialise Ray once per process (idempotent)."""
    if ray.is_initialized():
        return
    address = resolve_address(cfg)
    if address is None:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        # RAY_ADDRESS may be "local" here; ray.init would otherwise read it again.
        os.environ.pop("RAY_ADDRESS", None)
        ray.init(address="local", num_cpus=cfg.num_cpus, include_dashboard=False,
                 object_store_memory=cfg.object_store_memory_mb << 20, log_to_driver=True,
                 configure_logging=False)
        log.info("started a local Ray with %s CPUs", int(ray.cluster_resources().get("CPU", 0)))
    else:
        ray.init(address=address, configure_logging=False)
        log.info("joined Ray cluster at %s (%s CPUs)", address, int(ray.cluster_resources().get("CPU", 0)))


def cluster_cpus() -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))
