"""Active subspaces of neural networks (Cui et al., 2020): active-neuron analysis, ASNet compression with a
polynomial chaos head, and the universal active-subspace attack."""

from ..auto_classes import register_image_family
from .builder import build_asnet
from .configuration_asnet import ASNetConfig
from .modeling_asnet import ASNetForImageClassification, ASNetModel, ASNetPreTrainedModel
from .pce import fit_l1, fit_least_squares, hermite_features, hermite_table, total_degree_terms
from .sparse_training import nonzero_parameters, sparse_train
from .subspace import (
    ActiveSubspace,
    FrequentDirections,
    active_subspaces,
    count_active,
    layer_report,
    plot_spectra,
)
from .universal import (
    active_subspace_attack,
    deepfool_uap,
    project_l2,
    random_direction,
    universal_report,
)

register_image_family(ASNetConfig, ASNetModel, ASNetForImageClassification)

__all__ = [
    "ASNetConfig",
    "ASNetForImageClassification",
    "ASNetModel",
    "ASNetPreTrainedModel",
    "ActiveSubspace",
    "FrequentDirections",
    "active_subspace_attack",
    "active_subspaces",
    "build_asnet",
    "count_active",
    "deepfool_uap",
    "fit_l1",
    "fit_least_squares",
    "hermite_features",
    "hermite_table",
    "layer_report",
    "nonzero_parameters",
    "plot_spectra",
    "project_l2",
    "random_direction",
    "sparse_train",
    "total_degree_terms",
    "universal_report",
]
