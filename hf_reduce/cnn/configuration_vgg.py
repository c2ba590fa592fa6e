"""Configuration of the reference VGG-style image classifier.

Self-contained (torch / transformers only): this file is copied next to the weights by
``register_for_auto_class`` so the model loads with ``trust_remote_code=True`` where hf_reduce is absent.
"""

from __future__ import annotations

from transformers import PreTrainedConfig


class VGGConfig(PreTrainedConfig):
    r"""Configuration of :class:`VGGForImageClassification`.

    Args:
        layers: the feature extractor as in VGG's ``cfg`` lists: an int is a 3x3 convolution (padding 1) with
            that many output channels followed by ReLU, ``"M"`` a 2x2 max-pool with stride 2.
        batch_norm: batch norm between each convolution and its ReLU.
        num_channels: input channels (1 grey, 3 RGB).
        image_size: input height = width; inputs of another size are rejected.
        classifier_hidden_sizes: widths of the hidden fully connected layers of the head.
        dropout: dropout before each hidden fully connected layer.
        global_pool: average-pool the last feature map to 1x1 instead of flattening it.
        image_mean, image_std: per-channel normalisation applied inside the model; inputs are pixels in [0, 1].
    """

    model_type = "hf_reduce_vgg"

    def __init__(
        self,
        layers: list[int | str] | None = None,
        batch_norm: bool = True,
        num_channels: int = 1,
        image_size: int = 28,
        classifier_hidden_sizes: list[int] | None = None,
        dropout: float = 0.0,
        global_pool: bool = False,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        pixel_normalization: dict[str, list[float]] | None = None,
        **kwargs,
    ) -> None:
        self.layers = list(layers) if layers is not None else [32, 32, "M", 64, 64, "M", 128, "M"]
        self.batch_norm = batch_norm
        self.num_channels = num_channels
        self.image_size = image_size
        self.classifier_hidden_sizes = (
            list(classifier_hidden_sizes) if classifier_hidden_sizes is not None else [256]
        )
        self.dropout = dropout
        self.global_pool = global_pool
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
        for item in self.layers:
            if item != "M" and not (isinstance(item, int) and item > 0):
                raise ValueError(
                    f"layers items must be positive ints (conv channels) or 'M' (max-pool), got {item!r}"
                )
        if not any(isinstance(item, int) for item in self.layers):
            raise ValueError(f"layers needs at least one convolution, got {self.layers}")
        if self.num_channels < 1:
            raise ValueError(f"num_channels must be >= 1, got {self.num_channels}")
        if len(self.image_mean) != self.num_channels or len(self.image_std) != self.num_channels:
            raise ValueError(
                f"image_mean / image_std need {self.num_channels} values (num_channels), "
                f"got {self.image_mean} / {self.image_std}"
            )
        if self.feature_map_size() < 1:
            raise ValueError(
                f"image_size {self.image_size} is too small for {self.layers.count('M')} max-pools in {self.layers}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")

    def feature_map_size(self) -> int:
        """Height = width of the last feature map."""
        size = self.image_size
        for item in self.layers:
            if item == "M":
                size //= 2
        return size
