"""The inversion task: attacks, judges, probes, prompts and answer parsing, model loading, and poisoning.

This package imports nothing else of ours (the layering of docs/architecture.md): rewards/ and trainer/ build on it.
"""
from envs.attacks import ATTACKS, AttackSpec, get_attack, insert_trigger
from envs.inversion import ANSWER_CLOSE, ANSWER_OPEN, inversion_prompt, parse_candidate, sanitize_candidate

__all__ = [
    "ATTACKS",
    "ANSWER_CLOSE",
    "ANSWER_OPEN",
    "AttackSpec",
    "get_attack",
    "insert_trigger",
    "inversion_prompt",
    "parse_candidate",
    "sanitize_candidate",
]
