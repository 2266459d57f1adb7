"""export: a mixture version -> training-ready token files (Megatron .bin/.idx, npy memmaps) with lineage."""

from __future__ import annotations

from typing import Annotated

from prefect import flow, get_run_logger
from pydantic import Field

from flows.parameters import StoreUri
from mixforge.config import RayConfig
from mixforge.export.build import ExportConfig
from mixforge.storage import StorageOptions  # credentials refused: flow parameters are stored in plain text
from tasks.export import export_version, publish_export_artifacts

__all__ = ["export", "EXPORT_EXAMPLE"]

EXPORT_EXAMPLE = {
    "format": "megatron",
    "tokenizer": {"kind": "tiktoken", "name": "cl100k_base"},
    "seed": 0,
    "metadata": {"template": "{domain}\n\n", "phases": ["main"]},
}


@flow(name="export", validate_parameters=True)
def export(
    store: StoreUri,
    name: Annotated[str, Field(examples=["web-books"])],
    version: Annotated[str | None, Field(examples=["v0003"])] = None,
    config: Annotated[ExportConfig, Field(examples=[EXPORT_EXAMPLE])] = ExportConfig(),
    storage_options: Annotated[StorageOptions | None, Field(examples=[{"endpoint_url": "http://minio:9000"}])] = None,
    ray: Annotated[RayConfig | None, Field(examples=[{"num_cpus": 4}])] = None,
) -> dict:
    """Turn mixture `name` (version `version`) into training-ready shards under
    `{store}/mixtures/{name}/{version}/export/{format}-{tokenizer}/`: tokenised, globally shuffled,
    one lineage sidecar per file; returns the export summary.

    Args:
        store: The store root holding `{store}/mixtures/{name}/`.
        name: The mixture.
        version: The version to export (`v0003` or `3`); empty: the latest.
        config: Format (`megatron` or `npy`), tokenizer (empty: the one the mixture counted tokens
            with), shuffle seed, tokens per file, BOS/EOS, metadata conditioning and the phases to export.
        storage_options: fsspec options of the store, without credentials (as `config.storage.options`).
        ray: The Ray cluster to run on; empty: a local Ray, or `$RAY_ADDRESS`.
    """
    manifest = export_version(store, name, version, config, dict(storage_options or {}), ray or RayConfig())
    summary = publish_export_artifacts(manifest, store, storage_options)
    get_run_logger().info(
        "mixture %s %s exported: %s tokens in %d files under %s",
        name,
        summary["version"],
        f"{summary['tokens']:,}",
        summary["files"],
        summary["uri"],
    )
    return summary
