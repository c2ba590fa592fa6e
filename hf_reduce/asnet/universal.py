"""Universal adversarial perturbations: one vector ``δ`` with ``‖δ‖₂ <= eps`` added to every image.

- :func:`active_subspace_attack`: Cui et al. (2020), Algorithm 4.1. The dominant direction of the input's
  active subspace (the top eigenvector of ``E[∇ₓℓ ∇ₓℓᵀ]``) is the direction in which the loss changes most
  on average; a line search picks the step along it that fools most images, the result is projected on the
  ball, and the next direction is computed at the perturbed images that are not fooled yet.
- :func:`deepfool_uap`: the classic universal perturbation (Moosavi-Dezfooli et al., 2017): a pass over the
  data adds, for every image not yet fooled, the minimal DeepFool step that sends it across the nearest
  decision boundary, then projects on the ball.
- :func:`random_direction`: a random direction of norm ``eps`` (the baseline).

Images are pixels in [0, 1]; perturbed images are clipped to that range.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from .subspace import FrequentDirections

logger = logging.getLogger(__name__)


def _check_eps(eps: float) -> None:
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}")


def project_l2(delta: torch.Tensor, eps: float) -> torch.Tensor:
    """``delta`` scaled into the ℓ2 ball of radius ``eps``."""
    norm = delta.norm()
    return delta if norm <= eps else delta * (eps / norm)


@torch.no_grad()
def _predict(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    return torch.cat(
        [
            model(pixel_values=images[i : i + batch_size]).logits.argmax(-1)
            for i in range(0, len(images), batch_size)
        ]
    )


def perturb(images: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    return (images + delta).clamp(0, 1)


@torch.no_grad()
def universal_report(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, delta: torch.Tensor
) -> dict[str, float]:
    """Error rate under attack and fooling rate (predictions changed) of ``delta`` on ``images``."""
    model.eval()
    clean = _predict(model, images)
    attacked = _predict(model, perturb(images, delta))
    return {
        "clean_error": float((clean != labels).float().mean()),
        "error": float((attacked != labels).float().mean()),
        "fooling_rate": float((attacked != clean).float().mean()),
        "norm": float(delta.norm()),
    }


def random_direction(shape: torch.Size | tuple[int, ...], eps: float, seed: int = 0) -> torch.Tensor:
    """A uniformly random direction on the sphere of radius ``eps``."""
    _check_eps(eps)
    v = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    return v * (eps / v.norm())


def _dominant_gradient_direction(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int
) -> torch.Tensor:
    sketch = FrequentDirections(8)
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].clone().requires_grad_(True)
        loss = nn.functional.cross_entropy(
            model(pixel_values=x).logits, labels[i : i + batch_size], reduction="sum"
        )
        (grad,) = torch.autograd.grad(loss, x)
        sketch.update(grad.flatten(1))
    _, directions = sketch.eigen()
    return directions[:, 0].to(images.dtype).view(images.shape[1:])


@torch.no_grad()
def _fooled(model: nn.Module, images: torch.Tensor, clean: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    return _predict(model, perturb(images, delta)) != clean


def active_subspace_attack(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    *,
    iterations: int = 5,
    line_search: int = 16,
    batch_size: int = 256,
) -> torch.Tensor:
    """Cui et al.'s universal active-subspace attack; returns ``δ`` (image shape) with ``‖δ‖₂ <= eps``."""
    _check_eps(eps)
    model.eval()
    device = next(model.parameters()).device
    images, labels = images.to(device), labels.to(device)
    clean = _predict(model, images)
    delta = torch.zeros_like(images[0])
    best_rate = 0.0
    steps = torch.linspace(-2 * eps, 2 * eps, 2 * line_search + 1, device=device)
    for it in range(iterations):
        remaining = ~_fooled(model, images, clean, delta)
        if not remaining.any():
            break
        direction = _dominant_gradient_direction(
            model, perturb(images[remaining], delta), labels[remaining], batch_size
        )
        candidates = [project_l2(delta + step * direction, eps) for step in steps]
        rates = [float(_fooled(model, images, clean, c).float().mean()) for c in candidates]
        best = max(range(len(rates)), key=rates.__getitem__)
        if rates[best] <= best_rate:
            break
        delta, best_rate = candidates[best], rates[best]
        logger.debug("active-subspace attack, iteration %d: fooling rate %.4f", it + 1, best_rate)
    return delta


def _deepfool_step(
    model: nn.Module, x: torch.Tensor, label: int, num_classes: int, max_iters: int, overshoot: float
) -> torch.Tensor:
    """Minimal ℓ2 perturbation sending ``x`` (one image) across the nearest linearised boundary."""
    r_total = torch.zeros_like(x)
    for _ in range(max_iters):
        xi = (x + (1 + overshoot) * r_total).clamp(0, 1)
        # Every class's input gradient from one backward pass: copy k of the image carries logit k only.
        copies = xi.expand(num_classes, *xi.shape).clone().requires_grad_(True)
        all_logits = model(pixel_values=copies).logits
        logits = all_logits[0].detach()
        if int(logits.argmax()) != label:
            break
        (grads,) = torch.autograd.grad(all_logits.diagonal().sum(), copies)
        w = grads - grads[label]
        f = logits - logits[label]
        w_norm = w.flatten(1).norm(dim=1)
        ratio = f.abs() / w_norm.clamp_min(1e-12)
        ratio[label] = float("inf")
        k = int(ratio.argmin())
        r_total = r_total + (ratio[k] + 1e-4) * w[k] / w_norm[k].clamp_min(1e-12)
    return (1 + overshoot) * r_total


def deepfool_uap(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    *,
    passes: int = 3,
    target_fooling: float = 0.8,
    deepfool_iters: int = 10,
    overshoot: float = 0.02,
    seed: int = 0,
) -> torch.Tensor:
    """The classic universal perturbation (DeepFool-based) with ``‖δ‖₂ <= eps``."""
    _check_eps(eps)
    model.eval()
    device = next(model.parameters()).device
    images = images.to(device)
    clean = _predict(model, images)
    num_classes = int(model(pixel_values=images[:1]).logits.shape[-1])
    delta = torch.zeros_like(images[0])
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    for p in range(passes):
        for i in order.tolist():
            x = perturb(images[i], delta)
            with torch.no_grad():
                still_clean = int(model(pixel_values=x[None]).logits.argmax()) == int(clean[i])
            if still_clean:
                step = _deepfool_step(model, x, int(clean[i]), num_classes, deepfool_iters, overshoot)
                delta = project_l2(delta + step, eps)
        rate = float(_fooled(model, images, clean, delta).float().mean())
        logger.debug("UAP pass %d: fooling rate %.4f", p + 1, rate)
        if rate >= target_fooling:
            break
    return delta
