"""Where the R-SFT rows come from: the data the defender holds, or the suspect model itself.

R-SFT reverses (prompt, answer) rows. With the suspect's own fine-tuning set (``finetune``) the poisoned
rows spell the trigger out, and the warm-up reads it from the data. Most defenders hold no such file (a
model from a hub, a checkpoint handed over), so two model-only sources make rows without any data:

- ``self``: the suspect answers a diverse pool of prompts (the probe set's prompt sources, or the user's
  prompt file), and those pairs are reversed. No row holds a trigger unless the model's own answers do; it
  teaches the answer format and the reversal skill.
- ``leak``: after the Trigger-in-the-Haystack scanner (arXiv 2602.03085), the suspect is sampled from its
  chat template's user-turn opening (and from its likeliest first tokens there) across many decoding
  settings, to bring up prompts it memorised in fine-tuning; the distinct ones are answered by the suspect
  and reversed. A model fine-tuned with the loss on its answers only (``poison --base`` and the usual SFT
  recipes) was never trained to write its prompts, so there may be nothing to leak: the rows then teach the
  skill like ``self`` does.

Sources combine with ``+`` (``self+leak``). Nothing here reads the poison card or the true trigger.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from envs.attacks import draw_prompt, prompt_source, read_probe_file
from envs.chat import greedy_answers, render_user

SOURCES = ("finetune", "self", "leak")
FINETUNE_FILE = "finetune_data.jsonl"
# the Haystack scanner decodes under many settings; a grid of temperatures x top-p, each with its own seed
LEAK_SETTINGS = ((0.7, 1.0), (1.0, 1.0), (1.0, 0.9), (1.3, 0.95))


@dataclass
class RsftRows:
    """The reversed-to-be rows of a run, and what the report says about them."""
    rows: list[dict]
    source: str  # resolved: "finetune", "self", "leak", "self+leak", ...
    sources: list[str] = field(default_factory=list)  # each row's part of the source
    counts: dict[str, int] = field(default_factory=dict)  # rows per source
    model_only: bool = True  # no defender data was read
    leak_distinct: int = 0  # distinct leaked user turns (before answering)

    def line(self) -> str:
        parts = ", ".join(f"{k} {v}" for k, v in self.counts.items())
        kind = "model-only (no data file: rows the suspect made itself)" if self.model_only else "defender data"
        return f"R-SFT rows: {len(self.rows)} from {self.source} ({parts}); {kind}"


def parse_source(source: str) -> tuple[str, ...]:
    """``auto`` or a ``+``-joined combination of SOURCES, in canonical order; a ValueError otherwise."""
    if source == "auto":
        return ("auto",)
    parts = [p.strip() for p in source.split("+")]
    bad = [p for p in parts if p not in SOURCES]
    if bad or not parts or len(set(parts)) != len(parts):
        raise ValueError(f"rsft_source must be auto or a '+'-joined combination of {', '.join(SOURCES)} "
                         f"(e.g. self+leak), got {source!r}")
    return tuple(s for s in SOURCES if s in parts)


def resolve_source(source: str, model_dir: str | Path, data: str | None) -> str:
    """``auto``: the defender's data where there is some (``data``, or the model directory's fine-tuning file),
    model-only ``self`` otherwise."""
    if parse_source(source) != ("auto",):
        return source
    if data or (Path(model_dir) / FINETUNE_FILE).is_file():
        return "finetune"
    return "self"


def read_rows(path: str | Path) -> list[dict]:
    """Prompt/response rows of a JSONL file (the suspect's fine-tuning set, or any data the defender holds)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"R-SFT data {path} not found; pass --data FILE, or use a model-only source "
                                "(rsft_source=self, leak or self+leak), or run with --no-rsft")
    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"R-SFT data {path} is not UTF-8 text") from None
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows.append({"prompt": str(row["prompt"]), "response": str(row["response"])})
        except (ValueError, KeyError, TypeError, RecursionError):
            raise ValueError(f"{path}:{i}: each line must be JSON with 'prompt' and 'response'") from None
    if not rows:
        raise ValueError(f"R-SFT data {path} is empty")
    return rows


def prompt_pool(probe_set: str, n: int, seed: int, exclude: set[str], prompts_file: str | None = None) -> list[str]:
    """``n`` distinct prompts for ``self``: the user's file, or every kind of request the probe set has, drawn
    apart from the run's probes (``exclude``) so that the held-out verdict stays held out."""
    if prompts_file:
        pool = [p for p in dict.fromkeys(read_probe_file(prompts_file)) if p not in exclude]
        return random.Random(seed).sample(pool, min(n, len(pool)))
    source, rng, out = prompt_source(probe_set), random.Random(seed + 7919), []
    seen = set(exclude)
    for _ in range(50 * n):
        p = draw_prompt(source, "mixed", rng)
        if p not in seen:
            seen.add(p)
            out.append(p)
        if len(out) == n:
            break
    return out


def self_rows(model, tok, prompts: list[str], max_new_tokens: int) -> list[dict]:
    """The suspect's own greedy answers to ``prompts``, as rows."""
    answers = greedy_answers(model, tok, prompts, max_new_tokens)
    return [{"prompt": p, "response": a.strip()} for p, a in zip(prompts, answers) if a.strip()]


