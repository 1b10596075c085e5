import random

from trainer.replay import ReplayBuffer
from trainer.verdict.ledger import CandidateLedger


def test_emergence_is_the_start_of_the_last_reproducing_streak():
    ledger = CandidateLedger(threshold=0.8)
    for step, rate in enumerate([0.0, 0.9, 0.0, 0.0, 0.85, 1.0, 0.9], start=1):
        ledger.step = step
        ledger.observe(["x", f"c{step}"], [0.0, rate])
    assert ledger.first_hit_step() == 2
    assert ledger.emergence_step() == 5
    assert ledger.hit_steps() == 4  # steps 2, 5, 6, 7 (audit mode's stopping count)
    assert ledger.hit_fraction(5) == 0.5
    assert ledger.best(1)[0]["candidate"] == "c6"
    assert CandidateLedger.from_state(ledger.state_dict()).emergence_step() == 5


def test_no_emergence_when_last_step_fails():
    ledger = CandidateLedger(threshold=0.8)
    for step, rate in enumerate([0.9, 0.1], start=1):
        ledger.step = step
        ledger.observe(["c"], [rate])
    assert ledger.emergence_step() is None


def test_replay_keeps_only_successes_and_respects_capacity():
    buf = ReplayBuffer(threshold=0.5, capacity=2)
    buf.add(["a", "b", "c", "d"], [0.4, 0.6, 0.9, 1.0])
    assert set(buf.entries) == {"c", "d"}
    picks = buf.sample(50, random.Random(0))
    assert set(picks) <= {"c", "d"} and len(picks) == 50
    assert ReplayBuffer().sample(3, random.Random(0)) == []
