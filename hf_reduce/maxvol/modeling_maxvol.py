"""MaxVol reduced-order CNN classifiers as ``PreTrainedModel``s.

Self-contained (torch / transformers only) so it can travel with the weights as remote code; the selected
neuron indices are persistent buffers, saved in the safetensors file with the small dense maps.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput

from .configuration_maxvol import MaxVolConfig


class KeptBlock(nn.Module):
    """A block of the original network kept as is: ``conv3x3 -> [batch norm] -> ReLU -> [2x2 max-pool]``
    (parameter names match the original's, so its state dict loads directly)."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool, pool: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=not batch_norm)
        self.norm = nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity()
        self.pool = nn.MaxPool2d(2, 2) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.relu(self.norm(self.conv(x))))


class SelectedNeurons(nn.Linear):
    """A reduced block: the selected pre-activations from the previous selected neurons (one dense map with
    batch norm folded in), the max over each 2x2 pooling window (4 consecutive rows), then ReLU."""

    def __init__(self, in_features: int, out_features: int, pool: bool) -> None:
        super().__init__(in_features, out_features)
        self.pool = pool

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = super().forward(z)
        if self.pool:
            z = z.view(z.shape[0], -1, 4).amax(-1)
        return torch.relu(z)


class MaxVolPreTrainedModel(PreTrainedModel):
    config_class = MaxVolConfig
    base_model_prefix = "maxvol"
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # A reduced model is made by hf_reduce.maxvol.reduce_model or loaded; only fresh buffers need values.
        if isinstance(module, MaxVolForImageClassification):
            module.input_index.copy_(torch.arange(module.input_index.numel()))


class MaxVolForImageClassification(MaxVolPreTrainedModel):
    """The kept conv blocks, a gather of the selected neurons, the reduced blocks and the classifier."""

    def __init__(self, config: MaxVolConfig) -> None:
        super().__init__(config)
        self.head = nn.ModuleList(
            KeptBlock(b["in_channels"], b["out_channels"], b["batch_norm"], b["pool"])
            for b in config.head_layers
        )
        self.register_buffer("input_index", torch.arange(config.input_neurons), persistent=True)
        self.reduced = nn.ModuleList(
            SelectedNeurons(layer["in_features"], layer["out_features"], layer["pool"])
            for layer in config.reduced_layers
        )
        layers: list[nn.Module] = []
        width = config.selected_features
        for hidden in config.classifier_hidden_sizes:
            if config.dropout > 0:
                layers.append(nn.Dropout(config.dropout))
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, config.num_labels))
        self.classifier = nn.Sequential(*layers)
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

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput | tuple:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        hidden = self.normalize(pixel_values)
        for block in self.head:
            hidden = block(hidden)
        z = hidden.flatten(1).index_select(1, self.input_index)
        for layer in self.reduced:
            z = layer(z)
        logits = self.classifier(z)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        if not return_dict:
            return (loss, logits) if loss is not None else (logits,)
        return ImageClassifierOutput(loss=loss, logits=logits)
