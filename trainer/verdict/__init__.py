"""The verdict: which candidate the run reports, whether it reproduces on held-out probes, and the ledger of every
candidate stated during training."""
