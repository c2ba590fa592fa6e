"""Neural-ODE image classifiers as ``transformers.PreTrainedModel``s.

Travels as remote code together with the sibling modules it imports relatively (blocks, solvers, tableaux,
sampling, IRDM), so the parameterised solvers work where hf_reduce is not installed.
"""

from __future__ import annotations

import re
from dataclasses import replace

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPoolingAndNoAttention, ImageClassifierOutput

from .blocks import ODEBlock, ODEFunc, ResNetBlock, make_norm
from .configuration_ode import ODEConfig
from .sampling import SolverEnsemble, SolverSpec
from .solvers import register_solvers

register_solvers()


class ODEPreTrainedModel(PreTrainedModel):
    """Shared by :class:`ODEModel` and :class:`ODEForImageClassification`: the encoder (conv stem, stages of
    ResNet / ODE blocks, global pooling), the solver controls and NFE counting.

    ``set_solver(SolverSpec(...))`` (or ``set_solver(ensemble=SolverEnsemble(...))``) changes how every ODE
    block integrates, without reloading; ``nfe`` reports the function evaluations of the last forward and
    backward passes.
    """

    config_class = ODEConfig
    base_model_prefix = "ode"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    # Both classes in every saved config, so AutoModel and AutoModelForImageClassification load remote code.
    _auto_map = {
        "AutoModel": "modeling_ode.ODEModel",
        "AutoModelForImageClassification": "modeling_ode.ODEForImageClassification",
    }

    def __init__(self, config: ODEConfig, *inputs, **kwargs) -> None:
        super().__init__(config, *inputs, **kwargs)
        config.auto_map = {**(getattr(config, "auto_map", None) or {}), **self._auto_map}

    def _adjust_missing_and_unexpected_keys(self, loading_info) -> None:
        # transformers only warns; a structure change that keeps every weight shape (another norm_ode) would
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
            # Through a weight/spectral-norm parametrisation the raw weight is `original` / `original1`.
            if hasattr(module, "parametrizations"):
                return
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, std=0.01)
            init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            if isinstance(module, nn.BatchNorm2d):
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
                init.zeros_(module.num_batches_tracked)

    def _build_encoder(self, config: ODEConfig) -> None:
        c0, groups = config.channels[0], config.group_norm_groups
        self.stem = nn.Sequential(
            nn.Conv2d(config.num_channels, c0, 3, padding=1, bias=config.norm_stem == "none"),
            make_norm(config.norm_stem, c0, groups),
            nn.ReLU(),
        )
        solver = self.config_solver()
        stages: list[nn.Module] = []
        for i, (channels, is_ode) in enumerate(zip(config.channels, config.ode_stages, strict=True)):
            if i > 0:
                stages.append(ResNetBlock(config.channels[i - 1], channels, 2, config.norm_resnet, groups))
            if is_ode:
                func = ODEFunc(channels, config.norm_ode, groups, config.time_concat, config.ode_param_norm)
                stages.append(ODEBlock(func, solver, config.gradient_mode, config.irdm_nodes))
            else:
                stages.append(ResNetBlock(channels, channels, 1, config.norm_resnet, groups))
        self.stages = nn.ModuleList(stages)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def config_solver(self) -> SolverSpec:
        """The solver the config describes (raises a clear error for unknown methods or bad parameters)."""
        c = self.config
        return SolverSpec(c.method, u=c.u, v=c.v, n_steps=c.n_steps, rtol=c.rtol, atol=c.atol)

    def config_ensemble(self) -> SolverEnsemble | None:
        """The ensemble of ``config.solver_ensemble`` (members default to the config's solver fields)."""
        if not self.config.solver_ensemble:
            return None
        base = self.config_solver()
        specs, weights = [], []
        for member in self.config.solver_ensemble:
            fields = {k: v for k, v in member.items() if k != "weight"}
            specs.append(replace(base, **fields))
            weights.append(float(member.get("weight", 1.0)))
        return SolverEnsemble(tuple(specs), tuple(weights))

    @property
    def ode_blocks(self) -> list[ODEBlock]:
        return [m for m in self.stages if isinstance(m, ODEBlock)]

    def set_solver(self, solver: SolverSpec | None = None, *, ensemble: SolverEnsemble | None = None) -> None:
        """Integrate every ODE block with ``solver`` (default: the config's), or average an ``ensemble``.

        ``set_solver()`` restores the config's solver (and its ``solver_ensemble``, if any)."""
        if solver is None and ensemble is None:
            ensemble = self.config_ensemble()
        for block in self.ode_blocks:
            block.solver = solver if solver is not None else self.config_solver()
            block.ensemble = ensemble

    @property
    def nfe(self) -> dict[str, int]:
        """Function evaluations of all ODE blocks since the last :meth:`reset_nfe` (forward / backward)."""
        return {
            "forward": sum(b.func.nfe_forward for b in self.ode_blocks),
            "backward": sum(b.func.nfe_backward for b in self.ode_blocks),
        }

    def reset_nfe(self) -> None:
        for block in self.ode_blocks:
            block.func.reset()

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
        """(last feature map, pooled features, hidden states: the stem's and every stage's output)."""
        self.reset_nfe()
        hidden = self.stem(self.normalize(pixel_values))
        hidden_states = [hidden] if output_hidden_states else None
        for stage in self.stages:
            hidden = stage(hidden)
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


class ODEModel(ODEPreTrainedModel):
    """The encoder without the classifier: ``pooler_output`` are the classifier's input features
    (``pipeline("image-feature-extraction")``, embeddings)."""

    _keys_to_ignore_on_load_unexpected = [r"^classifier\."]

    def __init__(self, config: ODEConfig) -> None:
        super().__init__(config)
        self._build_encoder(config)
        if config.solver_ensemble:
            self.set_solver(ensemble=self.config_ensemble())
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


class ODEForImageClassification(ODEPreTrainedModel):
    """A conv stem, stages of ResNet / ODE blocks, global average pooling and a linear head.

    ``config.problem_type`` is honoured as in transformers' ``*ForImageClassification`` models."""

    def __init__(self, config: ODEConfig) -> None:
        super().__init__(config)
        self._build_encoder(config)
        self.classifier = nn.Linear(config.channels[-1], config.num_labels)
        if config.solver_ensemble:
            self.set_solver(ensemble=self.config_ensemble())
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
