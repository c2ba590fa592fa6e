"""Registering an image-model family with transformers' Auto classes, in-process and as remote code."""

from __future__ import annotations

import functools
from typing import Any

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification

from .image_processing import ReduceImageProcessor

# save_pretrained of the processor copies image_processing.py next to it.
ReduceImageProcessor.register_for_auto_class("AutoImageProcessor")
PROCESSOR_REF = "image_processing.ReduceImageProcessor"


def register_image_family(config_class: type, base_class: type, classifier_class: type) -> None:
    """``AutoConfig``, ``AutoModel``, ``AutoModelForImageClassification`` and ``AutoImageProcessor`` for one
    family; ``save_pretrained`` then copies the config / modelling files next to the weights, so
    ``trust_remote_code=True`` works where hf_reduce is not installed. The processor is registered for both of
    transformers' backends (it is PIL-based and needs no torchvision)."""
    AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
    AutoModel.register(config_class, base_class, exist_ok=True)
    AutoModelForImageClassification.register(config_class, classifier_class, exist_ok=True)
    AutoImageProcessor.register(
        config_class,
        image_processor_classes={"pil": ReduceImageProcessor, "torchvision": ReduceImageProcessor},
        exist_ok=True,
    )
    config_class.register_for_auto_class()
    base_class.register_for_auto_class("AutoModel")
    classifier_class.register_for_auto_class("AutoModelForImageClassification")
    for cls in (base_class, classifier_class):
        if not getattr(cls.save_pretrained, "_saves_processor", False):
            cls.save_pretrained = _also_saving_the_processor(cls.save_pretrained)


def _also_saving_the_processor(save_pretrained: Any) -> Any:
    """``save_pretrained`` that also writes the model's image processor, so that the folder works with
    ``pipeline("image-classification", model=folder)`` as saved (Trainer checkpoints included)."""

    @functools.wraps(save_pretrained)
    def save(self: Any, save_directory: Any, *args: Any, **kwargs: Any) -> Any:
        # The model config names the processor (the remote-code path loads it from there); the processor's own
        # file names nothing transformers could derive other processor types from (see ReduceImageProcessor).
        self.config.auto_map = {**(self.config.auto_map or {}), "AutoImageProcessor": PROCESSOR_REF}
        out = save_pretrained(self, save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            ReduceImageProcessor.for_config(self.config).save_pretrained(save_directory)
        return out

    save._saves_processor = True
    return save
