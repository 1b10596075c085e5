"""Training entry point for launchers: ``torchrun --nproc_per_node N -m launch.train --config FILE --out RUN``.

Every rank runs the same program (TRL/accelerate split the rollouts; gloo on CPU, NCCL on GPUs); rank 0
alone writes the run directory, evaluates and prints the result. Same flags as ``backdoor-aware invert``.
A finished run exits 0 even when it found no trigger (``result.json`` says so), so that a launcher does
not treat an audit's negative answer as a crashed job; bad input and interruptions stay non-zero.
"""
from __future__ import annotations

import sys

from launch.cli import EXIT_NOT_FOUND, main


def run(argv: list[str]) -> int:
    rc = main(["invert", *argv])
    return 0 if rc == EXIT_NOT_FOUND else rc


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
