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
        neurons: size of the pre-model's flattened output (default: computed from ``head_layers``; checked).
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
        neurons: int | None = None,
        rank: int = 1,
        degree: int = 2,
        kept_terms: int | None = None,
        reduction: dict[str, Any] | None = None,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        pixel_normalization: dict[str, list[float]] | None = None,
        **kwargs,
    ) -> None:
        self.num_channels = num_channels
        self.image_size = image_size
        self.head_layers = [dict(layer) for layer in head_layers or []]
        self.neurons = (
            neurons if neurons is not None else _head_output_size(self.head_layers, num_channels, image_size)
        )
        self.rank = rank
        self.degree = degree
        self.kept_terms = kept_terms
        self.reduction = dict(reduction or {})
        # Stored as one dict, not as image_mean / image_std keys: transformers' model tests set every config key
        # containing "_std" (an initialiser's scale) to 1e-10, which would divide the pixels by it. The image
        # processor carries the same statistics under transformers' names. (Written out per family: each
        # configuration file travels alone as remote code.)
        saved = pixel_normalization or {}
        self.pixel_normalization = {
            "mean": list(image_mean if image_mean is not None else saved.get("mean", [0.5] * num_channels)),
            "std": list(image_std if image_std is not None else saved.get("std", [0.5] * num_channels)),
        }
        super().__init__(**kwargs)
        self._check()

    @property
    def image_mean(self) -> list[float]:
        """Per-channel mean the model subtracts from pixels in [0, 1]."""
        return self.pixel_normalization["mean"]

    @property
    def image_std(self) -> list[float]:
        """Per-channel standard deviation the model divides by."""
        return self.pixel_normalization["std"]

    def _check(self) -> None:
        """Every field agrees with the others, so a tampered config fails here, in one line naming the fields,
        not in the forward pass with a shape error."""
        given = _head_output_size(self.head_layers, self.num_channels, self.image_size)
        if self.neurons != given:
            raise ValueError(
                f"neurons={self.neurons}, but head_layers turn {self.num_channels}x{self.image_size}x"
                f"{self.image_size} images into {given} features"
            )
        if not 1 <= self.rank <= self.neurons:
            raise ValueError(f"rank must lie in [1, neurons={self.neurons}], got {self.rank}")
        if not 0 <= self.degree <= 6:
            raise ValueError(f"degree must lie in [0, 6], got {self.degree}")
        if self.kept_terms is not None and not 1 <= self.kept_terms <= self.full_terms:
            raise ValueError(
                f"kept_terms must lie in [1, {self.full_terms}] (the PCE terms of rank={self.rank}, "
                f"degree={self.degree}), got {self.kept_terms}"
            )
        if len(self.image_mean) != self.num_channels or len(self.image_std) != self.num_channels:
            raise ValueError(f"image_mean / image_std need {self.num_channels} values")

    @property
    def full_terms(self) -> int:
        return comb(self.rank + self.degree, self.degree)

    @property
    def n_terms(self) -> int:
        return self.kept_terms if self.kept_terms is not None else self.full_terms


def _head_output_size(head_layers: list[dict[str, Any]], channels: int, size: int) -> int:
    """Flattened size after the blocks (3x3 convolutions with padding 1, optional 2x2 max pooling), checking
    that each block has its keys and takes the previous block's channels."""
    for i, layer in enumerate(head_layers):
        missing = {"in_channels", "out_channels", "batch_norm", "pool"} - set(layer)
        if missing:
            raise ValueError(f"head_layers[{i}] lacks {sorted(missing)}")
        if layer["in_channels"] != channels:
            raise ValueError(
                f"head_layers[{i}] takes {layer['in_channels']} channels, the previous gives {channels}"
            )
        channels, size = layer["out_channels"], size // 2 if layer["pool"] else size
    return channels * size * size
