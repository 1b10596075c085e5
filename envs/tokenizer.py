"""Offline word-level tokenizers for built models, and loading any model's tokenizer safely.

Trap (issue #2): ``AutoTokenizer`` on a saved Qwen2/Llama-style folder holding a custom word-level
``tokenizer.json`` can silently load a different byte-level tokenizer. Word-level folders are therefore
loaded with ``PreTrainedTokenizerFast`` directly, and the round trip is tested.
"""
from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

PAD, UNK, USER, ASSISTANT, END = "[PAD]", "[UNK]", "<|user|>", "<|assistant|>", "<|end|>"
SPECIALS = (PAD, UNK, USER, ASSISTANT, END)

CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}<|user|> {{ m['content'] }} "
    "{% elif m['role'] == 'assistant' %}<|assistant|> {{ m['content'] }} <|end|> "
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_word_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer with a chat template, built without any hub access."""
    vocab: dict[str, int] = {}
    for w in (*SPECIALS, *words):
        vocab.setdefault(w, len(vocab))
    core = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token=PAD, unk_token=UNK, eos_token=END,
        additional_special_tokens=[USER, ASSISTANT], chat_template=CHAT_TEMPLATE,
    )
    tok.padding_side = "left"
    return tok


def is_word_level(model_dir: Path) -> bool:
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text())["model"]["type"] == "WordLevel"
    except (ValueError, KeyError, TypeError):
        return False


def default_probe_set(model_dir: str | Path) -> str:
    """``synthetic`` for the word-level models this project builds, ``english`` for any other model."""
    return "synthetic" if is_word_level(Path(model_dir)) else "english"


def load_tokenizer(model_dir: str | Path) -> PreTrainedTokenizerBase:
    """The model's tokenizer, left-padded, with a pad token; a clear error if it cannot chat."""
    model_dir = Path(model_dir)
    if is_word_level(model_dir):
        tok = PreTrainedTokenizerFast.from_pretrained(str(model_dir))
    else:
        tok = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=False)
    if not getattr(tok, "chat_template", None):
        raise ValueError(f"tokenizer in {model_dir} has no chat template; the inversion prompt needs one")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok
