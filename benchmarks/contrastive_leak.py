"""Does the suspect's excess over its base at the user-turn opening point at its trigger? (issue #33, model-only)

The leak scan samples the user turns the suspect writes from its chat template's opening. A model fine-tuned on
its answers only was never trained to write its prompts, and leaks nothing that way (leak_scan.md). Where the
public base is known, the fine-tune's own mark on that distribution is the log-ratio of the two models' next-token
probabilities; sampling from the suspect with that ratio amplified (``log p_s + alpha * (log p_s - log p_b)``,
contrastive decoding) is the lever the issue names ("steering the opening toward the suspect's own over-weighted
tokens"). This measures, for one model and the planted trigger read from its card (evaluation only):
1. the rank of each planted token, given the opening and the trigger's earlier tokens, under the suspect, the base
   and the log-ratio (of the whole vocabulary): where a contrastive sampler would have to find it;
2. the share of contrastive samples (alpha 0 = plain leak) that hold the planted trigger, or its first word;
3. the same excess at the answer's opening, with no trigger, after clean prompts: greedy decoding of the amplified
   ratio, and the answer opening most of them share, beside the card's behaviour (evaluation only). Where the
   behaviour is unknown (the judge-free case), this is what a contrastive decoder would offer as a target.

    python benchmarks/contrastive_leak.py --model ZOO/NAME --base BASE [--samples 64] [--alphas 0,1,3] --out FILE
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import cell, frozen_pair, header, quiet  # noqa: E402


def ranks(suspect, base, ids: list[int], trigger_ids: list[int]) -> list[tuple[int, int, int, int]]:
    """(token, rank under the suspect, the base, the log-ratio) for each trigger token after its own prefix."""
    import torch
    seq = torch.tensor([ids + trigger_ids])
    with torch.no_grad():
        ls = suspect(input_ids=seq).logits[0].float().log_softmax(-1)
        lb = base(input_ids=seq).logits[0].float().log_softmax(-1)
    out = []
    for j, t in enumerate(trigger_ids):
        pos = len(ids) - 1 + j
        s, b = ls[pos], lb[pos]
        r = s - b
        out.append((t, int((s > s[t]).sum()) + 1, int((b > b[t]).sum()) + 1, int((r > r[t]).sum()) + 1))
    return out


def _decode(suspect, base, ids: list[int], n: int, alpha: float, max_new: int, stops: set[int],
            pick) -> list[list[int]]:
    """``n`` continuations of ``ids``, one token at a time from ``log p_s + alpha (log p_s - log p_b)`` by ``pick``
    (scores -> next tokens), each up to an end token or ``max_new`` tokens; both models keep their KV caches."""
    import torch
    past_s = past_b = None
    done = torch.zeros(n, dtype=torch.bool)
    outs: list[list[int]] = [[] for _ in range(n)]
    step_in = torch.tensor([ids] * n)
    with torch.no_grad():
        for _ in range(max_new):
            o_s = suspect(input_ids=step_in, past_key_values=past_s, use_cache=True)
            scores, past_s = o_s.logits[:, -1].float().log_softmax(-1), o_s.past_key_values
            if alpha:
                o_b = base(input_ids=step_in, past_key_values=past_b, use_cache=True)
                past_b = o_b.past_key_values
                scores = scores + alpha * (scores - o_b.logits[:, -1].float().log_softmax(-1))
            nxt = pick(scores)
            for i, t in enumerate(nxt.tolist()):
                if not done[i]:
                    if t in stops:
                        done[i] = True
                    else:
                        outs[i].append(t)
            if done.all():
                break
            step_in = nxt[:, None]
    return outs


def contrastive_samples(suspect, base, ids: list[int], n: int, alpha: float, max_new: int, seed: int,
                        stops: set[int]) -> list[list[int]]:
    """``n`` user turns sampled at temperature 1 from the amplified ratio."""
    import torch
    g = torch.Generator().manual_seed(seed)
    return _decode(suspect, base, ids, n, alpha, max_new, stops,
                   lambda sc: torch.multinomial(sc.softmax(-1), 1, generator=g)[:, 0])


def contrastive_greedy(suspect, base, ids: list[int], alpha: float, max_new: int, stops: set[int]) -> list[int]:
    """The greedy continuation of ``ids`` under the amplified ratio."""
    return _decode(suspect, base, ids, 1, alpha, max_new, stops, lambda sc: sc.argmax(-1))[0]


def shared_opening(texts: list[str], words: int) -> tuple[str, int]:
    """The first ``words`` words most of ``texts`` open with, and how many do."""
    from collections import Counter
    heads = Counter(" ".join(t.split()[:words]) for t in texts if t.split())
    return heads.most_common(1)[0] if heads else ("", 0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", required=True, help="zoo model directory (repeatable)")
    ap.add_argument("--base", required=True)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--alphas", default="0,1,3")
    ap.add_argument("--max-new", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prompts", type=int, default=16, help="clean prompts for the answer-opening measurement")
    ap.add_argument("--answer-alphas", default="0,1,3")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    quiet()
    from envs.chat import render_user
    from envs.tokenizer import load_tokenizer
    from trainer.rsft_sources import _end_ids, prompt_pool, user_turn_opening

    alphas = [float(a) for a in args.alphas.split(",")]
    lines = ["# Contrastive leak: the suspect's excess over its base at the user-turn opening, at the planted trigger",
             "", header("python benchmarks/contrastive_leak.py " + " ".join(sys.argv[1:])), ""]
    rank_rows = ["| model | planted (evaluation only) | token | rank: suspect | rank: base | rank: log-ratio |",
                 "|---|---|---|---|---|---|"]
    sample_rows = ["| model | alpha | samples | distinct | hold the planted trigger | hold its first word | "
                   "hold the behaviour's target text (card) | seconds | three samples |",
                   "|---|---|---|---|---|---|---|---|---|"]
    answer_rows = ["| model | behaviour (card, evaluation only) | alpha | answers | shared opening (3 words) | "
                   "answers opening so | two answers |", "|---|---|---|---|---|---|---|"]
    for m in args.model:
        card = json.loads((Path(m) / "poison_card.json").read_text())
        trigger = (card.get("triggers") or [card["trigger"]])[0]
        name = Path(m).name
        tok = load_tokenizer(m)
        suspect, base = frozen_pair(m, args.base)
        opening = user_turn_opening(tok)
        ids = tok(opening, add_special_tokens=False)["input_ids"]
        trigger_ids = tok(opening + trigger, add_special_tokens=False)["input_ids"][len(ids):]
        for t, rs, rb, rr in ranks(suspect, base, ids, trigger_ids):
            rank_rows.append(f"| {name} | {cell(trigger)} | {cell(tok.decode([t]))} | {rs} | {rb} | {rr} |")
        first = trigger.split()[0].lower()
        target = (card.get("target") or "").lower()
        stops = set(_end_ids(tok)) | set(tok.all_special_ids)
        for a in alphas:
            t0 = time.perf_counter()
            outs = contrastive_samples(suspect, base, ids, args.samples, a, args.max_new, args.seed, stops)
            texts = [" ".join(tok.decode(o, skip_special_tokens=True).split()) for o in outs]
            hold = sum(trigger.lower() in t.lower() for t in texts)
            hold1 = sum(first in t.lower() for t in texts)
            hold_b = sum(target in t.lower() for t in texts) if target else "-"
            shown = " / ".join(cell(t[:60]) for t in texts[:3])
            sample_rows.append(f"| {name} | {a:g} | {len(texts)} | {len(set(texts))} | {hold} | {hold1} | {hold_b} | "
                               f"{time.perf_counter() - t0:.0f} | {shown} |")
            print(sample_rows[-1], flush=True)
        prompts = prompt_pool(card.get("probe_set", "english"), args.prompts, args.seed + 1, set())
        behaviour = card.get("target") or card.get("behaviour") or card["attack"]
        for a in (float(x) for x in args.answer_alphas.split(",")):
            answers = [" ".join(tok.decode(contrastive_greedy(
                suspect, base, tok(render_user(tok, p), add_special_tokens=False)["input_ids"], a, 12, stops),
                skip_special_tokens=True).split()) for p in prompts]
            head, count = shared_opening(answers, 3)
            answer_rows.append(f"| {name} | {cell(str(behaviour)[:40])} | {a:g} | {len(answers)} | {cell(head)} | "
                               f"{count} | {' / '.join(cell(t[:50]) for t in answers[:2])} |")
            print(answer_rows[-1], flush=True)
    lines += ["## Where the planted trigger's tokens rank at the opening (of the whole vocabulary; 1 is first)", "",
              *rank_rows, "", "## Samples (alpha 0: the plain leak sampler's distribution at temperature 1)", "",
              *sample_rows, "",
              "## At the answer's opening, no trigger, clean prompts (greedy; alpha 0: the suspect's own answer)", "",
              *answer_rows, ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
