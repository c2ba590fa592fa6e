"""Registering an image-model family with transformers' Auto classes, in-process and as remote code."""

from __future__ import annotations

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification

from .image_processing import ReduceImageProcessor

# save_pretrained of the processor copies image_processing.py next to it and records it in auto_map.
ReduceImageProcessor.register_for_auto_class("AutoImageProcessor")


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
