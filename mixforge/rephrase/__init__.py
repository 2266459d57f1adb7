"""LLM rephrasing of selected documents into synthetic rows (issue #6): config, prompts and
chunking, output guards, and the vLLM engine wrapper. The stage is `mixforge.stages.rephrase`."""

from mixforge.rephrase.config import BUILTIN_TEMPLATES, RephraseConfig

__all__ = ["BUILTIN_TEMPLATES", "RephraseConfig"]
