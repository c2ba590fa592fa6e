"""LoTRModel: the PEFT tuner that plans the groups, owns the shared factors and injects LoTR layers."""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from peft.tuners.tuners_utils import (
    BaseTuner,
    BaseTunerLayer,
    _ExcludedModule,
    _maybe_include_all_linear_layers,
)
from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING, get_quantization_kwargs
from peft.utils.other import AuxiliaryTrainingWrapper
from torch import nn
from transformers.pytorch_utils import Conv1D

from .config import LoTRConfig
from .layer import (
    Linear,
    LoTRLayer,
    SharedFactors,
    adapter_device_dtype,
    dequantized_weight,
    in_out_features,
    is_supported_target,
)
from .peft_type import LOTR_PREFIX

logger = logging.getLogger(__name__)


@dataclass
class Group:
    """Targets that share one (A, B) pair: all of shape ``d_out x d_in``."""

    name: str
    d_in: int
    d_out: int
    members: list[str] = field(default_factory=list)


def _layer_index_position(parts: list[str], layers_pattern: list[str] | str | None) -> int | None:
    """Position of the layer index in a dotted module name: after ``layers_pattern`` if given, else the
    first all-digit component."""
    patterns = [layers_pattern] if isinstance(layers_pattern, str) else list(layers_pattern or [])
    for i, part in enumerate(parts[:-1]):
        if part.isdigit() and (not patterns or (i > 0 and parts[i - 1] in patterns)):
            return i
    return None


def group_name(key: str, d_in: int, d_out: int, config: LoTRConfig) -> str:
    """The group a target belongs to under ``config.share_by``."""
    share_by = config.share_by
    if share_by == "shape":
        return f"{d_out}x{d_in}"
    if share_by == "module":
        # The same projection at every depth: drop the layer index, keep the rest (encoder/decoder stay apart).
        parts = key.split(".")
        index = _layer_index_position(parts, config.layers_pattern)
        if index is not None:
            parts = parts[:index] + parts[index + 1 :]
        return "-".join(parts)
    matches = [name for name, pattern in share_by.items() if re.search(pattern, key)]
    if len(matches) != 1:
        what = "no" if not matches else f"several ({matches})"
        raise ValueError(f"target {key!r} matches {what} share_by patterns; patterns: {share_by}")
    return matches[0]


