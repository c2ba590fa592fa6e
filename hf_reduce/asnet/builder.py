"""Build an ASNet from a trained VGG-style classifier (Cui et al., 2020, Section 3).

1. Pre-model: the first ``cut`` conv blocks of the original, kept as they are.
2. The active subspace of their output (per-sample loss gradients, :mod:`.subspace`): ``V_r``.
3. Standardised active variables ``ξ = (V_rᵀ z - μ) / σ`` over the data.
4. A PCE head: orthonormal Hermite polynomials of ``ξ`` of total degree ``<= degree``, fitted by
   (ridge) least squares to the original model's logits on the same data.
Distillation fine-tuning is left to the caller (``hf_reduce.commands.build_asnet``) so that the shared training
loop, with its devices and validation, does it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from torch import nn

from ..maxvol.rom import block_parts
from ..progress import progress
from .configuration_asnet import ASNetConfig
from .modeling_asnet import ASNetForImageClassification
from .pce import fit_l1, fit_least_squares, hermite_features, total_degree_terms
from .subspace import ActiveSubspace, active_subspaces

logger = logging.getLogger(__name__)


@torch.no_grad()
def _pre_model_outputs(
    model: nn.Module, cut: int, dataloader: Iterable, max_samples: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flattened pre-model outputs and the original logits for ``max_samples`` samples."""
    features, logits, seen = [], [], 0
    for batch in progress(dataloader, desc="fitting data", leave=False):
        x = (batch["pixel_values"] if isinstance(batch, dict) else batch[0])[: max_samples - seen].to(device)
        hidden = model.normalize(x)
        for block in list(model.features)[:cut]:
            hidden = block(hidden)
        features.append(hidden.flatten(1).double().cpu())
        logits.append(model(pixel_values=x).logits.double().cpu())
        seen += len(x)
        if seen >= max_samples:
            break
    return torch.cat(features), torch.cat(logits)


@torch.no_grad()
def build_asnet(
    model: nn.Module,
    dataloader: Iterable,
    *,
    cut: int,
    rank: int | None = None,
    degree: int = 2,
    threshold: float = 0.05,
    sketch: int = 256,
    max_samples: int = 4096,
    ridge: float = 1e-6,
    l1: float = 0.0,
    subspace: ActiveSubspace | None = None,
    original_model: str | None = None,
) -> ASNetForImageClassification:
    """The ASNet of ``model`` cut after ``cut`` conv blocks (``1 <= cut < len(model.features)``).

    ``rank`` defaults to the number of active neurons at ``threshold``. ``dataloader`` yields batches with
    ``pixel_values`` and ``labels`` (the labels define the loss whose gradients span the subspace).
    ``subspace`` skips the gradient pass when already computed (e.g. by :func:`active_subspaces`).
    ``l1 > 0`` fits a sparse head (group lasso over the basis functions) and keeps only the terms it uses.
    """
    blocks = list(model.features)
    if not 1 <= cut < len(blocks):
        raise ValueError(f"cut must lie in [1, {len(blocks) - 1}] for {len(blocks)} conv blocks, got {cut}")
    head = [block_parts(b) for b in blocks[:cut]]
    layer = f"features.{cut - 1}"
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    if subspace is None:
        with torch.enable_grad():
            subspace = active_subspaces(
                model, [layer], dataloader, threshold=threshold, sketch=sketch, max_samples=max_samples
            )[layer]
    rank = rank or subspace.n_active
    V = subspace.basis(rank)  # neurons x rank, float64
    z, teacher = _pre_model_outputs(model, cut, dataloader, max_samples, device)
    projected = z @ V
    mean, std = projected.mean(0), projected.std(0).clamp_min(1e-12)
    config_fields = dict(
        num_channels=model.config.num_channels,
        image_size=model.config.image_size,
        head_layers=[
            {
                "in_channels": p.conv.in_channels,
                "out_channels": p.conv.out_channels,
                "batch_norm": p.norm is not None,
                "pool": p.pool,
            }
            for p in head
        ],
        neurons=V.shape[0],
        rank=rank,
        degree=degree,
        image_mean=list(model.config.image_mean),
        image_std=list(model.config.image_std),
        id2label=dict(model.config.id2label),
        label2id=dict(model.config.label2id),
    )
    terms = total_degree_terms(rank, degree)
    if l1 == 0 and len(terms) >= len(z):
        # As many unknowns as equations: least squares interpolates, and its fit error (0) says nothing.
        raise ValueError(
            f"the degree-{degree} PCE on rank {rank} has {len(terms)} terms but only {len(z)} samples were "
            f"fitted: use more samples (max_samples > {len(terms)}), a lower rank or degree, or l1 > 0"
        )
    features = hermite_features((projected - mean) / std, terms, degree)
    if l1 > 0:
        coefficients = fit_l1(features, teacher, l1)
        used = coefficients.abs().amax(1) > 0
        used[0] = True  # the constant term
        terms, features, coefficients = terms[used], features[:, used], coefficients[used]
        config_fields["kept_terms"] = int(used.sum())
    else:
        coefficients = fit_least_squares(features, teacher, ridge)
    config = ASNetConfig(**config_fields)
    asnet = ASNetForImageClassification(config)
    asnet.terms.copy_(terms)
    fit_error = float((features @ coefficients - teacher).norm() / teacher.norm())
    agreement = float((features @ coefficients).argmax(1).eq(teacher.argmax(1)).double().mean())
    asnet.config.reduction = {
        "original_model": original_model
        or getattr(model.config, "_name_or_path", "")
        or type(model).__name__,
        "cut": cut,
        "layer": layer,
        "layer_neurons": subspace.neurons,
        "active_neurons": subspace.n_active,
        "threshold": threshold,
        "rank": rank,
        "degree": degree,
        "pce_terms": config.n_terms,
        "pce_full_terms": config.full_terms,
        "l1": l1,
        "samples": len(z),
        "fit_relative_error": round(fit_error, 6),
        "fit_agreement_with_original": round(agreement, 6),
    }
    logger.debug("ASNet cut %d, rank %d, %d PCE terms: fit error %.4f", cut, rank, config.n_terms, fit_error)
    for kept, original in zip(asnet.pre_model, blocks, strict=False):
        kept.load_state_dict(original.state_dict(), strict=False)
    asnet.projection.weight.copy_((V / std).T.float())
    asnet.projection.bias.copy_((-mean / std).float())
    asnet.pce.weight.copy_(coefficients.T.float())
    asnet.pce.bias.zero_()  # the constant term of the basis carries the bias
    model.train(was_training)
    return asnet.to(device).eval()
