"""Training checkpoints: write one whole or not at all, and load one only once it is verified.

A checkpoint is ``<output_dir>/checkpoints/step_N``: accelerate's saved state (weights, optimizer, sampler),
every random generator's state as JSON (``rng_state_<rank>.json``), ``trainer_state.json`` (the step
counters, the LR scheduler's and the solver samplers' states, as JSON rather than accelerate's pickled custom
objects) and, written last, :mod:`hf_reduce.runs`' ``manifest.json`` (size and sha256 of every file, and the
fingerprint of the run that wrote it). It is written into ``.tmp_step_N`` and renamed into place, so a folder
named ``step_N`` is always complete; :func:`hf_reduce.runs.resolve_checkpoint` checks it before any load.

Loading reads ``optimizer.bin``, the sampler state and accelerate's ``random_states_<rank>.pkl`` through
torch's restricted ``weights_only`` unpickler (accelerate's default): it builds tensors and plain containers
only and refuses any other object, which becomes a one-line error naming the file.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from .runs import (
    STATE_FILE,
    active_run,
    check_state,
    checkpoint_step,
    resolve_checkpoint,
    write_manifest,
)
from .runs import CheckpointError as CheckpointError  # re-exported
from .utils import no_space_error

logger = logging.getLogger(__name__)


def find_checkpoint(output_dir: str | os.PathLike, which: str = "latest") -> Path:
    """Resolve ``which`` (a folder, or ``"latest"``) to a verified checkpoint folder written by
    :func:`hf_reduce.training.train` (see :func:`hf_reduce.runs.resolve_checkpoint`)."""
    found = resolve_checkpoint(output_dir, which, active_run(output_dir))
    if found is None:
        raise FileNotFoundError(f"no intact checkpoint to resume from in {Path(output_dir) / 'checkpoints'}")
    return found


def _state_bytes(accelerator: Accelerator) -> int:
    """About how many bytes a checkpoint holds (weights and optimizer state): for the disk-full message."""
    tensors = [t for model in accelerator._models for t in model.state_dict().values()]
    for optimizer in accelerator._optimizers:
        tensors += [v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v)]
    return sum(t.numel() * t.element_size() for t in tensors if torch.is_tensor(t))


def save_checkpoint(
    accelerator: Accelerator, output_dir: str, save_total_limit: int, state: dict[str, Any]
) -> None:
    """Write the accelerate state to a temporary folder, then move it into place (never half-written); keep
    the newest ``save_total_limit`` checkpoints."""
    root = Path(output_dir) / "checkpoints"
    final = root / f"step_{state['global_step']}"
    tmp = root / f".tmp_step_{state['global_step']}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(tmp))
        _save_rng_state(tmp, accelerator.process_index)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            (tmp / STATE_FILE).write_text(json.dumps(state))
            write_manifest(tmp, active_run(output_dir))  # last: a folder without it is no checkpoint
    except Exception as error:  # a full disk: torch and safetensors report a short write in their own words
        full = no_space_error(
            error, tmp, f"checkpoint step_{state['global_step']}", _state_bytes(accelerator)
        )
        shutil.rmtree(tmp, ignore_errors=True)
        if full is None:
            raise
        raise full from error
    if accelerator.is_main_process:
        if final.exists():
            _discard(final)
        tmp.rename(final)
        kept = sorted((checkpoint_step(p), p) for p in root.glob("step_*") if checkpoint_step(p) is not None)
        for _, old in kept[: max(0, len(kept) - save_total_limit)]:
            _discard(old)
    accelerator.wait_for_everyone()


def _discard(checkpoint: Path) -> None:
    """Delete a checkpoint by renaming it out of sight first, so a kill mid-deletion never leaves a
    half-deleted ``step_N`` that looks like a checkpoint (the hidden leftover is removed on the next run)."""
    hidden = checkpoint.with_name(f".del_{checkpoint.name}")
    shutil.rmtree(hidden, ignore_errors=True)
    checkpoint.rename(hidden)
    shutil.rmtree(hidden, ignore_errors=True)


def remove_stray_checkpoints(output_dir: str | os.PathLike) -> None:
    """Remove what a killed run left half-written (``.tmp_step_N``) or half-deleted (``.del_step_N``).
    One writer per output folder is assumed (the CLI holds :mod:`hf_reduce.runs`' run.lock)."""
    for stray in sorted((Path(output_dir) / "checkpoints").glob(".*_step_*")):
        shutil.rmtree(stray, ignore_errors=True)


def keep_only(names: set[str]) -> Callable:
    """An accelerate save-state hook that keeps only ``names`` in the saved model state."""

    def hook(models: list, weights: list, output_dir: str) -> None:
        for i, state in enumerate(weights):
            weights[i] = {k: v for k, v in state.items() if k in names}

    return hook


def _check_saved_names(checkpoint: Path, trainable: set[str]) -> None:
    """An adapter checkpoint must hold exactly the run's trainable parameters (loaded non-strictly)."""
    from safetensors import safe_open

    files = sorted(Path(checkpoint).glob("model*.safetensors"))
    if not files:
        raise ValueError(f"checkpoint {checkpoint} holds no model*.safetensors")
    with safe_open(str(files[0]), "pt") as handle:
        saved = set(handle.keys())
    if saved != trainable:
        missing, extra = sorted(trainable - saved), sorted(saved - trainable)
        raise ValueError(
            f"checkpoint {checkpoint} does not hold this run's trainable parameters: missing {missing[:3]}, "
            f"unexpected {extra[:3]}"
        )


def _refused_pickle(checkpoint: Path) -> str | None:
    """The first file of ``checkpoint`` that torch's restricted unpickler refuses (with its reason)."""
    for path in sorted(Path(checkpoint).glob("*")):
        if path.suffix in (".bin", ".pkl", ".pt"):
            try:
                torch.load(path, map_location="cpu", weights_only=True)
            except Exception as error:
                return f"{path}: {str(error).strip().splitlines()[0]}"
    return None


def load_checkpoint(
    accelerator: Accelerator,
    checkpoint: Path,
    scheduler: Any,
    stateful: dict[str, Any] | None,
    *,
    adapter_run: bool,
    trainable: set[str],
    steps_per_epoch: int,
    accumulation: int,
) -> dict[str, Any]:
    """Restore a verified checkpoint into the prepared objects; returns its ``trainer_state.json``."""
    state = json.loads((checkpoint / STATE_FILE).read_text())
    check_state(checkpoint, state, steps_per_epoch, accumulation)
    if adapter_run:
        _check_saved_names(checkpoint, trainable)
    try:
        accelerator.load_state(str(checkpoint), strict=not adapter_run)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        refused = _refused_pickle(checkpoint)
        if refused is None:
            raise
        raise CheckpointError(
            f"cannot resume from {checkpoint}: torch's restricted loader refuses {refused}; resume from "
            "another checkpoint"
        ) from error
    scheduler.load_state_dict(state["scheduler"])
    _load_rng_state(checkpoint, accelerator.process_index)
    for name, obj in (stateful or {}).items():
        if name not in state.get("stateful", {}):
            raise ValueError(f"checkpoint {checkpoint} holds no state for {name!r}; it cannot resume exactly")
        obj.load_state_dict(state["stateful"][name])
    return state


def _rng_file(folder: Path, rank: int) -> Path:
    return Path(folder) / f"rng_state_{rank}.json"


def _save_rng_state(folder: Path, rank: int) -> None:
    """Every random generator's state as JSON: restoring it needs no unpickling (accelerate's
    random_states_*.pkl is loaded best-effort, and skipped with an INFO line when it fails)."""
    import random

    import numpy as np

    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state().tolist(),
        "cuda": [s.tolist() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
    }
    _rng_file(folder, rank).write_text(json.dumps(state))


def _load_rng_state(folder: Path, rank: int) -> None:
    import random

    import numpy as np

    path = _rng_file(folder, rank)
    try:
        state = json.loads(path.read_text())
        random.setstate((state["python"][0], tuple(state["python"][1]), state["python"][2]))
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"cannot resume exactly from {folder}: its random-generator state {path.name} is missing or unreadable "
            f"({type(error).__name__}: {error})"
        ) from error
