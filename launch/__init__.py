"""Entry points that parse and print: the CLI, launch configs (shipped as package data), torchrun/Slurm
scripts, the oracle server and checkpoint inspection."""
