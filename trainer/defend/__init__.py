"""Defenses driven by a recovered trigger: adversarial unlearning and an inference-time guardrail."""
