"""Training entry point for launchers: ``torchrun --nproc_per_node N -m launch.train --config FILE --out RUN``.

Every rank runs the same program (TRL/accelerate split the rollouts; gloo on CPU, NCCL on GPUs); rank 0
alone writes the run directory, evaluates and prints the result. Same flags as ``backdoor-aware invert``.
A finished run exits 0 even when it found no trigger (``result.json`` says so), so that a launcher does
not treat an audit's negative answer as a crashed job; bad input and interruptions stay non-zero.

``accelerate launch --cpu --num_processes N -m launch.train ...`` works too: accelerate's CPU launcher
starts this program once and leaves the other processes to ``mpirun``; without MPI's variables this
program reads N from the launcher's command line and starts the N processes with ``torch.distributed.run``
(gloo, the same run as under torchrun). ``accelerate launch --multi_gpu --num_processes N`` uses torchrun
itself, on CPUs as on GPUs.
"""
from __future__ import annotations

import contextlib
import io
import os
import sys

from launch.cli import EXIT_BAD_INPUT, EXIT_NOT_FOUND, main

_WORLD_VARS = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def run(argv: list[str]) -> int:
    try:
        world = accelerate_cpu_world()
    except ValueError as e:
        print(f"backdoor-aware: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if world > 1:
        return relaunch_under_torchrun(world, argv)
    try:
        rc = main(["invert", *argv])
    finally:
        close_process_group()
    return 0 if rc == EXIT_NOT_FOUND else rc


def close_process_group() -> None:
    """Tear the process group down before the interpreter does: left to interpreter shutdown, gloo's
    threads and sockets are destroyed in whatever order the runtime picks, and a rank that finished early
    (every rank but 0 skips the verdict) could abort there (SIGABRT) while rank 0 was still evaluating."""
    import torch.distributed as td
    if td.is_available() and td.is_initialized():
        td.destroy_process_group()


def accelerate_cpu_world() -> int:
    """How many processes ``accelerate launch --cpu --num_processes N`` asked for when it started this one
    alone (its CPU launcher sets ACCELERATE_USE_CPU and, for N > 1, MASTER_PORT, but no world size: MPI
    would start and number the processes); 1 when not launched that way (torchrun, ``--multi_gpu`` and
    mpirun set WORLD_SIZE or MPI's variables). A launch it cannot read is a one-line ValueError."""
    env = os.environ
    if env.get("ACCELERATE_USE_CPU", "").lower() not in ("true", "1", "yes") or "MASTER_PORT" not in env:
        return 1
    if any(k in env for k in _WORLD_VARS):
        return 1
    args = _accelerate_launch_args()
    if args is None:  # the variables were set by hand, not by accelerate: one process, as asked
        return 1
    hint = "start the processes with: torchrun --nproc_per_node N -m launch.train ..."
    if args is False:
        raise ValueError(f"started by accelerate launch --cpu, but its --num_processes cannot be read; {hint}")
    n, machines = args.num_processes, args.num_machines
    if args.config_file and (n is None or machines is None):
        from accelerate.commands.config.config_args import load_config_from_file
        saved = load_config_from_file(args.config_file)
        n, machines = n or saved.num_processes, machines or saved.num_machines
    if (machines or 1) > 1:
        raise ValueError("accelerate launch --cpu on several machines needs mpirun (accelerate's CPU launcher "
                         f"starts one process per machine); {hint.replace('N -m', 'N --nnodes M -m')}")
    return n or 1


def _accelerate_launch_args():
    """The parent ``accelerate launch`` command's arguments, parsed by accelerate's own parser; None if the
    parent is not one, False if they do not parse."""
    import psutil  # an accelerate dependency
    try:
        cmdline = psutil.Process().parent().cmdline()
    except (psutil.Error, AttributeError):
        return None
    return parse_accelerate_cmdline(cmdline)


def parse_accelerate_cmdline(cmdline: list[str]):
    """``accelerate launch ARGS``, ``accelerate-launch ARGS`` or ``python -m accelerate.commands.launch ARGS``:
    ARGS parsed by accelerate's parser; None for another command line, False if ARGS do not parse."""
    from accelerate.commands.launch import launch_command_parser
    for i, tok in enumerate(cmdline):
        name = os.path.basename(tok)
        launcher = (name == "accelerate-launch" or tok == "accelerate.commands.launch"
                    or tok.replace(os.sep, "/").endswith("accelerate/commands/launch.py")
                    or (tok == "launch" and i > 0 and os.path.basename(cmdline[i - 1]) in
                        ("accelerate", "accelerate.commands.accelerate_cli")))
        if launcher:
            try:
                with contextlib.redirect_stderr(io.StringIO()):  # argparse's usage: the caller says it in one line
                    return launch_command_parser().parse_args(cmdline[i + 1:])
            except SystemExit:
                return False
    return None


def relaunch_under_torchrun(world: int, argv: list[str]) -> int:
    """Replace this process by ``torch.distributed.run`` starting ``world`` copies of this entry point on the
    address and port accelerate was given; accelerate waits on it and gets its exit code."""
    addr, port = os.environ.get("MASTER_ADDR", "127.0.0.1"), os.environ["MASTER_PORT"]
    print(f"backdoor-aware: accelerate launch --cpu starts one process (mpirun would start the others); "
          f"starting {world} CPU processes with torch.distributed.run on {addr}:{port}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(world), "--master_addr", addr,
           "--master_port", port, "-m", "launch.train", *argv]
    os.execv(sys.executable, cmd)
    return 0  # not reached


def exit_process(rc: int) -> None:
    """End a torchrun worker without the interpreter's teardown: every file it writes is written (atomically)
    and its process group is closed by then, yet twice in CI a rank that had finished (rank 1, which skips
    the verdict) still aborted in teardown ("terminate called without an active exception", SIGABRT), which
    torchrun reports as a failed run. ``os._exit`` after flushing skips the C++ destructors that abort. A
    single process exits normally."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import logging
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    sys.exit(rc)


if __name__ == "__main__":
    exit_process(run(sys.argv[1:]))