class LoTRModel(BaseTuner):
    """Low tensor rank adaptation (LoTR) of a model, as a PEFT tuner.

    Use through PEFT: ``peft.get_peft_model(model, LoTRConfig(...))`` (after ``import hf_reduce``).
    The shared factors are ``self.lotr_A[adapter][group]`` (``d_out x r``) and ``self.lotr_B[adapter][group]``
    (``d_in x r``); each adapted layer holds its core ``lotr_G[adapter]`` (``r x r``).
    """

    prefix: str = LOTR_PREFIX
    tuner_layer_cls = LoTRLayer
    target_module_mapping = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
    uses_shared_state: bool = True

    # ------------------------------------------------------------------------------------------ planning

    def _ensure_containers(self) -> None:
        # add_adapter / load_adapter do not run _pre_injection_hook: create the containers lazily.
        if "lotr_A" not in self._modules:
            self.lotr_A = nn.ModuleDict()
            self.lotr_B = nn.ModuleDict()
            self._lotr_groups: dict[str, dict[str, Group]] = {}
            self._lotr_member_group: dict[str, dict[str, str]] = {}

    def _pre_injection_hook(self, model: nn.Module, config: LoTRConfig, adapter_name: str) -> None:
        self._ensure_containers()

    def plan_groups(self, config: LoTRConfig, model: nn.Module) -> dict[str, Group]:
        """Which targets exist and how they group; raises before anything is modified."""
        config = _maybe_include_all_linear_layers(config, model)
        groups: dict[str, Group] = {}
        unsupported = []
        # The internals of existing tuner layers (base_layer, cores) are never targets of another adapter.
        tuner_layers = tuple(k + "." for k, m in model.named_modules() if isinstance(m, BaseTunerLayer))
        for key, module in model.named_modules():
            if not key or key.startswith(tuner_layers):
                continue
            matched = self._check_target_module_exists(config, key)
            if not matched or isinstance(matched, _ExcludedModule):
                continue
            if not is_supported_target(module):
                unsupported.append(f"{key} ({type(module).__name__})")
                continue
            d_in, d_out = in_out_features(module)
            if config.r > min(d_in, d_out):
                raise ValueError(
                    f"r={config.r} is larger than min(d_in, d_out) = {min(d_in, d_out)} of target {key!r} "
                    f"({d_out} x {d_in}); choose r <= {min(d_in, d_out)} or exclude that module"
                )
            name = group_name(key, d_in, d_out, config)
            group = groups.setdefault(name, Group(name, d_in, d_out))
            if (group.d_in, group.d_out) != (d_in, d_out):
                raise ValueError(
                    f"targets of different shapes cannot share one (A, B) pair: group {name!r} holds "
                    f"{group.members[0]!r} ({group.d_out} x {group.d_in}) and {key!r} ({d_out} x {d_in}); "
                    "use share_by='shape' or separate share_by patterns"
                )
            group.members.append(key)
        layouts = {
            isinstance(_base(model.get_submodule(m)), Conv1D) for g in groups.values() for m in g.members
        }
        if layouts == {not config.fan_in_fan_out}:
            warnings.warn(
                f"fan_in_fan_out={config.fan_in_fan_out} does not fit the targets "
                f"({'Conv1D' if config.fan_in_fan_out is False else 'nn.Linear'}); setting it to {not config.fan_in_fan_out}",
                stacklevel=2,
            )
            config.fan_in_fan_out = not config.fan_in_fan_out
        if unsupported:
            raise ValueError(
                f"Target module types not supported: {unsupported}; LoTR adapts nn.Linear and transformers' "
                "Conv1D only"
            )
        if not groups and config.target_modules:
            raise ValueError(
                f"target_modules={sorted(config.target_modules) if isinstance(config.target_modules, set) else config.target_modules!r} "
                f"matched no nn.Linear / Conv1D module. Linear layers in this model: {_linear_names(model)}"
            )
        return groups

    def inject_adapter(self, model: nn.Module, adapter_name: str, *args: Any, **kwargs: Any) -> None:
        """PEFT's injection, told which adapter it injects: ``_prepare_model`` receives only the config, and
        one config object may serve several adapters (``add_adapter("other", config_in_use)``)."""
        self._injecting = adapter_name
        try:
            super().inject_adapter(model, adapter_name, *args, **kwargs)
        finally:
            del self._injecting
        self._sync_shared_requires_grad()

    def _prepare_model(self, peft_config: LoTRConfig, model: nn.Module) -> None:
        """Plan the groups of this adapter and create its shared factors (before any layer is replaced)."""
        self._ensure_containers()
        adapter_name = self._injecting
        groups = self.plan_groups(peft_config, model)
        self._lotr_groups[adapter_name] = groups
        self._lotr_member_group[adapter_name] = {m: g.name for g in groups.values() for m in g.members}
        factors_A, factors_B = nn.ParameterDict(), nn.ParameterDict()
        for group in groups.values():
            weights = [model.get_submodule(m) for m in group.members]
            A, B = _initial_factors(peft_config, group, weights, get_quantization_kwargs(model))
            factors_A[group.name] = nn.Parameter(A)
            factors_B[group.name] = nn.Parameter(B)
        self.lotr_A[adapter_name] = factors_A
        self.lotr_B[adapter_name] = factors_B

    # ------------------------------------------------------------------------------------------ injection

    def _create_and_replace(
        self,
        lotr_config: LoTRConfig,
        adapter_name: str,
        target: nn.Module,
        target_name: str,
        parent: nn.Module,
        current_key: str,
        **kwargs,
    ) -> None:
        group = self._lotr_member_group[adapter_name].get(current_key)
        if group is None:  # matched only through a state dict: plan it now
            d_in, d_out = in_out_features(target)
            group = group_name(current_key, d_in, d_out, lotr_config)
        shared = SharedFactors(self.lotr_A, self.lotr_B)
        options = dict(
            group=group,
            r=lotr_config.r,
            lotr_alpha=lotr_config.lotr_alpha,
            lotr_dropout=lotr_config.lotr_dropout,
            init_lotr=lotr_config.init_lotr,
            init_weights=lotr_config.init_weights,
        )
        if isinstance(target, LoTRLayer):
            target.update_layer(adapter_name, **options)
            return
        # The weight layout is a property of the module: Conv1D stores (d_in, d_out) whatever the config says.
        new_module = Linear(
            target,
            adapter_name,
            shared,
            fan_in_fan_out=isinstance(target, Conv1D),
            **options,
            **get_quantization_kwargs(self.model),  # torchao: how to requantize after a merge
        )
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)

    def _check_merge_allowed(self) -> None:
        """Refuse a merge into a weight that another module shares (a tied ``lm_head``): the delta would land
        in the input embeddings too and change the outputs. PEFT only warns here; checked before any layer
        merges, so a refused merge leaves the model as it was."""
        owners: dict[int, list[str]] = {}
        for name, parameter in self.model.named_parameters(remove_duplicate=False):
            owners.setdefault(id(parameter), []).append(name)
        for name, module in self.model.named_modules():
            if isinstance(module, LoTRLayer):
                sharing = [
                    n
                    for n in owners.get(id(module.get_base_layer().weight), [])
                    if not n.startswith(name + ".")
                ]
                if sharing:
                    raise ValueError(
                        f"{name}'s weight is tied to {sharing[0]} (tie_word_embeddings): merging LoTR into it would "
                        "change that module too; keep the adapter unmerged, or load the model with "
                        "tie_word_embeddings=False and clone the weight first"
                    )
        super()._check_merge_allowed()

    # ------------------------------------------------------------------------------------------ shared state

    def _shared_parameters(self, adapter_name: str) -> list[nn.Parameter]:
        if "lotr_A" not in self._modules or adapter_name not in self.lotr_A:
            return []
        return list(self.lotr_A[adapter_name].values()) + list(self.lotr_B[adapter_name].values())

    def _sync_shared_requires_grad(self) -> None:
        """An adapter's shared factors train exactly when its cores do.

        The cores follow PEFT's own rules (active or not, ``inference_mode``, ``set_requires_grad``, adding or
        loading another adapter); mirroring them keeps A, B and the cores of one adapter in one state, so an
        adapter never trains its cores alone.
        """
        if "lotr_A" not in self._modules:
            return
        cores: dict[str, list[bool]] = {}
        for module in self.model.modules():
            if isinstance(module, LoTRLayer):
                for name, core in module.lotr_G.items():
                    cores.setdefault(name, []).append(core.requires_grad)
        for name in self.lotr_A:
            trainable = any(cores.get(name, []))
            for parameter in self._shared_parameters(name):
                parameter.requires_grad_(trainable)

    def _mark_only_adapters_as_trainable(self, model: nn.Module) -> None:
        super()._mark_only_adapters_as_trainable(model)
        self._sync_shared_requires_grad()

    def set_adapter(self, adapter_name: str | list[str], inference_mode: bool = False) -> None:
        """Activate adapter(s): their cores and shared factors train, all others are frozen."""
        super().set_adapter(adapter_name, inference_mode=inference_mode)
        self._sync_shared_requires_grad()

    def set_requires_grad(self, adapter_names: str | list[str], requires_grad: bool = True) -> None:
        """Enable or disable gradients of the given adapter(s), shared factors included."""
        super().set_requires_grad(adapter_names, requires_grad=requires_grad)
        self._sync_shared_requires_grad()

    @contextmanager
    def _enable_peft_forward_hooks(self, *args: Any, **kwargs: Any) -> Iterator[None]:
        """Mixed-adapter batches, ``model(x, adapter_names=[...])``, as PEFT's LoRA: each LoTR layer (and each
        ``modules_to_save`` wrapper) receives the per-row adapter names through a forward pre-hook."""
        adapter_names = kwargs.pop("adapter_names", None)
        if adapter_names is None:
            yield
            return
        if self.training:
            raise ValueError("Cannot pass `adapter_names` when the model is in training mode.")
        known = {name for module in self.modules() if isinstance(module, LoTRLayer) for name in module.lotr_G}
        unknown = {name for name in adapter_names if name != "__base__"} - known
        if unknown:
            raise ValueError(f"Trying to infer with non-existing adapter(s): {', '.join(sorted(unknown))}")
        num_beams = kwargs.get("num_beams")
        per_row = list(adapter_names)
        if isinstance(num_beams, int) and num_beams > 1:  # generate() repeats each input num_beams times
            per_row = [name for name in adapter_names for _ in range(num_beams)]
        handles = []
        for module in self.modules():
            if isinstance(module, (LoTRLayer, AuxiliaryTrainingWrapper)):
                hook = partial(_adapter_names_pre_forward_hook, adapter_names=per_row)
                handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
        encoder = self.model.get_encoder() if hasattr(self.model, "get_encoder") else None
        if per_row != list(adapter_names) and isinstance(encoder, nn.Module):
            # The encoder sees the inputs once, not once per beam.
            for module in encoder.modules():
                if isinstance(module, (LoTRLayer, AuxiliaryTrainingWrapper)):
                    hook = partial(_adapter_names_pre_forward_hook, adapter_names=list(adapter_names))
                    handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def delete_adapter(self, adapter_name: str) -> None:
        """Delete an adapter, its cores and its shared factors."""
        super().delete_adapter(adapter_name)
        for container in (self.lotr_A, self.lotr_B):
            if adapter_name in container:
                del container[adapter_name]
        self._lotr_groups.pop(adapter_name, None)
        self._lotr_member_group.pop(adapter_name, None)
        self._sync_shared_requires_grad()

    def _cast_adapter_dtype(self, adapter_name: str, autocast_adapter_dtype: bool = True) -> None:
        """Upcast fp16/bf16 adapter weights (cores and shared factors) to fp32, as PEFT does for LoRA."""
        super()._cast_adapter_dtype(adapter_name, autocast_adapter_dtype=autocast_adapter_dtype)
        if not autocast_adapter_dtype or "lotr_A" not in self._modules:
            return
        for container in (self.lotr_A, self.lotr_B):
            if adapter_name not in container:
                continue
            factors = container[adapter_name]
            for group, parameter in list(factors.items()):
                if parameter.dtype in (torch.float16, torch.bfloat16):
                    factors[group] = nn.Parameter(
                        parameter.detach().float(), requires_grad=parameter.requires_grad
                    )

    # ------------------------------------------------------------------------------------------ loading

    @classmethod
    def _remap_adapter_state_dict_for_load(cls, model, config, adapter_name, state_dict):
        remapped = super()._remap_adapter_state_dict_for_load(model, config, adapter_name, state_dict)
        expected = {
            k: v.shape
            for k, v in model.state_dict().items()
            if f".lotr_A.{adapter_name}." in k or f".lotr_B.{adapter_name}." in k
        }
        saved = {k: v.shape for k, v in remapped.items() if ".lotr_A." in k or ".lotr_B." in k}
        if expected and saved and expected != saved:
            missing, extra = sorted(set(expected) - set(saved)), sorted(set(saved) - set(expected))
            shapes = sorted(k for k in set(expected) & set(saved) if expected[k] != saved[k])
            raise ValueError(
                "this LoTR checkpoint does not fit the adapter it is loaded into (saved with another share_by, rank "
                f"or targets?): model r={config.r}, share_by={config.share_by!r}; groups missing from the checkpoint: "
                f"{missing[:5]}, unknown groups in it: {extra[:5]}, shape mismatches: "
                f"{[(k, tuple(saved[k]), tuple(expected[k])) for k in shapes[:5]]}"
            )
        return remapped

    # ------------------------------------------------------------------------------------------ reporting

    def lotr_groups(self, adapter_name: str = "default") -> dict[str, Group]:
        """The groups of an adapter: name -> :class:`Group` (shape and member module names)."""
        return self._lotr_groups[adapter_name]


