"""hf_reduce: cheaper fine-tuning, training and inference for Hugging Face models.

Importing the package registers its model configurations with transformers' Auto classes, the LoTR
tuner with PEFT and the parameterised Runge-Kutta solvers with torchdiffeq.
"""

from . import (
    _import_notices,  # noqa: F401  (first: its filters must precede PEFT's imports of torchao, bnb)
    ode,  # noqa: F401  (registers the solvers with torchdiffeq)
)
from .asnet import ASNetConfig, ASNetForImageClassification, ASNetModel, build_asnet
from .cnn import VGGConfig, VGGForImageClassification, VGGModel
from .hub import CardInfo, push_to_hub, render_model_card, save_for_hub
from .image_processing import ReduceImageProcessor
from .lotr import LoTRConfig, LoTRModel
from .maxvol import MaxVolConfig, MaxVolForImageClassification, MaxVolModel, reduce_model
from .ode import ODEConfig, ODEForImageClassification, ODEModel
from .training import TrainingArguments, evaluate_model, train

__version__ = "0.1.0"

__all__ = [
    "ASNetConfig",
    "ASNetForImageClassification",
    "ASNetModel",
    "CardInfo",
    "LoTRConfig",
    "LoTRModel",
    "MaxVolConfig",
    "MaxVolForImageClassification",
    "MaxVolModel",
    "ODEConfig",
    "ODEForImageClassification",
    "ODEModel",
    "ReduceImageProcessor",
    "TrainingArguments",
    "VGGConfig",
    "VGGForImageClassification",
    "VGGModel",
    "build_asnet",
    "evaluate_model",
    "push_to_hub",
    "reduce_model",
    "render_model_card",
    "save_for_hub",
    "train",
]
