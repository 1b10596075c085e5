"""Unit tests of trainer/: config, verdict, ledger, run directory, baselines, R-SFT sources, defenses."""
