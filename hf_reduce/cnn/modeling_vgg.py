"""The reference VGG-style image classifier: the teacher of the MaxVol and ASNet reductions.

Self-contained (torch / transformers only) so it can travel with the weights as remote code.
"""

from __future__ import annotations

import re

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPoolingAndNoAttention, ImageClassifierOutput

from .configuration_vgg import VGGConfig


class VGGBlock(nn.Module):
    """``conv3x3 -> [batch norm] -> ReLU -> [2x2 max-pool]``: the unit that reductions work on."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool, pool: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=not batch_norm)
        self.norm = nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity()
        self.act = nn.ReLU()
        self.pool = nn.MaxPool2d(2, 2) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.norm(self.conv(x))))


def build_blocks(config: VGGConfig) -> nn.ModuleList:
    """One :class:`VGGBlock` per convolution of ``config.layers``; a following ``"M"`` joins that block."""
    blocks, in_channels = [], config.num_channels
    items = list(config.layers)
    if items[0] == "M":
        raise ValueError(f"layers must start with a convolution, got {items}")
    for i, item in enumerate(items):
        if item == "M":
            if items[i - 1] == "M":
                raise ValueError(f"two max-pools in a row in {items}")
            continue
        pool = i + 1 < len(items) and items[i + 1] == "M"
        blocks.append(VGGBlock(in_channels, item, config.batch_norm, pool))
        in_channels = item
    return nn.ModuleList(blocks)


class VGGPreTrainedModel(PreTrainedModel):
    config_class = VGGConfig
    base_model_prefix = "vgg"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    # Both classes in every saved config, so AutoModel and AutoModelForImageClassification load remote code.
    _auto_map = {
        "AutoModel": "modeling_vgg.VGGModel",
        "AutoModelForImageClassification": "modeling_vgg.VGGForImageClassification",
    }

    def __init__(self, config: VGGConfig, *inputs, **kwargs) -> None:
        super().__init__(config, *inputs, **kwargs)
        config.auto_map = {**(getattr(config, "auto_map", None) or {}), **self._auto_map}

    def _adjust_missing_and_unexpected_keys(self, loading_info) -> None:
        # transformers only warns; a structure change that keeps every weight shape (batch_norm off) would
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
            if module.running_mean is not None:
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
                init.zeros_(module.num_batches_tracked)

    def _build_encoder(self, config: VGGConfig) -> None:
        self.features = build_blocks(config)
        self.pool = nn.AdaptiveAvgPool2d(1) if config.global_pool else nn.Identity()

    def normalize(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Check the input against the config and map pixels in [0, 1] to the normalised input."""
        c, s = self.config.num_channels, self.config.image_size
        if pixel_values.ndim != 4 or pixel_values.shape[1] != c or pixel_values.shape[-2:] != (s, s):
            raise ValueError(
                f"expected pixel_values of shape (batch, {c}, {s}, {s}) from the config, got {tuple(pixel_values.shape)}"
            )
        mean = torch.tensor(self.config.image_mean, dtype=pixel_values.dtype, device=pixel_values.device)
        std = torch.tensor(self.config.image_std, dtype=pixel_values.dtype, device=pixel_values.device)
        return (pixel_values - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)

    def _encode(self, pixel_values: torch.Tensor, output_hidden_states: bool):
        """(last feature map, pooled and flattened features, hidden states: every block's output). As in
        transformers' vision models, ``hidden_states[0]`` is the stem's output (here the first block's), not
        the input, and ``hidden_states[-1]`` is ``last_hidden_state``."""
        hidden = self.normalize(pixel_values)
        hidden_states = [] if output_hidden_states else None
        for block in self.features:
            hidden = block(hidden)
            if hidden_states is not None:
                hidden_states.append(hidden)
        return (
            hidden,
            self.pool(hidden).flatten(1),
            tuple(hidden_states) if hidden_states is not None else None,
        )

    def _resolve(self, output_hidden_states: bool | None, return_dict: bool | None) -> tuple[bool, bool]:
        return (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states,
            return_dict if return_dict is not None else self.config.return_dict,
        )


class VGGModel(VGGPreTrainedModel):
    """The conv blocks and pooling without the classifier: ``pooler_output`` are the classifier's input features
    (``pipeline("image-feature-extraction")``, embeddings)."""

    _keys_to_ignore_on_load_unexpected = [r"^classifier\."]

    def __init__(self, config: VGGConfig) -> None:
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


class VGGForImageClassification(VGGPreTrainedModel):
    """VGG-style classifier on pixels in [0, 1]; normalisation by ``config.image_mean/std`` happens inside.

    ``config.problem_type`` is honoured as in transformers' ``*ForImageClassification`` models (single-label
    cross-entropy, multi-label BCE, regression MSE)."""

    def __init__(self, config: VGGConfig) -> None:
        super().__init__(config)
        self._build_encoder(config)
        channels = [c for c in config.layers if c != "M"][-1]
        side = 1 if config.global_pool else config.feature_map_size()
        layers: list[nn.Module] = [nn.Flatten()]
        width = channels * side * side
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
