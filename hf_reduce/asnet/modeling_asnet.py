"""ASNet classifiers as ``PreTrainedModel``s: pre-model, active-subspace projection, PCE head.

Self-contained (torch / transformers and the sibling ``pce`` module) so it travels with the weights as
remote code; that is also why the conv block is defined here rather than imported from ``hf_reduce.cnn``.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput

from .configuration_asnet import ASNetConfig
from .pce import hermite_features, total_degree_terms


class PreModelBlock(nn.Module):
    """``conv3x3 -> [batch norm] -> ReLU -> [2x2 max-pool]``, named like the original's blocks."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool, pool: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=not batch_norm)
        self.norm = nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity()
        self.pool = nn.MaxPool2d(2, 2) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.relu(self.norm(self.conv(x))))


class ASNetPreTrainedModel(PreTrainedModel):
    config_class = ASNetConfig
    base_model_prefix = "asnet"
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # Built by hf_reduce.asnet.build_asnet or loaded; a fresh model only needs its basis table.
        if isinstance(module, ASNetForImageClassification) and self.config.kept_terms is None:
            module.terms.copy_(total_degree_terms(self.config.rank, self.config.degree))


class ASNetForImageClassification(ASNetPreTrainedModel):
    """``logits = PCE(standardised projection of pre_model(x) on the active subspace)``."""

    def __init__(self, config: ASNetConfig) -> None:
        super().__init__(config)
        self.pre_model = nn.ModuleList(
            PreModelBlock(b["in_channels"], b["out_channels"], b["batch_norm"], b["pool"])
            for b in config.head_layers
        )
        # ξ = (Vᵀ z - μ) / σ as one affine map: the active directions with the standardisation folded in.
        self.projection = nn.Linear(config.neurons, config.rank)
        # (terms, factors, 2) (variable, power) pairs; a sparsified head keeps a subset, stored with the weights.
        terms = total_degree_terms(config.rank, config.degree)
        if config.kept_terms is not None:
            terms = terms.new_zeros(config.kept_terms, *terms.shape[1:])
        self.register_buffer("terms", terms, persistent=True)
        self.pce = nn.Linear(config.n_terms, config.num_labels)
        self.post_init()

    def normalize(self, pixel_values: torch.Tensor) -> torch.Tensor:
        c, s = self.config.num_channels, self.config.image_size
        if pixel_values.ndim != 4 or pixel_values.shape[1] != c or pixel_values.shape[-2:] != (s, s):
            raise ValueError(
                f"expected pixel_values of shape (batch, {c}, {s}, {s}) from the config, got {tuple(pixel_values.shape)}"
            )
        mean = torch.tensor(self.config.image_mean, dtype=pixel_values.dtype, device=pixel_values.device)
        std = torch.tensor(self.config.image_std, dtype=pixel_values.dtype, device=pixel_values.device)
        return (pixel_values - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)

    def active_variables(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The standardised coordinates of the pre-model's output in the active subspace."""
        hidden = self.normalize(pixel_values)
        for block in self.pre_model:
            hidden = block(hidden)
        return self.projection(hidden.flatten(1))

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput | tuple:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        features = hermite_features(self.active_variables(pixel_values), self.terms, self.config.degree)
        logits = self.pce(features)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        if not return_dict:
            return (loss, logits) if loss is not None else (logits,)
        return ImageClassifierOutput(loss=loss, logits=logits)
