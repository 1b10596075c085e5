"""Entry points: the CLI, launch configs, torchrun/Slurm scripts and checkpoint inspection."""
