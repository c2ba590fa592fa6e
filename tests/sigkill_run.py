"""Run one ``hf-reduce`` command in this process and SIGKILL it at a named moment (a test harness).

    python tests/sigkill_run.py FAULT COMMAND [ARGS...]

FAULT is ``none`` or ``WHERE:STEP``:

- ``checkpoint:N``: right after checkpoint ``step_N`` is in place (``N`` = the last step: "killed at the end");
- ``checkpoint_write:N``: while step ``N``'s checkpoint is being written (its weights file torn in half);
- ``prune:N``: while, after saving step ``N``, an older checkpoint is being deleted (one file gone).

The process kills itself with SIGKILL, so nothing of Python runs afterwards: no ``finally``, no ``atexit``,
no lock release, as when the machine or the OOM killer stops a run.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _install(fault: str) -> None:
    import shutil

    import accelerate

    import hf_reduce.checkpoints as checkpoints

    where, _, step = fault.partition(":")
    step = int(step)
    real_save = checkpoints.save_checkpoint
    current = {"step": None}

    def save_checkpoint(accelerator, output_dir, save_total_limit, state):
        current["step"] = state["global_step"]
        real_save(accelerator, output_dir, save_total_limit, state)
        if where == "checkpoint" and state["global_step"] == step:
            _die()

    real_save_state = accelerate.Accelerator.save_state

    def save_state(self, output_dir=None, **kwargs):
        out = real_save_state(self, output_dir, **kwargs)
        if where == "checkpoint_write" and current["step"] == step:
            weights = sorted(Path(output_dir).glob("model*.safetensors"))[0]
            data = weights.read_bytes()
            weights.write_bytes(data[: len(data) // 2])
            _die()
        return out

    real_rmtree = shutil.rmtree

    def rmtree(path, *args, **kwargs):
        path = Path(path)
        if where == "prune" and current["step"] == step and path.is_dir() and "step_" in path.name:
            next(f for f in sorted(path.iterdir()) if f.is_file()).unlink()
            _die()
        return real_rmtree(path, *args, **kwargs)

    checkpoints.save_checkpoint = save_checkpoint
    accelerate.Accelerator.save_state = save_state
    checkpoints.shutil.rmtree = rmtree


def main() -> None:
    fault, argv = sys.argv[1], sys.argv[2:]
    if fault != "none":
        _install(fault)
    from hf_reduce_cli import main as cli

    sys.exit(cli(argv))


if __name__ == "__main__":
    main()
