"""Defenses driven by a recovered trigger: adversarial unlearning, an inference-time guardrail, and the
protocol that picks the triggers for each and measures both."""


def by_placement(report: dict, key: str) -> str:
    """``prefix 1.00 -> 0.00, suffix 0.03 -> 0.00, ...`` for ``key`` (``asr_true`` or ``asr_recovered``): the rate
    where the backdoor fires is the one a user meets, and it is rarely the same at every placement. Empty for a
    report written before ASR was measured per placement."""
    before = report.get("before", {}).get(f"{key}_by_placement")
    after = report.get("after", {}).get(f"{key}_by_placement")
    if not before or not after:
        return ""
    return ", ".join(f"{pl} {before[pl]:.2f} -> {after[pl]:.2f}" for pl in before)
