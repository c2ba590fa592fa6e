"""Per-subspace ranks of a MaxVol reduction chosen by validation accuracy instead of one energy level.

One energy level treats all subspaces alike, yet the accuracy lost per dropped direction differs by layer:
the last block's output feeds the classifier directly, early tail blocks are re-mixed by later ones. The search
samples the tail once (:func:`~.rom.sample_tail`) and then, subspace by subspace from the largest, bisects the
smallest rank whose reduced model keeps validation accuracy above a target. The accuracy budget ``max_drop``
is shared in proportion to the subspaces' neuron counts (their dense maps' cost): after the subspaces searched
so far, holding a share ``q`` of all neurons, the allowed drop is ``max_drop * q``. So the first subspace cannot
take all of the budget, and a 256-neuron one does not hold back a 2304-neuron one as an even split would.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..training import evaluate_model
from .rom import TailSample, reduce_model, sample_tail

logger = logging.getLogger(__name__)


@dataclass
class RankSearch:
    """The chosen ranks (tail input first, then each block's output) and what the search measured."""

    ranks: list[int]
    validation_accuracy: float
    original_accuracy: float
    start_ranks: list[int]
    trials: list[dict[str, Any]] = field(default_factory=list)


def search_ranks(
    model: nn.Module,
    dataloader: Iterable,
    validation_data: Any,
    *,
    keep_blocks: int,
    max_drop: float = 0.01,
    start_energy: float = 0.9999,
    max_samples: int = 4096,
    accelerator: Any = None,
    sample: TailSample | None = None,
    **reduction: Any,
) -> RankSearch:
    """Ranks for :func:`~.rom.reduce_model` such that accuracy on ``validation_data`` stays within
    ``max_drop`` (a fraction, 0.01 = 1 pt) of the original's; ``reduction`` holds reduce_model's other
    options (``selection``, ``rect_tol``, ``max_neurons_factor``). Validation data must not be the data
    the result is reported on."""
    if not 0 <= max_drop < 1:
        raise ValueError(f"max_drop is a fraction of accuracy in [0, 1), got {max_drop}")
    if sample is None:
        sample = sample_tail(model, dataloader, keep_blocks=keep_blocks, max_samples=max_samples)
    original = evaluate_model(model, validation_data, accelerator=accelerator, disable_tqdm=True)["accuracy"]
    start = [a.rank_for(start_energy) for a in sample.activations]
    trials: dict[tuple[int, ...], float] = {}

    def accuracy(ranks: list[int]) -> float:
        if tuple(ranks) not in trials:
            reduced = reduce_model(
                model, None, keep_blocks=keep_blocks, rank=ranks, sample=sample, **reduction
            )
            trials[tuple(ranks)] = evaluate_model(
                reduced, validation_data, accelerator=accelerator, disable_tqdm=True
            )["accuracy"]
            logger.debug("ranks %s: validation accuracy %.4f", ranks, trials[tuple(ranks)])
        return trials[tuple(ranks)]

    ranks = list(start)
    neurons = [a.neurons for a in sample.activations]
    order = sorted(range(len(ranks)), key=lambda k: -neurons[k])
    searched = 0
    for k in order:
        searched += neurons[k]
        target = original - max_drop * searched / sum(neurons)
        low, high = 1, ranks[k]
        if accuracy(ranks) < target:  # even the current ranks miss this share: nothing to lower here
            continue
        while low < high:
            middle = (low + high) // 2
            if accuracy([*ranks[:k], middle, *ranks[k + 1 :]]) >= target:
                high = middle
            else:
                low = middle + 1
        ranks[k] = high
    return RankSearch(
        ranks=ranks,
        validation_accuracy=accuracy(ranks),
        original_accuracy=original,
        start_ranks=start,
        trials=[{"ranks": list(r), "accuracy": a} for r, a in trials.items()],
    )
