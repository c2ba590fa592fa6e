"""Polynomial chaos expansion on standard Gaussian variables: orthonormal Hermite polynomials of total degree
``<= degree`` in ``dim`` variables, and their least-squares fit.

``He_k`` are the probabilists' Hermite polynomials (``He_{k+1}(x) = x He_k(x) - k He_{k-1}(x)``), orthogonal
under ``N(0, 1)`` with ``E[He_k²] = k!``; the basis uses ``He_k / √k!`` so that products over variables are
orthonormal under ``N(0, I)``. Each term is stored sparsely as ``degree`` (variable, power) factors, padded
with power 0, so evaluating the basis costs O(terms · degree) per sample rather than O(terms · dim).
"""

from __future__ import annotations

import math
from itertools import combinations_with_replacement

import torch


def total_degree_terms(dim: int, degree: int) -> torch.Tensor:
    """All multi-indices of total degree ``<= degree`` in ``dim`` variables, as ``(terms, degree, 2)``
    (variable, power) factors. ``terms = C(dim + degree, degree)``; the first term is the constant."""
    if dim < 1 or degree < 0:
        raise ValueError(f"need dim >= 1 and degree >= 0, got dim={dim}, degree={degree}")
    width = max(degree, 1)
    terms = []
    for total in range(degree + 1):
        for variables in combinations_with_replacement(range(dim), total):
            powers: dict[int, int] = {}
            for v in variables:
                powers[v] = powers.get(v, 0) + 1
            factors = sorted(powers.items()) + [(0, 0)] * (width - len(powers))
            terms.append(factors)
    return torch.tensor(terms, dtype=torch.long)


def hermite_table(x: torch.Tensor, degree: int) -> torch.Tensor:
    """``(..., dim, degree + 1)``: normalised ``He_k(x) / √k!`` for k = 0..degree."""
    values = [torch.ones_like(x), x]
    for k in range(1, degree):
        values.append(x * values[k] - k * values[k - 1])
    values = values[: degree + 1]
    norms = torch.tensor(
        [math.sqrt(math.factorial(k)) for k in range(degree + 1)], dtype=x.dtype, device=x.device
    )
    return torch.stack(values, -1) / norms


def hermite_features(x: torch.Tensor, terms: torch.Tensor, degree: int | None = None) -> torch.Tensor:
    """The basis ``terms`` (from :func:`total_degree_terms`) evaluated at ``x`` (batch x dim): (batch, terms)."""
    if degree is None:
        degree = int(terms[..., 1].max().item()) if terms.numel() else 0
    table = hermite_table(x, degree)  # batch x dim x (degree + 1)
    picked = table[:, terms[..., 0], terms[..., 1]]  # batch x terms x factors
    return picked.prod(-1)


def fit_least_squares(features: torch.Tensor, targets: torch.Tensor, ridge: float = 0.0) -> torch.Tensor:
    """Coefficients ``c`` (terms x outputs) minimising ``‖features c - targets‖² + ridge ‖c‖²`` (float64)."""
    A, Y = features.double(), targets.double()
    if len(A) < A.shape[1] and ridge == 0:
        raise ValueError(
            f"{len(A)} samples cannot determine {A.shape[1]} coefficients: use more samples, a lower rank or "
            "degree, or ridge > 0"
        )
    if ridge == 0:
        return torch.linalg.lstsq(A.cpu(), Y.cpu(), driver="gelsd").solution.to(A.device)
    gram = A.T @ A + ridge * torch.eye(A.shape[1], dtype=A.dtype, device=A.device)
    return torch.linalg.solve(gram, A.T @ Y)


def fit_l1(
    features: torch.Tensor, targets: torch.Tensor, l1: float, iterations: int = 2000, tol: float = 1e-10
) -> torch.Tensor:
    """Sparse coefficients minimising ``‖features c - targets‖² / (2N) + l1 Σ_terms ‖c_term‖₂`` by FISTA.

    The penalty is the group lasso over each term's row (one group per basis function, all outputs), so a
    term is either used by the head or dropped from it; the constant term (row 0) is not penalised.
    """
    if l1 < 0:
        raise ValueError(f"l1 must be >= 0, got {l1}")
    A, Y = features.double(), targets.double()
    n = len(A)
    lipschitz = float(torch.linalg.matrix_norm(A, ord=2) ** 2 / n)
    step = 1.0 / lipschitz
    c = torch.zeros(A.shape[1], Y.shape[1], dtype=A.dtype, device=A.device)
    z, t = c.clone(), 1.0
    for _ in range(iterations):
        gradient = A.T @ (A @ z - Y) / n
        candidate = z - step * gradient
        norms = candidate[1:].norm(dim=1, keepdim=True).clamp_min(1e-300)
        candidate[1:] = candidate[1:] * (1 - step * l1 / norms).clamp_min(0)
        t_next = (1 + (1 + 4 * t * t) ** 0.5) / 2
        z = candidate + ((t - 1) / t_next) * (candidate - c)
        change = (candidate - c).norm() / c.norm().clamp_min(1e-300)
        c, t = candidate, t_next
        if change < tol:
            break
    return c
