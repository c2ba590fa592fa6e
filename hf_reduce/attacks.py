"""Adversarial attacks in pixel space: FGSM, FGSM with random start, PGD (L∞ and L2).

Inputs are pixels in [0, 1]; hf_reduce models normalise internally, so an ``eps`` here is in pixel units
(8/255 for CIFAR-10, 0.3 for MNIST as in the literature). Attacks take a ``logits_fn(x) -> logits`` so they work
on any model; they compute gradients with respect to the input only (model parameters get none) and run
under ``torch.enable_grad()`` even inside ``torch.no_grad()`` evaluation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

LogitsFn = Callable[[torch.Tensor], torch.Tensor]
NORMS = ("linf", "l2")


def _check(eps: float, norm: str = "linf") -> None:
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {list(NORMS)}, got {norm!r}")


def _input_gradient(
    logits_fn: LogitsFn, x: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        loss = F.cross_entropy(logits_fn(x), labels)
        (grad,) = torch.autograd.grad(loss, x)
    return grad, loss.detach()


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (t.ndim - 1)))


def _project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        return delta.clamp(-eps, eps)
    return delta * (eps / _flat_norm(delta)).clamp(max=1.0)


def _random_start(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None) -> torch.Tensor:
    if norm == "linf":
        return (torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1) * eps
    direction = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    direction = direction / _flat_norm(direction)
    dims = x[0].numel()
    radius = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype) ** (1.0 / dims) * eps
    return direction * radius.view(-1, *([1] * (x.ndim - 1)))


def pgd(
    logits_fn: LogitsFn,
    x: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float,
    alpha: float,
    steps: int,
    norm: str = "linf",
    random_start: bool = True,
    generator: torch.Generator | None = None,
    clamp: tuple[float, float] = (0.0, 1.0),
) -> torch.Tensor:
    """Projected gradient descent on the cross-entropy (Madry et al., 2018); returns ``x + δ`` with
    ``‖δ‖ ≤ eps`` (L∞ or L2) and pixels within ``clamp``."""
    _check(eps, norm)
    if steps < 1 or alpha <= 0:
        raise ValueError(f"steps must be >= 1 and alpha > 0, got steps={steps}, alpha={alpha}")
    x = x.detach()
    delta = _random_start(x, eps, norm, generator) if random_start else torch.zeros_like(x)
    delta = (x + delta).clamp(*clamp) - x
    for _ in range(steps):
        grad, _ = _input_gradient(logits_fn, x + delta, labels)
        step = grad.sign() if norm == "linf" else grad / _flat_norm(grad)
        delta = _project(delta + alpha * step, eps, norm)
        delta = (x + delta).clamp(*clamp) - x  # stay a valid image; clamping keeps ‖δ‖ within the ball
    return (x + delta).detach()


def fgsm(
    logits_fn: LogitsFn,
    x: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float,
    clamp: tuple[float, float] = (0.0, 1.0),
) -> torch.Tensor:
    """Fast gradient sign method (Goodfellow et al., 2015): one L∞ step of size ``eps`` from ``x``."""
    return pgd(logits_fn, x, labels, eps=eps, alpha=eps, steps=1, random_start=False, clamp=clamp)


def fgsm_random_start(
    logits_fn: LogitsFn,
    x: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float,
    alpha: float | None = None,
    generator: torch.Generator | None = None,
    clamp: tuple[float, float] = (0.0, 1.0),
) -> torch.Tensor:
    """FGSM from a uniform random start in the eps-ball (Wong et al., 2020, "Fast is better than free");
    ``alpha`` defaults to ``1.25 · eps`` (their 10/255 for eps 8/255)."""
    return pgd(
        logits_fn,
        x,
        labels,
        eps=eps,
        alpha=1.25 * eps if alpha is None else alpha,
        steps=1,
        random_start=True,
        generator=generator,
        clamp=clamp,
    )


@dataclass
class Attack:
    """A configured attack: ``Attack("pgd", eps=8/255, alpha=2/255, steps=7)(logits_fn, x, labels)``."""

    name: str = "pgd"
    eps: float = 8 / 255
    alpha: float | None = None
    steps: int = 7
    norm: str = "linf"
    random_start: bool = True

    def __post_init__(self) -> None:
        if self.name not in ATTACKS:
            raise ValueError(f"unknown attack {self.name!r}; available: {sorted(ATTACKS)}")
        _check(self.eps, self.norm)

    def __call__(
        self, logits_fn: LogitsFn, x: torch.Tensor, labels: torch.Tensor, **kwargs: Any
    ) -> torch.Tensor:
        if self.name == "fgsm":
            return fgsm(logits_fn, x, labels, eps=self.eps, **kwargs)
        if self.name == "fgsm_rs":
            return fgsm_random_start(logits_fn, x, labels, eps=self.eps, alpha=self.alpha, **kwargs)
        alpha = self.alpha if self.alpha is not None else 2.5 * self.eps / self.steps
        return pgd(
            logits_fn,
            x,
            labels,
            eps=self.eps,
            alpha=alpha,
            steps=self.steps,
            norm=self.norm,
            random_start=self.random_start,
            **kwargs,
        )


ATTACKS = {"fgsm": fgsm, "fgsm_rs": fgsm_random_start, "pgd": pgd}


def adversarial_loss(attack: Attack, clean_weight: float = 0.0) -> Callable[[torch.nn.Module, dict], tuple]:
    """A ``loss_fn`` for :func:`hf_reduce.training.train`: the loss on adversarial images (optionally mixed
    with ``clean_weight`` of the clean loss). The model is put in eval mode while the attack is crafted."""

    def loss_fn(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Any]:
        pixels, labels = batch["pixel_values"], batch["labels"]
        was_training = model.training
        model.eval()
        adversarial = attack(lambda x: model(pixel_values=x).logits, pixels, labels)
        model.train(was_training)
        outputs = model(pixel_values=adversarial, labels=labels)
        loss = outputs.loss
        if clean_weight > 0:
            loss = (1 - clean_weight) * loss + clean_weight * model(pixel_values=pixels, labels=labels).loss
        return loss, outputs

    return loss_fn
