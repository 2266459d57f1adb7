"""A tiny Llama with random weights and a locally trained tokenizer, for tests and demos.

Nothing is downloaded: the BPE tokenizer is trained with `tokenizers` on a few KB of
public-domain prose shipped below, the model is `LlamaForCausalLM` with random weights
(seeded), and the directory has everything vLLM and `transformers` need, including a chat
template. Outputs are gibberish; what matters is that the real engine loads and generates.
vLLM's CPU attention needs head_dim >= 32, hence hidden 64 with 2 heads.
"""

from __future__ import annotations

import json
from pathlib import Path

# Public domain: Jane Austen, "Pride and Prejudice" (1813), ch. 1; Abraham Lincoln, the Gettysburg
# Address (1863); Herman Melville, "Moby-Dick" (1851), ch. 1.
PUBLIC_DOMAIN_TEXT = """\
It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in
want of a wife. However little known the feelings or views of such a man may be on his first entering
a neighbourhood, this truth is so well fixed in the minds of the surrounding families, that he is
considered the rightful property of some one or other of their daughters.
"My dear Mr. Bennet," said his lady to him one day, "have you heard that Netherfield Park is let at last?"
Mr. Bennet replied that he had not. "But it is," returned she; "for Mrs. Long has just been here, and
she told me all about it." Mr. Bennet made no answer. "Do you not want to know who has taken it?" cried
his wife impatiently. "You want to tell me, and I have no objection to hearing it." This was invitation
enough. "Why, my dear, you must know, Mrs. Long says that Netherfield is taken by a young man of large
fortune from the north of England; that he came down on Monday in a chaise and four to see the place,
and was so much delighted with it, that he agreed with Mr. Morris immediately; that he is to take
possession before Michaelmas, and some of his servants are to be in the house by the end of next week."
Four score and seven years ago our fathers brought forth on this continent, a new nation, conceived in
Liberty, and dedicated to the proposition that all men are created equal. Now we are engaged in a great
civil war, testing whether that nation, or any nation so conceived and so dedicated, can long endure.
We are met on a great battle-field of that war. We have come to dedicate a portion of that field, as a
final resting place for those who here gave their lives that that nation might live. It is altogether
fitting and proper that we should do this. But, in a larger sense, we can not dedicate, we can not
consecrate, we can not hallow this ground. The brave men, living and dead, who struggled here, have
consecrated it, far above our poor power to add or detract. The world will little note, nor long
remember what we say here, but it can never forget what they did here.
Call me Ishmael. Some years ago, never mind how long precisely, having little or no money in my purse,
and nothing particular to interest me on shore, I thought I would sail about a little and see the
watery part of the world. It is a way I have of driving off the spleen and regulating the circulation.
Whenever I find myself growing grim about the mouth; whenever it is a damp, drizzly November in my soul;
whenever I find myself involuntarily pausing before coffin warehouses, and bringing up the rear of every
funeral I meet; then, I account it high time to get to sea as soon as I can. There now is your insular
city of the Manhattoes, belted round by wharves as Indian isles by coral reefs; commerce surrounds it
with her surf. Question: what is the answer? Answer: here is a rephrased version of the text, written
in the style of an encyclopedia article, with questions and answers about it.
"""

BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK, "<|system|>", "<|user|>", "<|assistant|>"]

# Roles in special tokens; `add_generation_prompt` opens the assistant turn.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def build_tiny_llama(
    path: str | Path,
    *,
    vocab_size: int = 512,
    hidden_size: int = 64,
    num_heads: int = 2,
    num_layers: int = 2,
    intermediate_size: int = 128,
    max_position_embeddings: int = 2048,
    seed: int = 0,
) -> Path:
    """Write a tiny random-weight Llama + tokenizer (+ chat template) to `path`; returns it.

    Idempotent: a directory that already holds a model (`config.json`) is returned as is.
    """
    out = Path(path)
    if (out / "config.json").is_file() and (out / "tokenizer.json").is_file():
        return out
    if hidden_size // num_heads < 32:
        raise ValueError("vLLM's CPU attention needs head_dim = hidden_size / num_heads >= 32")
    out.mkdir(parents=True, exist_ok=True)

    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    # Byte-level BPE: every string is encodable, decoding round-trips.
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(PUBLIC_DOMAIN_TEXT.splitlines(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        model_max_length=max_position_embeddings,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(out))

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(str(out), safe_serialization=True)
    (out / "generation_config.json").write_text(
        json.dumps(
            {"bos_token_id": fast.bos_token_id, "eos_token_id": fast.eos_token_id, "pad_token_id": fast.pad_token_id}
        )
    )
    return out


if __name__ == "__main__":
    import sys

    print(build_tiny_llama(sys.argv[1] if len(sys.argv) > 1 else "tiny-llama"))
