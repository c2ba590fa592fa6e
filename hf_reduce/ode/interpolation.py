"""Chebyshev-Lobatto nodes and barycentric Lagrange interpolation (pure maths, torch only).

On the Chebyshev points of the second kind ``x_j = cos(jπ/n)``, j = 0..n, the barycentric weights are
``w_j = (-1)^j``, halved at both end points (Berrut & Trefethen, "Barycentric Lagrange Interpolation", 2004).
With these matched weights the interpolant of a function analytic on the interval converges geometrically in
``n``; pairing these nodes with the first-kind weights ``(-1)^j sin((2j+1)π/(2n+2))`` (as the IRDM authors'
code does) is a different rational function that stalls near 1e-5. The evaluation uses the second (true)
barycentric formula, which is numerically stable and exact at the nodes.
"""

from __future__ import annotations

import math

import torch


def chebyshev_lobatto_nodes(
    n_nodes: int,
    t0: float,
    t1: float,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | None = None,
) -> torch.Tensor:
    """``n_nodes`` Chebyshev-Lobatto points on ``[t0, t1]``, in increasing order of ``j`` (from t1 to t0)."""
    if n_nodes < 2:
        raise ValueError(f"n_nodes must be >= 2 (the two end points at least), got {n_nodes}")
    n = n_nodes - 1
    x = torch.cos(torch.arange(n_nodes, dtype=torch.float64) * (math.pi / n))
    nodes = 0.5 * (t0 + t1) + 0.5 * (t1 - t0) * x
    nodes[0], nodes[-1] = t1, t0  # the end points exactly, not up to rounding
    return nodes.to(dtype=dtype, device=device)


def chebyshev_lobatto_weights(
    n_nodes: int, *, dtype: torch.dtype = torch.float64, device=None
) -> torch.Tensor:
    """The barycentric weights matching :func:`chebyshev_lobatto_nodes` (any common factor cancels)."""
    if n_nodes < 2:
        raise ValueError(f"n_nodes must be >= 2, got {n_nodes}")
    w = torch.ones(n_nodes, dtype=torch.float64)
    w[1::2] = -1.0
    w[0] *= 0.5
    w[-1] *= 0.5
    return w.to(dtype=dtype, device=device)


class BarycentricInterpolant:
    """The polynomial through ``(nodes[j], values[j])``, evaluated at any times, for a batch of states.

    Args:
        nodes: ``(m,)`` distinct interpolation times.
        values: ``(m, *state_shape)`` values at the nodes.
        weights: ``(m,)`` barycentric weights (defaults: the Chebyshev-Lobatto ones, for Lobatto nodes).
    """

    def __init__(
        self, nodes: torch.Tensor, values: torch.Tensor, weights: torch.Tensor | None = None
    ) -> None:
        if nodes.ndim != 1 or values.shape[0] != nodes.shape[0]:
            raise ValueError(
                f"need nodes of shape (m,) and values of shape (m, ...), got {tuple(nodes.shape)} and {tuple(values.shape)}"
            )
        self.nodes = nodes.to(torch.float64)
        self.values = values
        weights = chebyshev_lobatto_weights(len(nodes)) if weights is None else weights
        if weights.shape != nodes.shape:
            raise ValueError(
                f"weights shape {tuple(weights.shape)} does not match nodes {tuple(nodes.shape)}"
            )
        self.weights = weights.to(torch.float64)
        self._snap = 4 * torch.finfo(torch.float64).eps * float(self.nodes.abs().max())
        # A solver evaluates one time at a time: that path works on Python floats, with one kernel (the
        # weighted sum of the stored states) instead of a dozen tiny ones.
        self._node_list, self._weight_list = self.nodes.tolist(), self.weights.tolist()
        self._flat = values.reshape(len(nodes), -1)

    def _at(self, t: float) -> torch.Tensor:
        ratios = []
        for j, (x, w) in enumerate(zip(self._node_list, self._weight_list, strict=True)):
            d = t - x
            if abs(d) <= self._snap:  # at (or within a few ulps of) a node: w / d would overflow
                return self.values[j]
            ratios.append(w / d)
        total = math.fsum(ratios)
        coefficients = torch.tensor(
            [r / total for r in ratios], dtype=self._flat.dtype, device=self._flat.device
        )
        return (coefficients @ self._flat).reshape(self.values.shape[1:])

    def __call__(self, t: torch.Tensor | float) -> torch.Tensor:
        """Values at ``t`` (a scalar: ``state_shape``; a vector of k times: ``(k, *state_shape)``)."""
        if isinstance(t, float):
            return self._at(t)
        t_tensor = torch.as_tensor(t, dtype=torch.float64)
        scalar = t_tensor.ndim == 0
        times = t_tensor.reshape(-1).to(self.nodes.device)
        diff = times[:, None] - self.nodes[None, :]  # (k, m)
        # Second barycentric formula; at (or within a few ulps of) a node the quotient is replaced by the
        # stored value: w / diff overflows for diff ~ 1e-308, e.g. at a time nudged off a node by nextafter.
        exact = diff.abs() <= self._snap
        exact = exact & (diff.abs() == diff.abs().min(1, keepdim=True).values)
        safe = torch.where(exact, torch.ones_like(diff), diff)
        ratios = self.weights / safe
        ratios = torch.where(exact.any(1, keepdim=True), exact.to(ratios.dtype), ratios)
        coefficients = ratios / ratios.sum(1, keepdim=True)  # (k, m), rows sum to one
        flat = self.values.reshape(len(self.nodes), -1)
        out = (coefficients.to(flat.dtype) @ flat).reshape(len(times), *self.values.shape[1:])
        return out[0] if scalar else out


class CubicHermiteInterpolant:
    """The cubic through ``(t0, y0)``, ``(t1, y1)`` with slopes ``f0``, ``f1``: a fixed-grid step's dense output.

    The formula of torchdiffeq's ``interp="cubic"`` (``FixedGridODESolver._cubic_hermite_interp``), in float64
    time; exact at both ends, ``O(h^4)`` in between.
    """

    def __init__(
        self, t0: float, t1: float, y0: torch.Tensor, f0: torch.Tensor, y1: torch.Tensor, f1: torch.Tensor
    ) -> None:
        self.t0, self.t1 = float(t0), float(t1)
        self.y0, self.f0, self.y1, self.f1 = y0, f0, y1, f1

    def __call__(self, t: float) -> torch.Tensor:
        t = float(t)
        if t == self.t0:
            return self.y0
        if t == self.t1:
            return self.y1
        dt = self.t1 - self.t0
        h = (t - self.t0) / dt
        h00 = (1 + 2 * h) * (1 - h) * (1 - h)
        h10 = h * (1 - h) * (1 - h)
        h01 = h * h * (3 - 2 * h)
        h11 = h * h * (h - 1)
        return h00 * self.y0 + (h10 * dt) * self.f0 + h01 * self.y1 + (h11 * dt) * self.f1
