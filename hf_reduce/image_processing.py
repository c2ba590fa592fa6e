"""The image processor of hf_reduce's image classifiers (VGG, ODE, MaxVol, ASNet).

Exactly the preprocessing the models were trained with (``hf_reduce.data.ImageCollator`` calls
:func:`to_pixel_values`): convert to the model's channel count (L or RGB), resize to ``image_size`` with
PIL's bilinear filter, scale to [0, 1]. No normalisation: the models normalise inside, so attacks and
users work in pixel space. Saved next to every model (``preprocessor_config.json``) so that
``pipeline("image-classification", model=...)`` works; self-contained (PIL, numpy, torch, transformers), so it
also travels as remote code where hf_reduce is not installed.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

_MODES = {1: "L", 3: "RGB"}


def _to_pil(image: Any):
    from PIL import Image

    if isinstance(image, Image.Image):
        return image
    if isinstance(image, (str, Path)):
        return Image.open(image)
    array = image.detach().cpu().numpy() if torch.is_tensor(image) else np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = np.moveaxis(array, 0, -1)  # channels-first -> last
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.dtype != np.uint8:  # floats in [0, 1], as the models' own pixel values
        if array.min() < 0 or array.max() > 1:
            raise ValueError(
                f"float images must hold pixels in [0, 1], got values in [{array.min():g}, {array.max():g}]"
            )
        array = np.round(array * 255).astype(np.uint8)
    return Image.fromarray(array)


def _has_colour(image) -> bool:
    if image.mode not in ("RGB", "RGBA"):
        return False
    r, g, b = (np.asarray(channel, dtype=np.int16) for channel in image.convert("RGB").split())
    return bool((r != g).any() or (g != b).any())


def to_pixel_values(image: Any, num_channels: int, image_size: int | None) -> torch.Tensor:
    """One image (PIL, array ``(H, W[, C])`` or ``(C, H, W)``, tensor, or path) -> ``(C, H, W)`` in [0, 1]."""
    from PIL import Image

    if num_channels not in _MODES:
        raise ValueError(f"num_channels must be 1 or 3, got {num_channels}")
    image = _to_pil(image).convert(_MODES[num_channels])
    if image_size is not None and image.size != (image_size, image_size):
        image = image.resize((image_size, image_size), Image.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


class ReduceImageProcessor(BaseImageProcessor):
    """Images -> ``pixel_values`` ``(B, num_channels, image_size, image_size)`` in [0, 1].

    Accepts PIL images, numpy arrays, tensors and file paths, one or a list. A colour image given to a
    1-channel model is converted to grey, with a warning the first time colour is actually dropped (the
    ``image-classification`` pipeline converts every image to RGB first: grey images stay silent).
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        num_channels: int = 3,
        image_size: int | None = None,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_channels not in _MODES:
            raise ValueError(f"num_channels must be 1 or 3, got {num_channels}")
        self.num_channels = num_channels
        self.image_size = image_size
        self.resample = "bilinear"
        # The model's normalisation statistics, where transformers keeps them; applied inside the model
        # (do_normalize False), so that pixel values stay in [0, 1] for attacks and users.
        self.image_mean, self.image_std = image_mean, image_std
        self.do_rescale, self.rescale_factor, self.do_normalize = True, 1 / 255, False
        self._warned = False

    @classmethod
    def for_config(cls, config: Any) -> ReduceImageProcessor:
        """The processor matching a model config (``num_channels``, ``image_size``, its statistics)."""
        return cls(
            num_channels=config.num_channels,
            image_size=config.image_size,
            image_mean=list(config.image_mean),
            image_std=list(config.image_std),
        )

    def preprocess(self, images: Any, return_tensors: str | None = "pt", **kwargs: Any) -> BatchFeature:
        if not isinstance(images, (list, tuple)):
            images = [images]
        pixels = []
        for image in images:
            pil = _to_pil(image)
            if self.num_channels == 1 and not self._warned and _has_colour(pil):
                warnings.warn(
                    "converting a colour image to grey for a 1-channel model (colour is dropped)",
                    stacklevel=2,
                )
                self._warned = True
            pixels.append(to_pixel_values(pil, self.num_channels, self.image_size))
        batch = torch.stack(pixels)
        data = {"pixel_values": batch if return_tensors == "pt" else batch.numpy()}
        return BatchFeature(data=data, tensor_type=return_tensors if return_tensors != "pt" else None)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.pop("_warned", None)
        # The model's config.json says which image processor it has (auto_classes.py). Saying it here too
        # would make AutoVideoProcessor, which pipeline() tries for every vision model, derive a
        # "ReduceVideoProcessor" from these keys and ask whether to run the folder's code.
        out.pop("auto_map", None)
        out.pop("image_processor_type", None)
        return out


__all__ = ["ReduceImageProcessor", "to_pixel_values"]
