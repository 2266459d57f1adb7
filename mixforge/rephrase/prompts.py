"""Prompt building (the model's chat template), chunking by tokens, and reassembly."""

from __future__ import annotations

import hashlib
import re
from typing import Protocol

from mixforge.rephrase.config import PromptTemplate


class Tokenizer(Protocol):
    chat_template: str | None

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...
    def decode(self, ids: list[int]) -> str: ...
    def apply_chat_template(
        self, messages: list[dict], tokenize: bool = ..., add_generation_prompt: bool = ...
    ) -> str: ...


def render_prompt(tokenizer: Tokenizer, template: PromptTemplate, text: str) -> str:
    """The prompt string the engine gets: the model's chat template when it has one, else plain text."""
    user = template.user.replace("{text}", text)
    messages = ([{"role": "system", "content": template.system}] if template.system else []) + [
        {"role": "user", "content": user}
    ]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "\n\n".join(m["content"] for m in messages) + "\n\n"


def prompt_hash(prompts: list[str]) -> str:
    h = hashlib.blake2b(digest_size=8)
    for p in prompts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()


_PARAGRAPHS = re.compile(r"\n\s*\n")
_SENTENCES = re.compile(r"(?<=[.!?])\s+")


def chunk_text(tokenizer: Tokenizer, text: str, max_tokens: int) -> list[str]:
    """Split `text` into pieces of at most `max_tokens` tokens: whole paragraphs packed together,
    a long paragraph by sentences, a long sentence by token windows. One piece when it fits."""

    def count(s: str) -> int:
        return len(tokenizer.encode(s, add_special_tokens=False))

    if count(text) <= max_tokens:
        return [text]
    units: list[tuple[str, str]] = []  # (piece, separator that followed it in the text)
    for para in _PARAGRAPHS.split(text):
        if not para.strip():
            continue
        if count(para) <= max_tokens:
            units.append((para, "\n\n"))
            continue
        for sentence in _SENTENCES.split(para):
            if count(sentence) <= max_tokens:
                units.append((sentence, " "))
            else:
                ids = tokenizer.encode(sentence, add_special_tokens=False)
                units.extend((tokenizer.decode(ids[i : i + max_tokens]), "") for i in range(0, len(ids), max_tokens))
        units[-1] = (units[-1][0], "\n\n")
    chunks, current, current_tokens = [], "", 0
    for piece, sep in units:
        n = count(piece)
        if current and current_tokens + n > max_tokens:
            chunks.append(current.strip())
            current, current_tokens = "", 0
        current += piece + sep
        current_tokens += n + (1 if sep else 0)
    if current.strip():
        chunks.append(current.strip())
    return chunks


def reassemble(outputs: list[str], joiner: str) -> str:
    return joiner.join(o.strip() for o in outputs)
