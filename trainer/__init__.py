"""A run: config, R-SFT warm-up, GRPO inversion, the held-out verdict, the run directory and its result,
baselines and defenses (imports envs and rewards, never launch)."""
