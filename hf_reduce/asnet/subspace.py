"""Active subspaces of a network's layers (Cui, Zhang, Daulbaev, Gusak, Oseledets and Zhang, "Active Subspace
of Neural Networks: Structural Analysis and Universal Attacks", 2020).

For a layer with output ``z ∈ R^n`` and the loss ``ℓ`` of the rest of the network, the active subspace is
spanned by the top eigenvectors of ``C = E[∇_z ℓ ∇_z ℓᵀ]``; the number of *active neurons* is the number of
eigenvalues needed to keep ``1 - threshold`` of ``trace C``. With a sum-reduced loss the gradient of a batch
with respect to ``z`` holds every sample's own gradient, so one backward pass per batch gives them all.

``C`` is never formed: the gradients stream through a Frequent Directions sketch (Liberty, 2013) of ``sketch``
rows, whose covariance ``BᵀB`` under-estimates ``GᵀG`` by at most ``‖G‖_F² / (sketch - k)`` in spectral
norm for rank ``k``, with O(sketch · n) memory. When all gradients fit in the sketch it is exact.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..progress import progress

logger = logging.getLogger(__name__)


class FrequentDirections:
    """Streaming sketch ``B`` (``size`` x n) with ``BᵀB ≈ GᵀG`` for the rows ``G`` fed to :meth:`update`."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"sketch size must be >= 1, got {size}")
        self.size = size
        self.rows: torch.Tensor | None = None
        self.count = 0
        self.shrunk = False

    def update(self, rows: torch.Tensor) -> None:
        rows = rows.detach().double().cpu()
        self.count += len(rows)
        stacked = rows if self.rows is None else torch.cat([self.rows, rows])
        if len(stacked) <= 2 * self.size:
            self.rows = stacked
            return
        self.rows = self._shrink(stacked)

    def _shrink(self, stacked: torch.Tensor) -> torch.Tensor:
        _, s, vh = torch.linalg.svd(stacked, full_matrices=False)
        delta = s[self.size] ** 2 if len(s) > self.size else 0.0
        self.shrunk = self.shrunk or bool(delta > 0)
        kept = torch.sqrt((s[: self.size] ** 2 - delta).clamp_min(0))
        return kept[:, None] * vh[: self.size]

    def eigen(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Eigenvalues (descending) and eigenvectors (columns) of ``BᵀB / count``: the covariance estimate."""
        if self.rows is None:
            raise ValueError("the sketch has seen no gradients")
        _, s, vh = torch.linalg.svd(self.rows, full_matrices=False)
        return s**2 / self.count, vh.T


def count_active(eigenvalues: torch.Tensor, threshold: float) -> int:
    """The smallest ``r`` whose top ``r`` eigenvalues keep at least ``1 - threshold`` of their sum."""
    if not 0 <= threshold < 1:
        raise ValueError(f"threshold must lie in [0, 1), got {threshold}")
    total = eigenvalues.sum()
    if total <= 0:
        return 0
    kept = eigenvalues.cumsum(0) / total
    return int((kept < 1 - threshold - 1e-12).sum().item()) + 1


@dataclass
class ActiveSubspace:
    """A layer's active subspace: eigenvalues, eigenvectors (n x k, columns) and active-neuron count."""

    layer: str
    neurons: int
    eigenvalues: torch.Tensor
    directions: torch.Tensor
    threshold: float
    samples: int
    exact: bool
    n_active: int = field(init=False)

    def __post_init__(self) -> None:
        self.n_active = count_active(self.eigenvalues, self.threshold)

    def basis(self, rank: int) -> torch.Tensor:
        if rank > self.directions.shape[1]:
            raise ValueError(
                f"rank {rank} exceeds the {self.directions.shape[1]} directions estimated for {self.layer!r}: "
                "raise the sketch size or use more samples"
            )
        return self.directions[:, :rank]


def _default_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits, labels, reduction="sum")


def _batch_inputs(batch: dict | Sequence, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, dict):
        return batch["pixel_values"].to(device), batch["labels"].to(device)
    return batch[0].to(device), batch[1].to(device)


def active_subspaces(
    model: nn.Module,
    layers: Sequence[str],
    dataloader: Iterable,
    *,
    threshold: float = 0.05,
    sketch: int = 256,
    max_samples: int = 2048,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = _default_loss,
    input_layer: str = "pixel_values",
) -> dict[str, ActiveSubspace]:
    """Active subspaces of the outputs of the named sub-modules of ``model`` (``input_layer`` stands for the
    input itself), estimated from per-sample loss gradients over ``max_samples`` samples of ``dataloader``.

    ``loss_fn(logits, labels)`` must sum over the batch (the default is the summed cross-entropy).
    """
    if not 0 <= threshold < 1:
        raise ValueError(f"threshold must lie in [0, 1), got {threshold}")
    modules = dict(model.named_modules())
    unknown = [name for name in layers if name != input_layer and name not in modules]
    if unknown:
        raise ValueError(f"unknown layer(s) {unknown}; model layers include {list(modules)[1:12]} ...")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    captured: dict[str, torch.Tensor] = {}

    def capture(name: str):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            captured[name] = output

        return hook

    handles = [modules[name].register_forward_hook(capture(name)) for name in layers if name != input_layer]
    sketches = {name: FrequentDirections(sketch) for name in layers}
    neurons: dict[str, int] = {}
    seen = 0
    try:
        for batch in progress(dataloader, desc="active subspaces", leave=False):
            x, labels = _batch_inputs(batch, device)
            x = x[: max_samples - seen].requires_grad_(input_layer in layers)
            labels = labels[: len(x)]
            logits = model(pixel_values=x).logits
            targets = [captured[name] if name != input_layer else x for name in layers]
            grads = torch.autograd.grad(loss_fn(logits, labels), targets)
            for name, grad in zip(layers, grads, strict=True):
                sketches[name].update(grad.flatten(1))
                neurons[name] = grad[0].numel()
            captured.clear()
            seen += len(x)
            if seen >= max_samples:
                break
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if seen == 0:
        raise ValueError("the dataloader gave no batches")
    out = {}
    for name in layers:
        eigenvalues, directions = sketches[name].eigen()
        out[name] = ActiveSubspace(
            name, neurons[name], eigenvalues, directions, threshold, seen, exact=not sketches[name].shrunk
        )
        logger.debug("%s: %d of %d neurons active", name, out[name].n_active, neurons[name])
    return out


def layer_report(subspaces: dict[str, ActiveSubspace]) -> list[dict[str, object]]:
    """One row per layer: neurons, active neurons, their share, and the spectrum's decay."""
    rows = []
    for name, sub in subspaces.items():
        ev = sub.eigenvalues
        rows.append(
            {
                "layer": name,
                "neurons": sub.neurons,
                "active neurons": sub.n_active,
                "active %": round(100 * sub.n_active / sub.neurons, 2),
                "λ_10 / λ_1": float(ev[min(9, len(ev) - 1)] / ev[0]) if ev[0] > 0 else 0.0,
                "samples": sub.samples,
                "exact": sub.exact,
            }
        )
    return rows


def plot_spectra(subspaces: dict[str, ActiveSubspace], path: str, top: int = 100) -> None:
    """Normalised eigenvalue spectra of every layer on a log scale (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError("plotting needs matplotlib: pip install matplotlib") from error
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, sub in subspaces.items():
        ev = sub.eigenvalues[:top]
        ax.semilogy(range(1, len(ev) + 1), (ev / ev[0]).numpy(), label=f"{name} ({sub.n_active} active)")
    ax.set_xlabel("eigenvalue index")
    ax.set_ylabel("λ_i / λ_1")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
