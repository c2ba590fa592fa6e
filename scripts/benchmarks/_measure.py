"""Measurement helpers shared by the benchmark scripts."""

from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def saved_tensor_bytes(counter: dict[str, int]):
    """Add to ``counter["bytes"]`` the bytes of the distinct storages autograd saves for backward in the block
    (what a training step must hold beyond the weights, measurable on a CPU where no allocator peak exists)."""
    seen: set[int] = set()

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            counter["bytes"] += storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield


def write_results(name: str, payload) -> str:
    """Write ``payload`` as ``scripts/benchmarks/results/<name>.json`` (to a temporary file, then renamed)."""
    from pathlib import Path

    from hf_reduce.utils import write_json_atomic

    folder = Path(__file__).resolve().parent / "results"
    folder.mkdir(exist_ok=True)
    return str(write_json_atomic(folder / f"{name}.json", payload))


class ResultsFile:
    """A resumable benchmark's JSON results. Every read is fresh and every update re-reads, applies the change
    and writes atomically, so studies running side by side keep each other's results and an interrupted one
    resumes from what it wrote last."""

    def __init__(self, path, empty: dict) -> None:
        self.path, self.empty = path, empty

    def load(self) -> dict:
        import copy
        import json

        # A part added after the file was written starts empty.
        return {
            **copy.deepcopy(self.empty),
            **(json.loads(self.path.read_text()) if self.path.exists() else {}),
        }

    def update(self, change) -> dict:
        from hf_reduce.utils import write_json_atomic

        done = self.load()
        change(done)
        write_json_atomic(self.path, done)
        return done
