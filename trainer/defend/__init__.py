"""Defenses driven by a recovered trigger: adversarial unlearning, an inference-time guardrail, and the
protocol that picks the triggers for each and measures both."""
