"""ASNet classifiers as ``PreTrainedModel``s: pre-model, active-subspace projection, PCE head.

Self-contained (torch / transformers and the sibling ``pce`` module) so it travels with the weights as
remote code; that is also why the conv block is defined here rather than imported from ``hf_reduce.cnn``.
"""

from __future__ import annotations

import re

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPoolingAndNoAttention, ImageClassifierOutput

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
    # Both classes in every saved config, so AutoModel and AutoModelForImageClassification load remote code.
    _auto_map = {
        "AutoModel": "modeling_asnet.ASNetModel",
        "AutoModelForImageClassification": "modeling_asnet.ASNetForImageClassification",
    }

    def __init__(self, config: ASNetConfig, *inputs, **kwargs) -> None:
        super().__init__(config, *inputs, **kwargs)
        config.auto_map = {**(getattr(config, "auto_map", None) or {}), **self._auto_map}

    def _adjust_missing_and_unexpected_keys(self, loading_info) -> None:
        # transformers only warns; a structure change that keeps every weight shape (a tampered head) would
        # otherwise run with random weights. The head of a re-headed model may be new, as in transformers.
        # (Written out per family: each family's files travel alone as remote code.)
        super()._adjust_missing_and_unexpected_keys(loading_info)
        missing = sorted(k for k in loading_info.missing_keys if not re.match(r"^(pce\.|terms$)", k))
        problems = {"missing": missing, "unexpected": sorted(loading_info.unexpected_keys)}
        detail = "; ".join(f"{len(v)} {kind} keys (e.g. {v[:3]})" for kind, v in problems.items() if v)
        if detail:
            raise ValueError(f"the weights in {self.config.name_or_path} do not match its config: {detail}")

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # Built by hf_reduce.asnet.build_asnet or loaded; this gives every fresh parameter and buffer a value
        # (a new head after from_pretrained(..., num_labels=k), a blank model).
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
        elif isinstance(module, ASNetForImageClassification):
            terms = total_degree_terms(self.config.rank, self.config.degree)
            # A sparsified head's kept subset comes with its weights; a blank one starts from the first terms.
            init.copy_(module.terms, terms[: module.terms.shape[0]])

    def _build_encoder(self, config: ASNetConfig) -> None:
        self.pre_model = nn.ModuleList(
            PreModelBlock(b["in_channels"], b["out_channels"], b["batch_norm"], b["pool"])
            for b in config.head_layers
        )
        # ξ = (Vᵀ z - μ) / σ as one affine map: the active directions with the standardisation folded in.
        self.projection = nn.Linear(config.neurons, config.rank)

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
        """(pre-model feature map, active variables, hidden states: every pre-model block's output and the
        active variables; as in transformers' vision models the input is not one of them)."""
        hidden = self.normalize(pixel_values)
        hidden_states = [] if output_hidden_states else None
        for block in self.pre_model:
            hidden = block(hidden)
            if hidden_states is not None:
                hidden_states.append(hidden)
        active = self.projection(hidden.flatten(1))
        if hidden_states is not None:
            hidden_states.append(active)
        return hidden, active, tuple(hidden_states) if hidden_states is not None else None

    def active_variables(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The standardised coordinates of the pre-model's output in the active subspace."""
        return self._encode(pixel_values, False)[1]

    def _resolve(self, output_hidden_states: bool | None, return_dict: bool | None) -> tuple[bool, bool]:
        return (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states,
            return_dict if return_dict is not None else self.config.return_dict,
        )


class ASNetModel(ASNetPreTrainedModel):
    """The pre-model and the active-subspace projection without the PCE head: ``pooler_output`` are the
    active variables (``pipeline("image-feature-extraction")``: a rank-``r`` embedding)."""

    _keys_to_ignore_on_load_unexpected = [r"^pce\.", r"^terms$"]

    def __init__(self, config: ASNetConfig) -> None:
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


class ASNetForImageClassification(ASNetPreTrainedModel):
    """``logits = PCE(standardised projection of pre_model(x) on the active subspace)``.

    ``config.problem_type`` is honoured as in transformers' ``*ForImageClassification`` models."""

    def __init__(self, config: ASNetConfig) -> None:
        super().__init__(config)
        self._build_encoder(config)
        # (terms, factors, 2) (variable, power) pairs; a sparsified head keeps a subset, stored with the weights.
        terms = total_degree_terms(config.rank, config.degree)
        if config.kept_terms is not None:
            terms = terms.new_zeros(config.kept_terms, *terms.shape[1:])
        self.register_buffer("terms", terms, persistent=True)
        self.pce = nn.Linear(config.n_terms, config.num_labels)
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
        _, active, hidden_states = self._encode(pixel_values, output_hidden_states)
        logits = self.pce(hermite_features(active, self.terms, self.config.degree))
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        if not return_dict:
            out = (logits,) + ((hidden_states,) if hidden_states is not None else ())
            return ((loss,) + out) if loss is not None else out
        return ImageClassifierOutput(loss=loss, logits=logits, hidden_states=hidden_states)
