"""The maximum-volume algorithms (Goreinov, Oseledets, Savostyanov, Tyrtyshnikov, Zamarashkin, 2010; rectangular
version: Mikhalev & Oseledets, 2018), in torch.

No maintained package does this on current numpy (maxvolpy does not build; teneva keeps O(n²) temporaries),
hence this implementation. Memory is O(n·r): only the coefficient matrix ``C`` is kept and updated by
rank-one corrections; the initial rows come from an LU factorisation's pivots (no n x n permutation matrix).
"""

from __future__ import annotations

import torch


def _check_tall(A: torch.Tensor) -> tuple[int, int]:
    if A.ndim != 2:
        raise ValueError(f"A must be a matrix, got shape {tuple(A.shape)}")
    n, r = A.shape
    if n < r or r == 0:
        raise ValueError(f"A must be tall (n >= r >= 1), got {n} x {r}")
    if not A.is_floating_point():
        raise ValueError(f"A must be floating point, got {A.dtype}")
    return n, r


def _lu_pivot_rows(A: torch.Tensor) -> torch.Tensor:
    """The r rows that partial pivoting moves to the top: a well-conditioned start."""
    n, r = A.shape
    _, pivots = torch.linalg.lu_factor(A)
    order = torch.arange(n, device=A.device)
    for k, p in enumerate((pivots - 1).tolist()):  # LAPACK's 1-based sequence of row swaps
        order[[k, p]] = order[[p, k]]
    return order[:r]


def maxvol(A: torch.Tensor, tol: float = 1.05, max_iters: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``I`` (r of them) of the tall ``A`` (n x r) whose submatrix is dominant: ``C = A A[I]⁻¹`` has
    ``max |C| <= tol`` (``tol >= 1``). Returns ``(I, C)``; ``C[I]`` is the identity and ``C @ A[I] = A``."""
    n, r = _check_tall(A)
    if tol < 1:
        raise ValueError(f"tol must be >= 1 (a dominant submatrix has |C| <= 1 at best), got {tol}")
    work = A if A.dtype == torch.float64 else A.float()
    rows = _lu_pivot_rows(work)
    C = torch.linalg.solve(work[rows].T, work.T).T  # A A[I]⁻¹, without forming the inverse
    for _ in range(max_iters):
        flat = C.abs().argmax()
        i, j = divmod(int(flat), r)
        if C[i, j].abs() <= tol:
            break
        # Swap row rows[j] for row i; Sherman-Morrison keeps C = A A[I]⁻¹ in O(n r).
        pivot_row = C[i].clone()
        pivot_row[j] -= 1.0
        C -= torch.outer(C[:, j] / C[i, j], pivot_row)
        rows[j] = i
    return rows, C.to(A.dtype)


def rect_maxvol(
    A: torch.Tensor,
    tol: float = 1.0,
    max_rows: int | None = None,
    min_rows: int | None = None,
    start_maxvol_iters: int = 10,
    maxvol_tol: float = 1.05,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``I`` (between ``min_rows`` and ``max_rows``, at least r) of ``A`` (n x r) such that every row of
    ``C = A A[I]⁺`` has Euclidean norm ``<= tol``, picked greedily after a square maxvol start. Returns
    ``(I, C)`` with ``C @ A[I] = A`` (exactly, up to rounding, whenever ``A[I]`` has full column rank)."""
    n, r = _check_tall(A)
    max_rows = n if max_rows is None else min(max_rows, n)
    min_rows = r if min_rows is None else max(min_rows, r)
    if max_rows < r or min_rows > max_rows:
        raise ValueError(f"need r={r} <= min_rows={min_rows} <= max_rows={max_rows}")
    rows, C = maxvol(A, tol=maxvol_tol, max_iters=start_maxvol_iters)
    work = C if C.dtype == torch.float64 else C.float()
    chosen = torch.zeros(n, dtype=torch.bool, device=A.device)
    chosen[rows] = True
    row_norms = (work * work).sum(1)
    index = rows.tolist()
    full = torch.empty(n, max_rows, dtype=work.dtype, device=A.device)  # C grows in place, one column per row
    full[:, :r] = work
    while len(index) < max_rows:
        masked = row_norms.masked_fill(chosen, -1.0)
        i = int(masked.argmax())
        if masked[i] <= tol * tol and len(index) >= min_rows:
            break
        # Add row i: C <- [C - (C cᵢᵀ) cᵢ / (1 + ‖cᵢ‖²), C cᵢᵀ / (1 + ‖cᵢ‖²)].
        k = len(index)
        C = full[:, :k]
        ci = C[i].clone()
        Cci = C @ ci
        denom = 1.0 + ci @ ci
        C.sub_(torch.outer(Cci, ci / denom))
        full[:, k] = Cci / denom
        row_norms = row_norms - Cci * Cci / denom
        chosen[i] = True
        index.append(i)
    C = full[:, : len(index)]
    return torch.tensor(index, device=A.device), C.to(A.dtype)
