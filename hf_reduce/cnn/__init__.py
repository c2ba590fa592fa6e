"""The reference CNN (VGG-style), registered with the Auto classes."""

from ..auto_classes import register_image_family
from .configuration_vgg import VGGConfig
from .modeling_vgg import VGGBlock, VGGForImageClassification, VGGModel, VGGPreTrainedModel

register_image_family(VGGConfig, VGGModel, VGGForImageClassification)

__all__ = ["VGGBlock", "VGGConfig", "VGGForImageClassification", "VGGModel", "VGGPreTrainedModel"]
