"""The reference CNN (VGG-style), registered with the Auto classes."""

from transformers import AutoConfig, AutoModelForImageClassification

from .configuration_vgg import VGGConfig
from .modeling_vgg import VGGBlock, VGGForImageClassification, VGGPreTrainedModel

AutoConfig.register(VGGConfig.model_type, VGGConfig, exist_ok=True)
AutoModelForImageClassification.register(VGGConfig, VGGForImageClassification, exist_ok=True)
# save_pretrained copies these two files next to the weights: trust_remote_code works without hf_reduce.
VGGConfig.register_for_auto_class()
VGGForImageClassification.register_for_auto_class("AutoModelForImageClassification")

__all__ = ["VGGBlock", "VGGConfig", "VGGForImageClassification", "VGGPreTrainedModel"]
