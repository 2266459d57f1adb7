"""The one tokenizer loader (mixforge.tokenizer): a byte-level BPE trained here, tiktoken offline, S3."""

from __future__ import annotations

import hashlib
import os
import pickle
import socket

import numpy as np
import pytest

from mixforge import tokenizer as T
from mixforge.config_errors import ConfigError
from mixforge.mixtures import tokens
from mixforge.mixtures.spec import TokenizerSpec
from tests.helpers import prose

# sha256 of cl100k_base's name, pattern, ranks and special tokens: pinned, a changed hash is a changed tokenizer
CL100K_SHA256 = "7de7093ead9288a3468262b55bda9b49ba2e07dc15625e58986d5f6dd3d3f1c4"
TEXTS = ["The quick brown fox.", "", "  two leading spaces\tand a tab\n", "naïve café 😀 — ünïcode, 日本語"]


@pytest.fixture(autouse=True)
def fresh_cache():
    """Each test loads its tokenizers itself (load_tokenizer caches per process)."""
    T._LOADED.clear()
    yield
    T._LOADED.clear()


def train_bpe(path, special_tokens=("<|endoftext|>", "<s>")) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([prose(i, sentences=3) for i in range(300)], trainer)
    tok.save(str(path))
    return str(path)


@pytest.fixture(scope="module")
def bpe_file(tmp_path_factory) -> str:
    return train_bpe(tmp_path_factory.mktemp("bpe") / "tokenizer.json")


def hf(name: str) -> TokenizerSpec:
    return TokenizerSpec(kind="huggingface", name=name)


def test_trained_bpe_round_trip_hash_and_specials(bpe_file):
    tok = T.load_tokenizer(hf(bpe_file))
    digest = hashlib.sha256(open(bpe_file, "rb").read()).hexdigest()
    # The key is the one mixture token caches already use: hf-<12 hex of the file's sha256>.
    assert (tok.kind, tok.sha256, tok.key) == ("huggingface", digest, f"hf-{digest[:12]}")
    assert tok.eos_id == tok._encoder.token_id("<|endoftext|>") == 0 and tok.bos_id is None
    texts = TEXTS + [prose(1000 + i) for i in range(20)]
    ids, offsets = tok.encode_batch(texts)
    assert ids.dtype == np.uint32 and offsets.dtype == np.int64 and len(offsets) == len(texts) + 1
    assert offsets[0] == 0 and offsets[-1] == len(ids) and np.all(np.diff(offsets) >= 0)
    assert ids.max() < tok.vocab_size == 600
    for i, text in enumerate(texts):
        assert tok.decode(ids[offsets[i] : offsets[i + 1]]) == text
    assert np.array_equal(tok.count_batch(texts), np.diff(offsets))
    assert 0 not in ids  # no special tokens are added
    # Loading again (fresh process state), from the folder, gives the same identity.
    T._LOADED.clear()
    again = T.load_tokenizer(hf(os.path.dirname(bpe_file)))
    assert (again.key, again.sha256, again.vocab_size, again.eos_id) == (tok.key, tok.sha256, 600, 0)
    assert np.array_equal(again.encode_batch(texts)[0], ids)


def test_special_tokens_chosen_and_refused(bpe_file, tmp_path):
    tok = T.load_tokenizer(hf(bpe_file), eos_token="<s>", bos_token="<|endoftext|>")
    assert (tok.eos_id, tok.bos_id) == (1, 0)
    with pytest.raises(ConfigError, match="bos_token '<bos>' is not a token"):
        T.load_tokenizer(hf(bpe_file), bos_token="<bos>")
    # No usual EOS: a clear error naming the setting; token counting does not need one.
    plain = train_bpe(tmp_path / "plain.json", special_tokens=("<pad>",))
    with pytest.raises(T.MissingEOS, match="eos_token") as err:
        T.load_tokenizer(hf(plain))
    assert "</s>" in str(err.value)
    assert T.load_tokenizer(hf(plain), eos_required=False).eos_id is None
    assert T.load_tokenizer(hf(plain), eos_token="<pad>").eos_id == 0
    assert tokens.count_batch(["one two"], hf(plain))[0] > 0


def test_tiktoken_offline(monkeypatch, tmp_path):
    def no_network(*args, **kwargs):
        raise OSError("network access in a test")

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))  # an empty cache: nothing downloaded before helps
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    tok = T.load_tokenizer(TokenizerSpec(kind="tiktoken", name="cl100k_base"), bos_token="<|fim_prefix|>")
    assert (tok.key, tok.vocab_size, tok.eos_id, tok.bos_id) == ("tiktoken-cl100k_base", 100277, 100257, 100258)
    ids, offsets = tok.encode_batch(["hello world", "<|endoftext|>"] + TEXTS)
    assert ids[:2].tolist() == [15339, 1917]
    assert 100257 not in ids  # special-token text is encoded as ordinary text
    assert [tok.decode(ids[offsets[i] : offsets[i + 1]]) for i in range(2, len(offsets) - 1)] == TEXTS
    T._LOADED.clear()
    assert T.load_tokenizer(TokenizerSpec()).sha256 == tok.sha256 == CL100K_SHA256
    assert tokens.tokenizer_key(TokenizerSpec()) == "tiktoken-cl100k_base"
    # A tokenizer sent to a worker is reloaded there and is the same tokenizer.
    assert pickle.loads(pickle.dumps(tok)) == tok


def test_unavailable_tokenizers(tmp_path):
    assert tokens.TokenizerUnavailable is T.TokenizerUnavailable  # the old import path still works
    with pytest.raises(T.TokenizerUnavailable, match="unknown tiktoken encoding 'cl100k_bse'"):
        T.load_tokenizer(TokenizerSpec(name="cl100k_bse"))
    with pytest.raises(T.TokenizerUnavailable, match="expected a tokenizer.json or a folder holding one"):
        T.load_tokenizer(hf(str(tmp_path)))
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(T.TokenizerUnavailable, match="not a Hugging Face tokenizer.json"):
        T.load_tokenizer(hf(str(tmp_path)))


def test_tokenizer_json_on_s3(s3_bucket, bpe_file):
    import s3fs

    root, opts = s3_bucket
    s3fs.S3FileSystem(**opts).put_file(bpe_file, f"{root}/tok/tokenizer.json".removeprefix("s3://"))
    local = T.load_tokenizer(hf(bpe_file))
    for name in (f"{root}/tok/tokenizer.json", f"{root}/tok"):
        remote = T.load_tokenizer(hf(name), storage_options=opts)
        assert (remote.name, remote.key, remote.sha256, remote.eos_id) == (name, local.key, local.sha256, 0)
        assert np.array_equal(remote.encode_batch(TEXTS)[0], local.encode_batch(TEXTS)[0])
    assert tokens.tokenizer_key(hf(f"{root}/tok"), opts) == local.key
    with pytest.raises(T.TokenizerUnavailable, match="not found"):
        T.load_tokenizer(hf(f"{root}/nothing/tokenizer.json"), storage_options=opts)
