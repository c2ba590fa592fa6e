"""The paper's sparse ASNet phase: training with an L1 penalty on the pre-model's convolutions, the projection
and the PCE coefficients, by proximal gradient steps (plain SGD, then soft-thresholding each weight by
``learning_rate * strength``), so that weights reach exactly zero.

Written here because no maintained library does it: ``torch.nn.utils.prune`` masks weights by magnitude once,
it does not train with the penalty. The zeros are stored densely: they shrink a sparse or compressed copy of the
weights (the paper's storage figure counts non-zeros), not dense latency or MACs.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from ..training import TrainingArguments, train

logger = logging.getLogger(__name__)


def _soft_threshold(optimizer: torch.optim.Optimizer, *_: Any) -> None:
    """Proximal step of ``strength * ‖w‖₁`` after each optimizer step, at the step's own learning rate."""
    with torch.no_grad():
        for group in optimizer.param_groups:
            threshold = group["lr"] * group["l1"]
            if threshold > 0:
                for p in group["params"]:
                    p.copy_(p.sign() * (p.abs() - threshold).clamp_min(0))


def penalised_weights(asnet: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``(pre-model convolution weights, [projection weight, PCE weight])``: the weights the paper penalises."""
    if not all(hasattr(asnet, part) for part in ("pre_model", "projection", "pce")):
        raise TypeError(f"sparse training needs an ASNetForImageClassification, got {type(asnet).__name__}")
    pre_model = [m.weight for m in asnet.pre_model.modules() if isinstance(m, nn.Conv2d)]
    return pre_model, [asnet.projection.weight, asnet.pce.weight]


def nonzero_parameters(model: nn.Module) -> dict[str, int]:
    """Non-zero entries per part (``pre_model``, ``projection``, ``pce``) and in all, beside the dense count."""
    parts = {"pre_model": model.pre_model, "projection": model.projection, "pce": model.pce}
    counts = {name: sum(int(p.count_nonzero()) for p in part.parameters()) for name, part in parts.items()}
    counts["total"] = sum(int(p.count_nonzero()) for p in model.parameters())
    counts["dense_total"] = sum(p.numel() for p in model.parameters())
    return counts


def sparse_train(
    asnet: nn.Module,
    train_data: Any,
    training_args: TrainingArguments,
    accelerator: Any,
    *,
    epochs: float,
    strength: float,
    pre_model_strength: float | None = None,
    learning_rate: float | None = None,
) -> dict[str, Any]:
    """Train ``asnet`` (in place) on ``train_data`` with the L1 penalty ``strength`` on the projection and the
    PCE coefficients and ``pre_model_strength`` (default: ``strength``) on the pre-model's convolutions, by
    proximal SGD with the labels' cross-entropy, as the paper's sparse phase.

    ``learning_rate`` (default: ``training_args.learning_rate``) is the pre-model's; the projection and the
    PCE head take a tenth of it, the paper's ratio. Returns the non-zero counts before and after.
    """
    for name, value in (("strength", strength), ("pre_model_strength", pre_model_strength)):
        if value is not None and not value >= 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if not epochs > 0:
        raise ValueError(f"epochs must be > 0, got {epochs}")
    pre_model_strength = strength if pre_model_strength is None else pre_model_strength
    lr = training_args.learning_rate if learning_rate is None else learning_rate
    pre_model, head = penalised_weights(asnet)
    penalised = {id(p) for p in pre_model + head}
    rest = [p for p in asnet.parameters() if p.requires_grad and id(p) not in penalised]
    optimizer = torch.optim.SGD(
        [
            {"params": pre_model, "lr": lr, "l1": pre_model_strength},
            {"params": head, "lr": lr / 10, "l1": strength},
            {"params": rest, "lr": lr, "l1": 0.0},
        ],
        lr=lr,
    )
    optimizer.register_step_post_hook(_soft_threshold)
    before = nonzero_parameters(asnet)
    args = replace(training_args, num_train_epochs=epochs, eval_strategy="no", learning_rate=lr)
    train(asnet, args, train_data, None, optimizer=optimizer, accelerator=accelerator)
    asnet = accelerator.unwrap_model(asnet).eval()
    after = nonzero_parameters(asnet)
    logger.info("sparse training: %d -> %d non-zero parameters", before["total"], after["total"])
    return {
        "epochs": epochs,
        "strength": strength,
        "pre_model_strength": pre_model_strength,
        "learning_rate": lr,
        "nonzero_before": before,
        "nonzero_after": after,
    }
