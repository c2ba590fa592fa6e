"""One run per output folder: a run records what it is, and no run adopts, overwrites or shares another's.

A command's output folder holds its checkpoints (``checkpoints/step_N``) and its published model. Without a
record of which run wrote them, a new run in the same folder silently adopts the old run's checkpoints
(``save_total_limit`` deletes the new ones, ``--resume_from_checkpoint latest`` restores the other run). So
every run writes ``run.json`` (its fingerprint: the command and every argument that changes the result) and
holds ``run.lock`` (its pid) while it works:

* a fresh run in a folder that holds checkpoints or a model is refused, unless ``--overwrite_output_dir``
  (which removes them first) or ``--resume_from_checkpoint`` (which continues the *same* run);
* resuming is refused when the folder's fingerprint differs from this run's;
* a folder locked by a live process is refused; a stale lock (dead pid) is taken over with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .utils import pid_alive, write_json_atomic

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"
LOCK_FILE = "run.lock"
#: What a run leaves in its folder (removed by ``--overwrite_output_dir``); the first ones mark a finished or
#: resumable run.
RESULTS = ("checkpoints", "model", "adapter", "attack_results.json")
RUN_OUTPUTS = (*RESULTS, "attack_results.md", "all_results.json", RUN_FILE)
#: Arguments that do not change what a run computes (where it writes, how it logs, how it resumes).
NOT_IN_FINGERPRINT = frozenset(
    {
        "output_dir",
        "overwrite_output_dir",
        "resume_from_checkpoint",
        "logging_steps",
        "disable_tqdm",
        "checkpointing_steps",
        "save_total_limit",
        "dataloader_num_workers",
        "push_to_hub",
        "hub_model_id",
        "hub_private_repo",
        "report_to",
    }
)


class RunFolderError(ValueError):
    """The output folder belongs to another run, or is being written by one."""


def fingerprint(command: str, *argument_groups: Any) -> dict[str, Any]:
    """The command and every result-changing argument of its dataclass argument groups."""
    from dataclasses import asdict, is_dataclass

    arguments: dict[str, Any] = {}
    for group in argument_groups:
        if is_dataclass(group):
            arguments.update({k: v for k, v in asdict(group).items() if k not in NOT_IN_FINGERPRINT})
    return json.loads(json.dumps({"command": command, "arguments": arguments}, default=str, sort_keys=True))


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    lock = folder / LOCK_FILE
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            text = lock.read_text().strip() if lock.exists() else ""
            owner = int(text) if text.isdigit() else None
            if owner is not None and owner != os.getpid() and pid_alive(owner):
                raise RunFolderError(
                    f"{folder} is being written by process {owner} (its {LOCK_FILE}); wait for it, or use "
                    "another --output_dir"
                ) from None
            logger.warning("taking over the stale lock %s of process %s, which no longer runs", lock, owner)
            lock.unlink(missing_ok=True)
    with os.fdopen(fd, "w") as handle:
        handle.write(str(os.getpid()))
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _has_outputs(folder: Path) -> list[str]:
    return [name for name in RESULTS if (folder / name).exists()]


@contextmanager
def run_folder(
    output_dir: str | os.PathLike,
    run: dict[str, Any],
    *,
    overwrite: bool = False,
    resume: str | None = None,
    resumable: bool = True,
) -> Iterator[Path]:
    """Hold ``output_dir`` for the run ``run`` (a :func:`fingerprint`) while the block works; see the module
    docstring for what is refused. ``resume`` is the run's ``--resume_from_checkpoint`` value; a command
    that trains nothing is not ``resumable``."""
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder):
        record = folder / RUN_FILE
        recorded = json.loads(record.read_text()) if record.exists() else None
        outputs = _has_outputs(folder)
        if resume:
            if recorded is not None and recorded != run:
                changed = sorted(
                    k
                    for k in set(recorded.get("arguments", {})) | set(run["arguments"])
                    if recorded.get("arguments", {}).get(k) != run["arguments"].get(k)
                )
                detail = f"arguments {changed}" if changed else f"command {recorded.get('command')!r}"
                raise RunFolderError(
                    f"cannot resume in {folder}: its checkpoints belong to another run (different {detail}); "
                    "resume with the same arguments, or start afresh with --overwrite_output_dir"
                )
        elif outputs and not overwrite:
            continuing = ", or --resume_from_checkpoint latest to continue that same run" if resumable else ""
            raise RunFolderError(
                f"{folder} already holds a run's {', '.join(outputs)}; pass --overwrite_output_dir to replace "
                f"it{continuing}"
            )
        elif outputs:
            for name in RUN_OUTPUTS:
                target = folder / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
        write_json_atomic(record, run)
        yield folder