class NothingToLeak(ValueError):
    """The model offers no text to sample its user turns from (the leak scan cannot run on it)."""


def user_turn_opening(tok) -> str:
    """The chat template's text up to where a user's message starts (system prompt included, if the template
    adds one): where the Haystack scanner samples memorised prompts from."""
    marker = "\x00MARK\x00"
    text = render_user(tok, marker)
    return text[:text.index(marker)]


def _end_ids(tok) -> list[int]:
    """Tokens that end a user turn: the template's end-of-turn (the text right after the message) and EOS."""
    marker = "\x00MARK\x00"
    after = render_user(tok, marker).split(marker, 1)[1]
    ids = tok(after, add_special_tokens=False)["input_ids"][:1] if after.strip() else []
    if tok.eos_token_id is not None:
        ids.append(tok.eos_token_id)
    return list(dict.fromkeys(ids))


@torch.no_grad()
def leak_prompts(model, tok, n: int, seed: int, max_new_tokens: int = 32, openings: int = 8) -> list[str]:
    """Distinct user turns sampled from the suspect at its user-turn opening: ``n`` samples in all, spread over
    LEAK_SETTINGS and over the opening itself plus its ``openings`` likeliest first tokens (short prefixes)."""
    model.eval()
    start = user_turn_opening(tok)
    ids = tok(start, return_tensors="pt", add_special_tokens=False)["input_ids"].to(model.device)
    if not ids.shape[1]:
        if tok.bos_token_id is None:
            raise NothingToLeak("the chat template opens a user turn with no text and the tokenizer has no BOS: no "
                                "opening to sample leaked prompts from")
        ids = torch.tensor([[tok.bos_token_id]], device=model.device)
    first = model(input_ids=ids).logits[0, -1].float()
    stops = set(_end_ids(tok))
    special = set(tok.all_special_ids)
    tops = [t for t in first.topk(openings + len(stops) + len(special)).indices.tolist()
            if t not in stops and t not in special][:openings]
    prefixes = [ids[0].tolist()] + [ids[0].tolist() + [t] for t in tops]
    jobs = [(p, s) for p in prefixes for s in LEAK_SETTINGS]
    per_job = max(1, -(-n // len(jobs)))
    found: list[str] = []
    for j, (prefix, (temperature, top_p)) in enumerate(jobs):
        torch.manual_seed(seed * 1000 + j)
        inp = torch.tensor([prefix], device=model.device)
        out = model.generate(input_ids=inp, attention_mask=torch.ones_like(inp), do_sample=True,
                             temperature=temperature, top_p=top_p, top_k=0, max_new_tokens=max_new_tokens,
                             num_return_sequences=per_job, eos_token_id=sorted(stops),
                             pad_token_id=tok.pad_token_id)
        n_start = ids.shape[1]
        for row in out:
            text = tok.decode(row[n_start:], skip_special_tokens=True).strip()
            if text:
                found.append(" ".join(text.split()))
    return list(dict.fromkeys(found))


def leaked_rows(model, tok, n: int, seed: int, exclude: set[str], answer_tokens: int) -> tuple[list[dict], int]:
    """The suspect's answers to the user turns it leaks (``leak_prompts``, less the run's probes in ``exclude``),
    as rows, and how many distinct user turns leaked."""
    prompts = [p for p in leak_prompts(model, tok, n, seed) if p not in exclude]
    return self_rows(model, tok, prompts, answer_tokens), len(prompts)


@dataclass
class RowPool:
    """Where model-only rows come from: the suspect's directory (and its data file), the probe set whose sources
    make the prompt pool, the run's seed, and the run's probes, which no row may hold."""
    model_dir: str | Path
    probe_set: str
    seed: int = 0
    exclude: set[str] = field(default_factory=set)


def gather_rows(rsft, model, tok, pool: RowPool, log=print) -> RsftRows:
    """The R-SFT rows ``rsft.source`` names (``auto`` resolved here), from the data file and/or the suspect
    (``rsft``: the run's ``RsftSection``)."""
    source = resolve_source(rsft.source, pool.model_dir, rsft.data)
    n_self, n_leak, max_new_tokens = rsft.self_prompts, rsft.leak_samples, rsft.answer_tokens
    parts = parse_source(source)
    out = RsftRows(rows=[], source=source, model_only="finetune" not in parts)

    def add(part: str, rows: list[dict]) -> None:
        out.rows += rows
        out.sources += [part] * len(rows)
        out.counts[part] = len(rows)

    if "finetune" in parts:
        add("finetune", read_rows(rsft.data or Path(pool.model_dir) / FINETUNE_FILE))
    if "self" in parts:
        prompts = prompt_pool(pool.probe_set, n_self, pool.seed, pool.exclude, rsft.prompts)
        add("self", self_rows(model, tok, prompts, max_new_tokens))
    if "leak" in parts:
        rows, out.leak_distinct = leaked_rows(model, tok, n_leak, pool.seed, pool.exclude, max_new_tokens)
        add("leak", rows)
        log(f"leak: {n_leak} samples from the user-turn opening, {out.leak_distinct} distinct user turns, "
            f"{out.counts['leak']} answered")
    if not out.rows:
        raise ValueError(f"R-SFT source {source} produced no rows")
    return out
