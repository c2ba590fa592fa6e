import itertools
import math

import pytest
import torch

from hf_reduce.maxvol import maxvol, rect_maxvol

T64 = torch.float64


@pytest.mark.parametrize("shape", [(50, 5), (1000, 20), (20, 20)])
def test_maxvol_dominance_and_reconstruction(shape):
    A = torch.randn(*shape, dtype=T64, generator=torch.Generator().manual_seed(0))
    rows, C = maxvol(A, tol=1.01)
    assert len(set(rows.tolist())) == shape[1]
    assert C.abs().max() <= 1.01 + 1e-12  # the submatrix dominates every other row
    torch.testing.assert_close(C[rows], torch.eye(shape[1], dtype=T64), rtol=0, atol=1e-10)
    torch.testing.assert_close(C @ A[rows], A, rtol=0, atol=1e-10)


def test_maxvol_agrees_with_brute_force_on_tiny_matrices():
    # A dominant r x r submatrix has at least 1 / r^(r/2) of the largest possible volume; on tiny matrices
    # the search also finds the global optimum most of the time.
    hits = 0
    for seed in range(30):
        A = torch.randn(7, 3, dtype=T64, generator=torch.Generator().manual_seed(seed))
        rows, C = maxvol(A, tol=1.0 + 1e-9)
        volume = torch.linalg.det(A[rows]).abs().item()
        best = max(torch.linalg.det(A[list(s)]).abs().item() for s in itertools.combinations(range(7), 3))
        assert volume >= best / 3**1.5 - 1e-12
        hits += math.isclose(volume, best, rel_tol=1e-9)
    assert hits >= 20, hits


def test_rect_maxvol_row_norm_bound():
    A = torch.randn(2000, 10, dtype=T64, generator=torch.Generator().manual_seed(1))
    rows, C = rect_maxvol(A, tol=1.0)
    assert 10 <= len(rows) <= 2000 and len(set(rows.tolist())) == len(rows)
    assert C.norm(dim=1).max() <= 1.0 + 1e-10
    torch.testing.assert_close(C @ A[rows], A, rtol=0, atol=1e-10)
    capped, C2 = rect_maxvol(A, tol=0.1, max_rows=15)
    assert len(capped) == 15 and C2.shape == (2000, 15)
    at_least, _ = rect_maxvol(A, tol=10.0, min_rows=14)
    assert len(at_least) == 14


def test_float32_large_and_bad_inputs():
    A = torch.randn(50000, 16, generator=torch.Generator().manual_seed(2))
    rows, C = maxvol(A)
    assert C.dtype == torch.float32 and C.abs().max() <= 1.05 + 1e-4
    with pytest.raises(ValueError, match="tall"):
        maxvol(torch.randn(3, 5))
    with pytest.raises(ValueError, match="tol must be >= 1"):
        maxvol(torch.randn(10, 2), tol=0.5)
    with pytest.raises(ValueError, match="min_rows"):
        rect_maxvol(torch.randn(10, 2), min_rows=8, max_rows=4)
