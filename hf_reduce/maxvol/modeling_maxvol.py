"""MaxVol reduced-order CNN classifiers as ``PreTrainedModel``s.

Self-contained (torch / transformers only) so it can travel with the weights as remote code; the selected
neuron indices are persistent buffers, saved in the safetensors file with the small dense maps.
"""

from __future__ import annotations

import re

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPoolingAndNoAttention, ImageClassifierOutput

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
    # Both classes in every saved config, so AutoModel and AutoModelForImageClassification load remote code.
    _auto_map = {
        "AutoModel": "modeling_maxvol.MaxVolModel",
        "AutoModelForImageClassification": "modeling_maxvol.MaxVolForImageClassification",
    }

    def __init__(self, config: MaxVolConfig, *inputs, **kwargs) -> None:
        super().__init__(config, *inputs, **kwargs)
        config.auto_map = {**(getattr(config, "auto_map", None) or {}), **self._auto_map}

    def _adjust_missing_and_unexpected_keys(self, loading_info) -> None:
        # transformers only warns; a structure change that keeps every weight shape (a tampered layer list) would
        # otherwise run with random weights. The head of a re-headed model may be new, as in transformers.
        # (Written out per family: each family's files travel alone as remote code.)
        super()._adjust_missing_and_unexpected_keys(loading_info)
        missing = sorted(k for k in loading_info.missing_keys if not re.match(r"^classifier\.", k))
        problems = {"missing": missing, "unexpected": sorted(loading_info.unexpected_keys)}
        detail = "; ".join(f"{len(v)} {kind} keys (e.g. {v[:3]})" for kind, v in problems.items() if v)
        if detail:
            raise ValueError(f"the weights in {self.config.name_or_path} do not match its config: {detail}")

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # A reduced model comes from hf_reduce.maxvol.reduce_model or from its weights; this gives every fresh
        # parameter and buffer a value (a new head after from_pretrained(..., num_labels=k), a blank model).
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, std=0.01)
            init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_batches_tracked)
        elif isinstance(module, MaxVolPreTrainedModel):
            init.copy_(module.input_index, torch.arange(module.input_index.numel()))

    def _build_encoder(self, config: MaxVolConfig) -> None:
        self.head = nn.ModuleList(
            KeptBlock(b["in_channels"], b["out_channels"], b["batch_norm"], b["pool"])
            for b in config.head_layers
        )
        self.register_buffer("input_index", torch.arange(config.input_neurons), persistent=True)
        self.reduced = nn.ModuleList(
            SelectedNeurons(layer["in_features"], layer["out_features"], layer["pool"])
            for layer in config.reduced_layers
        )

    def normalize(self, pixel_values: torch.Tensor) -> torch.Tensor:
        c, s = self.config.num_channels, self.config.image_size
        if pixel_values.ndim != 4 or pixel_values.shape[1] != c or pixel_values.shape[-2:] != (s, s):
            raise ValueError(
                f"expected pixel_values of shape (batch, {c}, {s}, {s}) from the config, got {tuple(pixel_values.shape)}"
            )
        mean = torch.tensor(self.config.image_mean, dtype=pixel_values.dtype, device=pixel_values.device)
        std = torch.tensor(self.config.image_std, dtype=pixel_values.dtype, device=pixel_values.device)
        return (pixel_values - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)

    def _encode(self, pixel_values: torch.Tensor, output_hidden_states: bool):
        """(selected features, the same as pooled features, hidden states: every kept block's output, the
        gathered neurons and every reduced block's output; as in transformers' vision models the input is not
        one of them)."""
        hidden = self.normalize(pixel_values)
        hidden_states = [] if output_hidden_states else None
        for block in self.head:
            hidden = block(hidden)
            if hidden_states is not None:
                hidden_states.append(hidden)
        z = hidden.flatten(1).index_select(1, self.input_index)
        if hidden_states is not None:
            hidden_states.append(z)
        for layer in self.reduced:
            z = layer(z)
            if hidden_states is not None:
                hidden_states.append(z)
        return z, z, tuple(hidden_states) if hidden_states is not None else None

    def _resolve(self, output_hidden_states: bool | None, return_dict: bool | None) -> tuple[bool, bool]:
        return (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states,
            return_dict if return_dict is not None else self.config.return_dict,
        )


class MaxVolModel(MaxVolPreTrainedModel):
    """The kept blocks and the reduced blocks without the classifier: ``pooler_output`` are the selected
    neurons the classifier reads (``pipeline("image-feature-extraction")``)."""

    _keys_to_ignore_on_load_unexpected = [r"^classifier\."]

    def __init__(self, config: MaxVolConfig) -> None:
        super().__init__(config)
        self._build_encoder(config)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPoolingAndNoAttention | tuple:
        output_hidden_states, return_dict = self._resolve(output_hidden_states, return_dict)
        last, pooled, hidden_states = self._encode(pixel_values, output_hidden_states)
        if not return_dict:
            return (last, pooled) + ((hidden_states,) if hidden_states is not None else ())
        return BaseModelOutputWithPoolingAndNoAttention(
            last_hidden_state=last, pooler_output=pooled, hidden_states=hidden_states
        )


class MaxVolForImageClassification(MaxVolPreTrainedModel):
    """The kept conv blocks, a gather of the selected neurons, the reduced blocks and the classifier.

    ``config.problem_type`` is honoured as in transformers' ``*ForImageClassification`` models."""

    def __init__(self, config: MaxVolConfig) -> None:
        super().__init__(config)
        self._build_encoder(config)
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

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput | tuple:
        output_hidden_states, return_dict = self._resolve(output_hidden_states, return_dict)
        _, pooled, hidden_states = self._encode(pixel_values, output_hidden_states)
        logits = self.classifier(pooled)
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        if not return_dict:
            out = (logits,) + ((hidden_states,) if hidden_states is not None else ())
            return ((loss,) + out) if loss is not None else out
        return ImageClassifierOutput(loss=loss, logits=logits, hidden_states=hidden_states)
