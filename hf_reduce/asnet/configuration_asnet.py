"""Configuration of ASNet classifiers (Cui et al., "Active Subspace of Neural Networks", 2020).

Self-contained: copied next to the weights by ``register_for_auto_class`` for ``trust_remote_code=True``.
"""

from __future__ import annotations

from math import comb
from typing import Any

from transformers import PreTrainedConfig


class ASNetConfig(PreTrainedConfig):
    r"""Configuration of :class:`ASNetForImageClassification`.

    The pre-model (the original network's first conv blocks, ``head_layers``) maps an image to ``neurons``
    features; they are projected on the ``rank``-dimensional active subspace, standardised, and fed to a
    polynomial chaos expansion (orthonormal Hermite polynomials of total degree ``<= degree``) whose
    coefficients give the logits.

    Args:
        head_layers: the pre-model's blocks, ``{"in_channels", "out_channels", "batch_norm", "pool"}`` each.
        neurons: size of the pre-model's flattened output.
        rank, degree: active-subspace dimension and PCE degree (``C(rank + degree, degree)`` terms).
        kept_terms: the number of terms an L1-sparsified head kept (``None``: the full basis).
        reduction: what was done (original model, cut, active neurons, fit and fine-tuning figures).
        image_mean, image_std: input normalisation (pixels in [0, 1]), as in the original model.
    """

    model_type = "hf_reduce_asnet"

    def __init__(
        self,
        num_channels: int = 1,
        image_size: int = 28,
        head_layers: list[dict[str, Any]] | None = None,
        neurons: int = 1,
        rank: int = 1,
        degree: int = 2,
        kept_terms: int | None = None,
        reduction: dict[str, Any] | None = None,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        **kwargs,
    ) -> None:
        self.num_channels = num_channels
        self.image_size = image_size
        self.head_layers = [dict(layer) for layer in head_layers or []]
        self.neurons = neurons
        self.rank = rank
        self.degree = degree
        self.kept_terms = kept_terms
        self.reduction = dict(reduction or {})
        self.image_mean = list(image_mean) if image_mean is not None else [0.5] * num_channels
        self.image_std = list(image_std) if image_std is not None else [0.5] * num_channels
        super().__init__(**kwargs)
        if not 1 <= rank <= neurons:
            raise ValueError(f"rank must lie in [1, neurons={neurons}], got {rank}")
        if not 0 <= degree <= 6:
            raise ValueError(f"degree must lie in [0, 6], got {degree}")
        if len(self.image_mean) != num_channels or len(self.image_std) != num_channels:
            raise ValueError(f"image_mean / image_std need {num_channels} values")

    @property
    def full_terms(self) -> int:
        return comb(self.rank + self.degree, self.degree)

    @property
    def n_terms(self) -> int:
        return self.kept_terms if self.kept_terms is not None else self.full_terms
