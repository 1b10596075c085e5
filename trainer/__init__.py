"""Run config, R-SFT warm-up, GRPO inversion, evaluation and checkpoints (imports envs and rewards)."""
