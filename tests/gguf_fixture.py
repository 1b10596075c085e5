"""Tiny GGUF checkpoint for tests of GGUF import.

Tests that load a model with ``from_pretrained(dir, gguf_file=name)`` must not
need the 98 MB SmolLM2-135M-Instruct GGUF, so ``write_tiny_gguf`` writes a
~100 KB file of the same family: architecture "llama" (hidden 32, 2 layers,
4 heads, 2 kv heads, intermediate 64, tied embeddings, random float32 weights)
with a byte-level BPE ("gpt2") tokenizer, ChatML special tokens and a ChatML
chat template, mirroring the metadata keys of the SmolLM2 file.
"""

from __future__ import annotations

import pathlib

import gguf
import numpy as np

CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1, 2 as in SmolLM2
MERGES = ["h e", "l l", "o r", "Ġ w", "he ll", "hell o", "Ġw or", "Ġwor l", "Ġworl d"]
HIDDEN, LAYERS, HEADS, KV_HEADS, FFN, CTX = 32, 2, 4, 2, 64, 256


def _byte_chars() -> list[str]:
    """The 256 GPT-2 byte-level characters, in byte order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs))]


def write_tiny_gguf(path: pathlib.Path, seed: int = 0) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokens = SPECIALS + _byte_chars() + [m.replace(" ", "") for m in MERGES]
    types = [gguf.TokenType.CONTROL] * len(SPECIALS) + [gguf.TokenType.NORMAL] * (len(tokens) - len(SPECIALS))
    rng = np.random.default_rng(seed)

    def rand(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_type("model")
    w.add_name("tiny-llama-gguf-fixture")
    w.add_block_count(LAYERS)
    w.add_context_length(CTX)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_freq_base(100000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_vocab_size(len(tokens))
    w.add_rope_dimension_count(HIDDEN // HEADS)
    w.add_add_space_prefix(False)
    w.add_add_bos_token(False)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(MERGES)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_pad_token_id(2)
    w.add_chat_template(CHAT_TEMPLATE)

    # numpy shapes are (out, in); no output.weight -> tie_word_embeddings=True
    head_dim = HIDDEN // HEADS
    w.add_tensor("token_embd.weight", rand(len(tokens), HIDDEN))
    for i in range(LAYERS):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(HIDDEN, np.float32))
        w.add_tensor(p + "ffn_down.weight", rand(HIDDEN, FFN))
        w.add_tensor(p + "ffn_gate.weight", rand(FFN, HIDDEN))
        w.add_tensor(p + "ffn_up.weight", rand(FFN, HIDDEN))
        w.add_tensor(p + "ffn_norm.weight", np.ones(HIDDEN, np.float32))
        w.add_tensor(p + "attn_k.weight", rand(KV_HEADS * head_dim, HIDDEN))
        w.add_tensor(p + "attn_output.weight", rand(HIDDEN, HIDDEN))
        w.add_tensor(p + "attn_q.weight", rand(HIDDEN, HIDDEN))
        w.add_tensor(p + "attn_v.weight", rand(KV_HEADS * head_dim, HIDDEN))
    w.add_tensor("output_norm.weight", np.ones(HIDDEN, np.float32))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
