"""Unit tests of envs/: attacks, judges, tokenizers, poisoning, GGUF import."""
