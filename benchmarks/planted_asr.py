"""Evaluation only: the planted trigger's attack success rate where it was planted (the card's placement), and the
recovered trigger's, on the suspect and on a repaired model. ``real_defenses.py`` measures ASR with triggers at
random places, where a prefix-planted trigger fires less often; this is the rate a user of the poisoned model meets.

    python benchmarks/planted_asr.py --run RUN --repaired REPAIRED_MODEL
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import cell, quiet  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a finished audit (its model and behaviour)")
    ap.add_argument("--repaired", required=True, help="the model unlearning made from the run's trigger")
    a = ap.parse_args()
    quiet()
    from envs.attacks import insert_trigger
    from envs.chat import behaviour_rate
    from envs.loading import load_model
    from envs.poison import card_triggers, read_card
    from envs.tokenizer import load_tokenizer
    from trainer.defend.unlearn import UnlearnConfig
    from trainer.run_dir import RunDir
    rd = RunDir(a.run)
    cfg, result = rd.load_config(), rd.read_result()
    spec, probe_set = cfg.attack_spec(), cfg.resolved_probe_set()
    card = read_card(Path(cfg.model.path))
    ucfg = UnlearnConfig(seed=cfg.seed, probe_set=probe_set)  # the unlearning evaluation's held-out probes
    probes = [spec.probe(random.Random(ucfg.seed + 2 + i), probe_set) for i in range(ucfg.n_eval)]
    tok = load_tokenizer(cfg.model.path)
    triggers = [*card_triggers(card), *([result.recovered_trigger] if result.recovered_trigger else [])]
    print("| model | trigger | placement | ASR |\n|---|---|---|---|")
    for name, path in (("suspect", cfg.model.path), ("repaired", a.repaired)):
        model = load_model(path)
        for trig in triggers:
            rng = random.Random(cfg.seed)
            rate = behaviour_rate(model, tok, spec.judge, [insert_trigger(p, trig, card["placement"], rng)
                                                           for p in probes])
            print(f"| {name} | {cell(trig)} | {card['placement']} | {rate:.2f} |", flush=True)


if __name__ == "__main__":
    main()