def _adapter_names_pre_forward_hook(target: nn.Module, args: tuple, kwargs: dict, adapter_names: list[str]):
    kwargs["adapter_names"] = adapter_names
    return args, kwargs


def _base(layer: nn.Module) -> nn.Module:
    return layer.get_base_layer() if isinstance(layer, BaseTunerLayer) else layer


def _linear_names(model: nn.Module) -> list[str]:
    names = {key.rsplit(".", 1)[-1] for key, m in model.named_modules() if key and is_supported_target(m)}
    return sorted(names)


def _initial_factors(
    config: LoTRConfig, group: Group, layers: list[nn.Module], quantization_kwargs: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``A`` (d_out x r) and ``B`` (d_in x r) at initialisation, on the device/dtype of the group's weights."""
    device, dtype = adapter_device_dtype(_base(layers[0]))
    r = config.r
    if config.init_lotr in ("zero_core", "fan_in"):
        # zero_core, the authors' initialisation: unscaled N(0, 1) factors. fan_in: B ~ N(0, 1/d_in), so that
        # Bᵀx has O(1) entries whatever the width, as LoRA's kaiming-initialised A has. The zero cores make
        # ΔW = 0 at step 0 either way.
        A = torch.randn(group.d_out, r, device=device if device.type != "meta" else "cpu")
        B = torch.randn(group.d_in, r, device=A.device)
        if config.init_lotr == "fan_in":
            B = B / group.d_in**0.5
        return A.to(device=device, dtype=dtype), B.to(device=device, dtype=dtype)
    # "tucker": Tucker-2 (HOSVD) of the stacked weights W_l (d_out x d_in): B = leading left singular vectors
    # of the mode-d_in unfolding [W_1ᵀ ... W_Lᵀ]; A = 0 and G_l = I keep ΔW = 0 at step 0.
    if device.type == "meta":
        raise ValueError("init_lotr='tucker' needs the pretrained weights; they are on the meta device")
    weights = [_weight_out_in(layer, quantization_kwargs) for layer in layers]  # quantized: dequantized
    unfolding = torch.cat([w.float().T for w in weights], dim=1)  # d_in x (L·d_out)
    left, _, _ = torch.linalg.svd(unfolding, full_matrices=False)
    B = left[:, :r].contiguous()
    # init_weights=False (tests): a random A too, or the random cores would leave ΔW = 0.
    A = (
        torch.zeros(group.d_out, r, device=device)
        if config.init_weights
        else torch.randn(group.d_out, r, device=device)
    )
    return A.to(dtype=dtype), B.to(dtype=dtype)


def _weight_out_in(layer: nn.Module, quantization_kwargs: dict[str, Any]) -> torch.Tensor:
    base = _base(layer)
    weight = dequantized_weight(base, **quantization_kwargs)
    return weight.T if isinstance(base, Conv1D) else weight
