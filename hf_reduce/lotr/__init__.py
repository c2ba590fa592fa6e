"""LoTR: low tensor rank adaptation as a PEFT tuner (``peft.get_peft_model(model, LoTRConfig(...))``)."""

from .config import LoTRConfig
from .conversion import lotr_to_lora, save_as_lora
from .layer import Linear, LoTRLayer
from .model import LoTRModel
from .peft_type import LOTR_PEFT_TYPE_NAME
from .registration import register_lotr

register_lotr()

__all__ = [
    "LOTR_PEFT_TYPE_NAME",
    "Linear",
    "LoTRConfig",
    "LoTRLayer",
    "LoTRModel",
    "lotr_to_lora",
    "register_lotr",
    "save_as_lora",
]
