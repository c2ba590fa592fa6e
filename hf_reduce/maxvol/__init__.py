"""MaxVol reduced-order modelling (Gusak et al., 2021): the maximum-volume algorithms, the reduction of a
CNN's conv tail, and the reduced model as a ``PreTrainedModel``."""

from transformers import AutoConfig, AutoModelForImageClassification

from .algorithm import maxvol, rect_maxvol
from .configuration_maxvol import MaxVolConfig
from .modeling_maxvol import MaxVolForImageClassification, MaxVolPreTrainedModel
from .rom import SELECTIONS, Reduction, block_parts, reduce_model, reduce_tail, select_neurons

AutoConfig.register(MaxVolConfig.model_type, MaxVolConfig, exist_ok=True)
AutoModelForImageClassification.register(MaxVolConfig, MaxVolForImageClassification, exist_ok=True)
MaxVolConfig.register_for_auto_class()
MaxVolForImageClassification.register_for_auto_class("AutoModelForImageClassification")

__all__ = [
    "SELECTIONS",
    "MaxVolConfig",
    "MaxVolForImageClassification",
    "MaxVolPreTrainedModel",
    "Reduction",
    "block_parts",
    "maxvol",
    "rect_maxvol",
    "reduce_model",
    "reduce_tail",
    "select_neurons",
]
