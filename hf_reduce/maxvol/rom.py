"""Reduced-order models of CNNs with the maximum-volume algorithm (Gusak, Daulbaev, Ponomarev, Cichocki and
Oseledets, "Reduced-Order Modeling of Deep Neural Networks", 2021).

The output ``x_l`` of block ``l`` of a conv tail lives near the span of its top singular vectors ``U_l``
(sampled over data). As in DEIM, a few rows ``I_l`` of ``U_l`` (picked by (rect_)maxvol) determine the rest:
``x_l ≈ C_l x_l[I_l]`` with ``C_l = U_l U_l[I_l]⁺``. Block ``l`` is ``x_l = pool(relu(s ⊙ conv(x_{l-1}) + b))``
(batch norm folded into ``s``, ``b``), so its selected neurons are

    x_l[I_l] = maxpool_4(relu(M_l x_{l-1}[I_{l-1}] + c_l)),   M_l = (s ⊙ conv(C_{l-1}))[J_l],

where ``J_l`` are the pre-pool neurons of the 2x2 windows of ``I_l`` (``I_l`` itself without pooling): one
small dense matrix per block, computed exactly by running the conv on the columns of ``C_{l-1}``. The
classifier needs the full ``x_k = C_k x_k[I_k]``; that linear reconstruction (and a global average pool, if
any) is folded into its first linear layer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..progress import progress
from .algorithm import maxvol, rect_maxvol

if TYPE_CHECKING:
    from .modeling_maxvol import MaxVolForImageClassification

logger = logging.getLogger(__name__)

SELECTIONS = ("rect_maxvol", "maxvol")


@dataclass
class BlockParts:
    """A ``conv -> [batch norm] -> ReLU -> [2x2 max-pool]`` block, taken apart."""

    conv: nn.Conv2d
    norm: nn.BatchNorm2d | None
    pool: bool


def block_parts(block: nn.Module) -> BlockParts:
    """Take apart a :class:`~hf_reduce.cnn.modeling_vgg.VGGBlock` or an ``nn.Sequential`` of the same layers.

    Anything else (a residual block, another activation, a strided or grouped conv, another pooling) raises
    a ``ValueError`` that names it, rather than producing a wrong reduced model.
    """
    layers = (
        list(block.children())
        if not hasattr(block, "conv")
        else [block.conv, block.norm, block.act, block.pool]
    )
    layers = [m for m in layers if not isinstance(m, nn.Identity)]
    kinds = [type(m).__name__ for m in layers]
    ok = (
        len(layers) in (2, 3, 4)
        and isinstance(layers[0], nn.Conv2d)
        and (layers[0].stride, layers[0].groups, layers[0].dilation) == ((1, 1), 1, (1, 1))
    )
    norm = layers[1] if ok and isinstance(layers[1], nn.BatchNorm2d) else None
    rest = layers[1 + (norm is not None) :]
    ok = ok and bool(rest) and isinstance(rest[0], nn.ReLU) and len(rest) <= 2
    pool = len(rest) == 2
    if ok and pool:
        p = rest[1]
        ok = isinstance(p, nn.MaxPool2d) and p.kernel_size in (2, (2, 2)) and p.stride in (2, (2, 2))
        ok = ok and p.padding in (0, (0, 0)) and not p.ceil_mode
    if not ok:
        raise ValueError(
            f"cannot reduce a {type(block).__name__} made of {kinds}: MaxVol reduces blocks "
            "conv3x3 (stride 1) -> [BatchNorm2d] -> ReLU -> [MaxPool2d(2, 2)] (no residual connections)"
        )
    return BlockParts(layers[0], norm, pool)


def folded_scale_shift(parts: BlockParts) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``s``, ``b`` with ``norm(conv(x)) = s · conv_nobias(x) + b`` (batch norm in eval mode)."""
    conv = parts.conv
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros(conv.out_channels)
    if parts.norm is None:
        return torch.ones_like(bias), bias
    n = parts.norm
    scale = n.weight.detach() / torch.sqrt(n.running_var + n.eps)
    return scale, scale * (bias - n.running_mean) + n.bias.detach()


