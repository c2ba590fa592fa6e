"""MaxVol reduced-order modelling (Gusak et al., 2021): the maximum-volume algorithms, the reduction of a
CNN's conv tail, and the reduced model as a ``PreTrainedModel``."""

from ..auto_classes import register_image_family
from .algorithm import maxvol, rect_maxvol
from .configuration_maxvol import MaxVolConfig
from .modeling_maxvol import MaxVolForImageClassification, MaxVolModel, MaxVolPreTrainedModel
from .rank_search import RankSearch, search_ranks
from .rom import (
    SELECTIONS,
    Reduction,
    SampledActivation,
    TailSample,
    block_parts,
    reduce_model,
    reduce_tail,
    sample_tail,
    select_neurons,
)

register_image_family(MaxVolConfig, MaxVolModel, MaxVolForImageClassification)

__all__ = [
    "SELECTIONS",
    "MaxVolConfig",
    "MaxVolForImageClassification",
    "MaxVolModel",
    "MaxVolPreTrainedModel",
    "RankSearch",
    "Reduction",
    "SampledActivation",
    "TailSample",
    "block_parts",
    "maxvol",
    "rect_maxvol",
    "reduce_model",
    "reduce_tail",
    "sample_tail",
    "search_ranks",
    "select_neurons",
]
