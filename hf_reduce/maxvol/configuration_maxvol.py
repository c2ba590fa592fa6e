"""Configuration of MaxVol reduced-order CNN classifiers (Gusak et al., "Reduced-Order Modeling of Deep
Neural Networks", 2021).

Self-contained: copied next to the weights by ``register_for_auto_class`` for ``trust_remote_code=True``.
"""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedConfig


class MaxVolConfig(PreTrainedConfig):
    r"""Configuration of :class:`MaxVolForImageClassification`.

    The model keeps the first conv blocks of the original network (``head_layers``), gathers
    ``input_neurons`` selected neurons of their output, runs ``reduced_layers`` (small dense maps over
    selected neurons, each followed by a 4-to-1 max over pooling windows when ``pool`` and a ReLU) and a
    classifier whose first layer absorbs the reconstruction of the full activation.

    Args:
        head_layers: the kept blocks, ``{"in_channels", "out_channels", "batch_norm", "pool"}`` each.
        input_neurons: selected neurons of the head's output.
        reduced_layers: ``{"in_features", "out_features", "pool"}`` each; ``out_features`` counts pre-pool
            neurons (4 per selected neuron when ``pool``).
        classifier_hidden_sizes, dropout: the original classifier's hidden widths and dropout.
        reduction: what the reduction did (original model, ranks, energies, selected neurons, settings).
        image_mean, image_std: input normalisation (pixels in [0, 1]), as in the original model.
    """

    model_type = "hf_reduce_maxvol"

    def __init__(
        self,
        num_channels: int = 1,
        image_size: int = 28,
        head_layers: list[dict[str, Any]] | None = None,
        input_neurons: int = 1,
        reduced_layers: list[dict[str, Any]] | None = None,
        classifier_hidden_sizes: list[int] | None = None,
        dropout: float = 0.0,
        reduction: dict[str, Any] | None = None,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        pixel_normalization: dict[str, list[float]] | None = None,
        **kwargs,
    ) -> None:
        self.num_channels = num_channels
        self.image_size = image_size
        self.head_layers = [dict(layer) for layer in head_layers or []]
        self.input_neurons = input_neurons
        self.reduced_layers = [
            dict(layer) for layer in reduced_layers or [{"in_features": 1, "out_features": 1, "pool": False}]
        ]
        self.classifier_hidden_sizes = list(classifier_hidden_sizes or [])
        self.dropout = dropout
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
        width = self.input_neurons
        for i, layer in enumerate(self.reduced_layers):
            missing = {"in_features", "out_features", "pool"} - set(layer)
            if missing:
                raise ValueError(f"reduced_layers[{i}] lacks {sorted(missing)}")
            if layer["in_features"] != width:
                raise ValueError(
                    f"reduced_layers[{i}] takes {layer['in_features']} features, the previous gives {width}"
                )
            if layer["pool"] and layer["out_features"] % 4:
                raise ValueError(
                    f"reduced_layers[{i}] pools 2x2 windows: out_features must be a multiple of 4"
                )
            width = layer["out_features"] // 4 if layer["pool"] else layer["out_features"]
        given = _head_output_size(self.head_layers, self.num_channels, self.image_size)
        if not 1 <= self.input_neurons <= given:
            raise ValueError(
                f"input_neurons={self.input_neurons} selected of the {given} features that head_layers make of "
                f"{self.num_channels}x{self.image_size}x{self.image_size} images"
            )
        if len(self.image_mean) != self.num_channels or len(self.image_std) != self.num_channels:
            raise ValueError(f"image_mean / image_std need {self.num_channels} values")

    @property
    def selected_features(self) -> int:
        """Width of the last reduced layer's output (the classifier's input)."""
        last = self.reduced_layers[-1]
        return last["out_features"] // 4 if last["pool"] else last["out_features"]


def _head_output_size(head_layers: list[dict[str, Any]], channels: int, size: int) -> int:
    """Flattened size after the kept blocks (3x3 convolutions with padding 1, optional 2x2 max pooling),
    checking that each block has its keys and takes the previous block's channels. (The same rule as ASNet's
    config: each configuration file travels alone as remote code.)"""
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