def pool_window_rows(selected: torch.Tensor, channels: int, height: int, width: int) -> torch.Tensor:
    """Pre-pool flat indices of the 2x2 windows of pooled flat indices ``selected`` (4 per neuron, in order)."""
    ph, pw = height // 2, width // 2
    c, rest = selected // (ph * pw), selected % (ph * pw)
    i, j = rest // pw, rest % pw
    offsets = torch.tensor([(0, 0), (0, 1), (1, 0), (1, 1)], device=selected.device)
    rows = 2 * i[:, None] + offsets[:, 0]
    cols = 2 * j[:, None] + offsets[:, 1]
    return ((c[:, None] * height + rows) * width + cols).reshape(-1)


@dataclass
class Subspace:
    """The selected neurons of one activation and the reconstruction ``x ≈ C x[index]``."""

    index: torch.Tensor
    C: torch.Tensor
    rank: int
    energy: float


@dataclass
class SampledActivation:
    """The SVD of one sampled activation: left singular vectors (neurons x k) and the cumulative energy."""

    U: torch.Tensor
    cumulative: torch.Tensor
    samples: int
    # Selections already made, by (rank, selection, rect_tol, max_neurons_factor): a rank search asks for the
    # same subspace at the same rank in many trials, and rect_maxvol at rank ~1000 takes seconds.
    _selected: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def of(cls, activations: torch.Tensor) -> SampledActivation:
        """From (samples x neurons) activations."""
        U, S, _ = torch.linalg.svd(activations.T.double(), full_matrices=False)
        cumulative = (S**2).cumsum(0) / (S**2).sum().clamp_min(1e-300)
        return cls(U, cumulative, activations.shape[0])

    @property
    def neurons(self) -> int:
        return self.U.shape[0]

    def rank_for(self, energy: float) -> int:
        """The smallest rank that keeps ``energy`` of the squared singular values."""
        return int((self.cumulative < energy).sum().item()) + 1

    def select(
        self, rank: int | None, energy: float, selection: str, rect_tol: float, max_neurons_factor: float
    ) -> Subspace:
        """(rect_)maxvol on the top ``rank`` left vectors (``rank=None``: :meth:`rank_for` ``energy``)."""
        rank = self.rank_for(energy) if rank is None else rank
        key = (rank, selection, rect_tol, max_neurons_factor)
        if key not in self._selected:
            self._selected[key] = self._select(rank, selection, rect_tol, max_neurons_factor)
        return self._selected[key]

    def _select(self, rank: int, selection: str, rect_tol: float, max_neurons_factor: float) -> Subspace:
        if rank > len(self.cumulative) or rank < 1:
            raise ValueError(
                f"rank {rank} is impossible for an activation of {self.neurons} neurons sampled "
                f"{self.samples} times (at most {len(self.cumulative)}): lower the rank or sample more data"
            )
        basis = self.U[:, :rank]
        if selection == "maxvol":
            index, C = maxvol(basis)
        else:
            max_rows = max(rank, min(self.neurons, int(round(max_neurons_factor * rank))))
            index, C = rect_maxvol(basis, tol=rect_tol, max_rows=max_rows)
        order = torch.argsort(index)  # neurons in memory order: gathers stay cache-friendly
        return Subspace(index[order], C[:, order].float(), rank, float(self.cumulative[rank - 1]))


def select_neurons(
    activations: torch.Tensor,
    rank: int | None,
    energy: float,
    selection: str,
    rect_tol: float,
    max_neurons_factor: float,
) -> Subspace:
    """SVD of the (samples x neurons) ``activations``, then (rect_)maxvol on the top ``rank`` left vectors.

    ``rank=None`` takes the smallest rank that keeps ``energy`` of the squared singular values.
    """
    return SampledActivation.of(activations).select(rank, energy, selection, rect_tol, max_neurons_factor)


@dataclass
class ReducedLayer:
    """``relu(pool_4(weight @ z + bias))`` over the selected neurons."""

    weight: torch.Tensor
    bias: torch.Tensor
    pool: bool


