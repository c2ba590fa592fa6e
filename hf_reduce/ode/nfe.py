"""Counting function evaluations (NFE) of an ODE right-hand side, forward and backward separately."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _in_backward() -> bool:
    # The autograd engine sets a graph-task id while it runs a backward pass (torch.utils.checkpoint relies
    # on the same call); the adjoint method evaluates the dynamics there.
    current = getattr(torch._C, "_current_graph_task_id", None)
    return current is not None and current() != -1


class NFECounter(nn.Module):
    """Wrap an ODE function ``f(t, y)`` and count its evaluations.

    ``nfe_forward`` counts calls made outside a backward pass (the solve), ``nfe_backward`` calls made during
    ``loss.backward()`` (the adjoint / IRDM backward solves; backprop through the solver calls ``f`` there
    zero times). Parameters are the wrapped module's, so optimisers and ``adjoint_params`` see them. Calls
    inside ``torch.compile`` / ``torch.export`` graphs are not counted.
    """

    def __init__(self, func: nn.Module) -> None:
        super().__init__()
        self.func = func
        self.nfe_forward = 0
        self.nfe_backward = 0

    def forward(self, t: torch.Tensor, y: Any) -> Any:
        # A compiled or exported graph runs without Python: there is nothing to count, and the counter would
        # only break the trace.
        if not torch.compiler.is_compiling():
            if _in_backward():
                self.nfe_backward += 1
            else:
                self.nfe_forward += 1
        return self.func(t, y)

    def reset(self) -> None:
        self.nfe_forward = 0
        self.nfe_backward = 0

    @property
    def nfe(self) -> dict[str, int]:
        return {"forward": self.nfe_forward, "backward": self.nfe_backward}
