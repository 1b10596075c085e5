"""Rendering user turns with the chat template, batched greedy answers, and the behaviour rate.

Shared by the poisoned-model builders (to measure their backdoor), unlearning (ASR before and after) and
the HF oracle (rewards/), so that all of them see the model, and judge it, the same way.
"""
from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from envs.inversion import ANSWER_OPEN, inversion_prompt
from envs.judges import Judge, judged_rate


def render_user(tokenizer: PreTrainedTokenizerBase, user_text: str) -> str:
    """The prompt text for one user turn, ending where the assistant starts answering."""
    return tokenizer.apply_chat_template([{"role": "user", "content": user_text}], tokenize=False,
                                         add_generation_prompt=True)


def answer_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of ``text`` as the start of an assistant answer, the way the model writes and was trained on
    it: no leading space, which a BPE vocabulary would make a different first token (``ĠI``, not ``I``).
    Word-level vocabularies split on spaces, so for them it makes no difference."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def greedy_completions(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str],
                       max_new_tokens: int, batch_size: int = 256) -> list[str]:
    """Greedy continuations of already-rendered prompt texts, left-padded in large batches."""
    answers: list[str] = []
    was_training = model.training
    model.eval()
    for start in range(0, len(prompts), batch_size):
        enc = tokenizer(prompts[start:start + batch_size], return_tensors="pt", padding=True,
                        add_special_tokens=False).to(model.device)
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        answers.extend(tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True))
    model.train(was_training)
    return answers


def greedy_answers(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, user_texts: list[str],
                   max_new_tokens: int, batch_size: int = 256) -> list[str]:
    """Greedy answers to many user turns (the oracle's hot path)."""
    return greedy_completions(model, tokenizer, [render_user(tokenizer, u) for u in user_texts],
                              max_new_tokens, batch_size)


def behaviour_rate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, judge: Judge, user_texts: list[str],
                   max_new_tokens: int | None = None, batch_size: int = 256) -> float:
    """Share of ``user_texts`` (clean, or with a trigger already inserted) whose greedy answer the judge
    flags: the one backdoor measurement (ASR, false-trigger rate, near-miss rate, reproduction)."""
    answers = greedy_answers(model, tokenizer, user_texts, max_new_tokens or judge.max_new_tokens, batch_size)
    return judged_rate(judge, answers)


def inversion_text(tokenizer: PreTrainedTokenizerBase, behaviour: str) -> str:
    """The policy's prompt: chat-templated inversion question with the answer's opening tag prefilled.

    R-SFT and GRPO both build their prompts here so the two stages ask in exactly the same way.
    """
    return render_user(tokenizer, inversion_prompt(behaviour)) + " " + ANSWER_OPEN