@torch.no_grad()
def _collect(
    model: nn.Module, blocks: Sequence[nn.Module], keep: int, dataloader: Iterable, max_samples: int, device
) -> list[torch.Tensor]:
    """Activations (samples x neurons) of the tail's input and of every tail block's output."""
    outputs: list[list[torch.Tensor]] = [[] for _ in range(len(blocks) - keep + 1)]
    seen = 0
    for batch in progress(dataloader, desc="sampling activations", leave=False):
        pixels = (batch["pixel_values"] if isinstance(batch, dict) else batch[0]).to(device)
        hidden = model.normalize(pixels)
        for i, block in enumerate(blocks):
            if i == keep:
                outputs[0].append(hidden.flatten(1).cpu())
            hidden = block(hidden)
            if i >= keep:
                outputs[i - keep + 1].append(hidden.flatten(1).cpu())
        seen += len(pixels)
        if seen >= max_samples:
            break
    if seen == 0:
        raise ValueError("the dataloader gave no batches")
    return [torch.cat(o)[:max_samples] for o in outputs]


@dataclass
class Reduction:
    """Everything a reduced model needs: the kept blocks, the input selection, the reduced layers, the
    classifier's folded first layer, and the ranks / energies / neuron counts / samples for the report."""

    keep_blocks: int
    input_index: torch.Tensor
    layers: list[ReducedLayer]
    classifier_weight: torch.Tensor
    classifier_bias: torch.Tensor
    ranks: list[int]
    energies: list[float]
    neurons: list[int]
    samples: int


@dataclass
class TailSample:
    """A conv tail's activations sampled once and decomposed: the tail's input and every block's output.
    Reductions of the same tail at many ranks (a rank search) reuse it instead of sampling again."""

    keep_blocks: int
    shapes: list[tuple[int, int, int]]
    activations: list[SampledActivation]
    # Sums of the conv blocks' weights and statistics when sampled: a reduction built from the sample of
    # another model (or of this one before more training) would be silently wrong.
    fingerprint: torch.Tensor


def _fingerprint(model: nn.Module) -> torch.Tensor:
    return torch.stack(
        [
            t.detach().double().sum().cpu()
            for t in model.features.state_dict().values()
            if t.is_floating_point()
        ]
    )


def _check_keep_blocks(model: nn.Module, keep_blocks: int) -> list[nn.Module]:
    blocks = list(model.features)
    if not 0 <= keep_blocks < len(blocks):
        raise ValueError(
            f"keep_blocks must be in [0, {len(blocks) - 1}] for {len(blocks)} blocks, got {keep_blocks}"
        )
    return blocks


@torch.no_grad()
def sample_tail(
    model: nn.Module, dataloader: Iterable, *, keep_blocks: int, max_samples: int = 2048
) -> TailSample:
    """Sample and decompose the activations of blocks ``keep_blocks ...`` over ``max_samples`` images."""
    blocks = _check_keep_blocks(model, keep_blocks)
    for b in blocks[keep_blocks:]:
        block_parts(b)  # refuse what cannot be reduced before sampling
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    activations = _collect(model, blocks, keep_blocks, dataloader, max_samples, device)
    shapes = _shapes(model, blocks, keep_blocks, device)
    model.train(was_training)
    return TailSample(
        keep_blocks, shapes, [SampledActivation.of(a) for a in activations], _fingerprint(model)
    )


@torch.no_grad()
def reduce_tail(
    model: nn.Module,
    dataloader: Iterable | None,
    *,
    keep_blocks: int,
    rank: int | Sequence[int | None] | None = None,
    energy: float = 0.999,
    selection: str = "rect_maxvol",
    rect_tol: float = 1.0,
    max_neurons_factor: float = 2.0,
    max_samples: int = 2048,
    sample: TailSample | None = None,
) -> Reduction:
    """Reduce the blocks ``keep_blocks ...`` of ``model.features`` (a VGG-style classifier: ``normalize``,
    ``features``, ``pool``, ``classifier``). ``rank`` (one value, or one per subspace: the tail's input and
    each reduced block's output) or ``energy`` sets the subspace dimensions. ``sample`` (from
    :func:`sample_tail`) replaces sampling ``dataloader`` again."""
    if selection not in SELECTIONS:
        raise ValueError(f"unknown selection {selection!r}; available: {list(SELECTIONS)}")
    blocks = _check_keep_blocks(model, keep_blocks)
    parts = [block_parts(b) for b in blocks[keep_blocks:]]
    n_subspaces = len(parts) + 1
    ranks = list(rank) if isinstance(rank, Sequence) else [rank] * n_subspaces
    if len(ranks) != n_subspaces:
        raise ValueError(
            f"need one rank per subspace (the tail's input and {len(parts)} block outputs: {n_subspaces}), "
            f"got {len(ranks)}"
        )
    if sample is None:
        if dataloader is None:
            raise ValueError("reduce_tail needs a dataloader to sample, or a sample from sample_tail")
        sample = sample_tail(model, dataloader, keep_blocks=keep_blocks, max_samples=max_samples)
    elif sample.keep_blocks != keep_blocks:
        raise ValueError(f"the sample is of the tail after {sample.keep_blocks} blocks, not {keep_blocks}")
    else:
        now = _fingerprint(model)
        if now.shape != sample.fingerprint.shape or not torch.equal(now, sample.fingerprint):
            raise ValueError(
                "the sample was taken from another model, or from this one before its weights changed: "
                "sample it again with sample_tail"
            )
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    shapes = sample.shapes
    subspaces = []
    for k, (sampled, r) in enumerate(zip(sample.activations, ranks, strict=True)):
        sub = sampled.select(r, energy, selection, rect_tol, max_neurons_factor)
        logger.debug(
            "subspace %d (%d neurons): rank %d keeps %.5f of the energy, %d neurons selected",
            k,
            sampled.neurons,
            sub.rank,
            sub.energy,
            len(sub.index),
        )
        subspaces.append(sub)

    layers = []
    for k, p in enumerate(parts):
        previous, current = subspaces[k], subspaces[k + 1]
        c_in, h, w = shapes[k]
        columns = previous.C.T.reshape(-1, c_in, h, w).to(device)  # one input image per column of C
        pre = nn.functional.conv2d(columns, p.conv.weight, None, padding=p.conv.padding).flatten(1)
        c_out = p.conv.out_channels
        rows = pool_window_rows(current.index, c_out, h, w) if p.pool else current.index
        scale, shift = folded_scale_shift(p)
        channel = rows.to(device) // (h * w)
        weight = pre[:, rows.to(device)].T * scale.to(device)[channel, None]
        layers.append(ReducedLayer(weight.cpu(), shift.to(device)[channel].cpu(), p.pool))

    # Fold the reconstruction x_k = C_k z (and the model's pooling before the classifier) into its first layer.
    first = next(m for m in model.classifier.modules() if isinstance(m, nn.Linear))
    last = subspaces[-1]
    reconstructed = last.C.T.reshape(-1, *shapes[-1]).to(device)
    features = model.pool(reconstructed).flatten(1)  # (selected neurons) x (classifier input)
    classifier_weight = (first.weight @ features.T).cpu()
    model.train(was_training)
    return Reduction(
        keep_blocks=keep_blocks,
        input_index=subspaces[0].index.cpu(),
        layers=layers,
        classifier_weight=classifier_weight,
        classifier_bias=first.bias.detach().cpu().clone(),
        ranks=[s.rank for s in subspaces],
        energies=[s.energy for s in subspaces],
        neurons=[len(s.index) for s in subspaces],
        samples=sample.activations[0].samples,
    )


def _shapes(model: nn.Module, blocks: Sequence[nn.Module], keep: int, device) -> list[tuple[int, int, int]]:
    """(channels, height, width) of the tail's input and of every tail block's output."""
    size = model.config.image_size
    hidden = torch.zeros(1, model.config.num_channels, size, size, device=device)
    shapes = []
    for i, block in enumerate(blocks):
        if i == keep:
            shapes.append(tuple(hidden.shape[1:]))
        hidden = block(hidden)
        if i >= keep:
            shapes.append(tuple(hidden.shape[1:]))
    return shapes


def reduce_model(
    model: nn.Module,
    dataloader: Iterable | None,
    *,
    keep_blocks: int,
    rank: int | Sequence[int | None] | None = None,
    energy: float = 0.999,
    selection: str = "rect_maxvol",
    rect_tol: float = 1.0,
    max_neurons_factor: float = 2.0,
    max_samples: int = 2048,
    original_model: str | None = None,
    sample: TailSample | None = None,
) -> MaxVolForImageClassification:
    """The MaxVol reduced-order model of a trained VGG-style classifier, as a ``PreTrainedModel``.

    Blocks ``0 .. keep_blocks-1`` of ``model.features`` are kept; the rest of the conv tail is replaced by
    small dense maps over selected neurons (see the module docstring). ``dataloader`` yields batches with
    ``pixel_values``; ``max_samples`` images are used to estimate the subspaces. ``rank`` fixes each subspace's
    dimension (one value, or one per subspace), else ``energy`` chooses it. ``sample`` (from :func:`sample_tail`)
    replaces sampling ``dataloader`` again.
    """
    from .configuration_maxvol import MaxVolConfig
    from .modeling_maxvol import MaxVolForImageClassification

    reduction = reduce_tail(
        model,
        dataloader,
        keep_blocks=keep_blocks,
        rank=rank,
        energy=energy,
        selection=selection,
        rect_tol=rect_tol,
        max_neurons_factor=max_neurons_factor,
        max_samples=max_samples,
        sample=sample,
    )
    c = model.config
    head = [block_parts(b) for b in list(model.features)[:keep_blocks]]
    config = MaxVolConfig(
        num_channels=c.num_channels,
        image_size=c.image_size,
        head_layers=[
            {
                "in_channels": p.conv.in_channels,
                "out_channels": p.conv.out_channels,
                "batch_norm": p.norm is not None,
                "pool": p.pool,
            }
            for p in head
        ],
        input_neurons=len(reduction.input_index),
        reduced_layers=[
            {"in_features": layer.weight.shape[1], "out_features": layer.weight.shape[0], "pool": layer.pool}
            for layer in reduction.layers
        ],
        classifier_hidden_sizes=list(c.classifier_hidden_sizes),
        dropout=c.dropout,
        reduction={
            "original_model": original_model or getattr(c, "_name_or_path", "") or type(model).__name__,
            "original_model_type": c.model_type,
            "keep_blocks": keep_blocks,
            "reduced_blocks": len(reduction.layers),
            "ranks": reduction.ranks,
            "energies": [round(e, 6) for e in reduction.energies],
            "selected_neurons": reduction.neurons,
            "selection": selection,
            "rect_tol": rect_tol,
            "max_neurons_factor": max_neurons_factor,
            "samples": reduction.samples,
        },
        image_mean=list(c.image_mean),
        image_std=list(c.image_std),
        id2label=dict(c.id2label),
        label2id=dict(c.label2id),
    )
    reduced = MaxVolForImageClassification(config)
    device = next(model.parameters()).device
    with torch.no_grad():
        for kept, original in zip(reduced.head, model.features, strict=False):
            kept.load_state_dict(original.state_dict(), strict=False)
        reduced.input_index.copy_(reduction.input_index)
        for module, layer in zip(reduced.reduced, reduction.layers, strict=True):
            module.weight.copy_(layer.weight)
            module.bias.copy_(layer.bias)
        linears = [m for m in reduced.classifier.modules() if isinstance(m, nn.Linear)]
        originals = [m for m in model.classifier.modules() if isinstance(m, nn.Linear)]
        linears[0].weight.copy_(reduction.classifier_weight)
        linears[0].bias.copy_(reduction.classifier_bias)
        for new, old in zip(linears[1:], originals[1:], strict=True):
            new.load_state_dict(old.state_dict())
    return reduced.to(device).eval()
