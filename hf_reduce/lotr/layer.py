"""LoTR tuner layers: ``nn.Linear``, transformers' GPT-2 ``Conv1D`` and quantized linear layers.

A layer owns only its cores ``G_l`` (``lotr_G[adapter]``, r x r). The shared factors ``A`` and ``B`` live once
on the tuner (:class:`~hf_reduce.lotr.model.LoTRModel`); the layer keeps an *unregistered* reference to the
tuner's containers and looks the factors up at every use, so state dicts hold each factor once and the
reference stays right after deepcopy, dtype casts and ``assign=True`` loading.

Quantized bases (QLoRA-style) go through PEFT's generic quantization support: ``resolve_quantization_backend``
finds the layer's backend (bitsandbytes 4/8-bit, torchao, HQQ...), the forward pass calls the quantized layer
as it is, and merging dequantizes, adds and requantizes through the backend, as PEFT does for LoRA. Tested
here: bitsandbytes 4-bit / 8-bit and torchao int8 weight-only, on CPU.
"""

from __future__ import annotations

from typing import Any

import torch
from peft.tuners.tuners_utils import BaseTunerLayer, _get_in_out_features, check_adapters_to_merge
from peft.utils import resolve_quantization_backend
from peft.utils.other import transpose
from torch import nn
from transformers.pytorch_utils import Conv1D

#: Standard deviation of the random cores of ``init_weights=False``.
RANDOM_CORE_STD = 0.1


class SharedFactors:
    """The tuner's ``lotr_A`` / ``lotr_B`` containers: ``container[adapter][group]`` is a Parameter.

    Deliberately not an ``nn.Module``: a layer holding it does not register the factors a second time.
    """

    def __init__(self, lotr_A: nn.ModuleDict, lotr_B: nn.ModuleDict) -> None:
        self.lotr_A = lotr_A
        self.lotr_B = lotr_B

    def get(self, adapter: str, group: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self.lotr_A[adapter][group], self.lotr_B[adapter][group]


class LoTRLayer(BaseTunerLayer):
    """The adapter state of one targeted weight: a core per adapter, and which group's factors it uses."""

    adapter_layer_names = ("lotr_G",)
    other_param_names = ("r", "lotr_alpha", "scaling", "lotr_dropout", "lotr_group")

    def __init__(self, base_layer: nn.Module, shared: SharedFactors, **kwargs: Any) -> None:
        self.base_layer = base_layer
        # None for a float base; else how to read (dequantize) and write (requantize) its weight.
        self.quantization_backend = quantization_backend(
            self.get_base_layer(), get_apply_tensor_subclass=kwargs.get("get_apply_tensor_subclass")
        )
        self.r: dict[str, int] = {}
        self.lotr_alpha: dict[str, float] = {}
        self.scaling: dict[str, float] = {}
        self.lotr_group: dict[str, str] = {}
        self.lotr_G = nn.ParameterDict({})
        self.lotr_dropout = nn.ModuleDict({})
        self._disable_adapters = False
        self.merged_adapters: list[str] = []
        # A plain attribute (SharedFactors is no Module): not registered, not in the state dict.
        self._lotr_shared = shared
        self.kwargs = kwargs
        in_features, out_features = _in_out_features(self.get_base_layer())
        self.in_features = in_features
        self.out_features = out_features

    def update_layer(
        self,
        adapter_name: str,
        group: str,
        r: int,
        lotr_alpha: float,
        lotr_dropout: float,
        init_lotr: str,
        init_weights: bool = True,
    ) -> None:
        """Add the core of ``adapter_name`` to this layer (its factors must exist on the tuner)."""
        if r > min(self.in_features, self.out_features):
            raise ValueError(
                f"r={r} is larger than min(d_in={self.in_features}, d_out={self.out_features}) of this layer"
            )
        self.r[adapter_name] = r
        self.lotr_alpha[adapter_name] = lotr_alpha
        self.scaling[adapter_name] = lotr_alpha / r
        self.lotr_group[adapter_name] = group
        self.lotr_dropout[adapter_name] = nn.Dropout(p=lotr_dropout) if lotr_dropout > 0 else nn.Identity()
        device, dtype = adapter_device_dtype(self.get_base_layer())
        if init_weights:
            core = torch.eye(r) if init_lotr == "tucker" else torch.zeros(r, r)
        else:  # PEFT's convention: a non-identity start, so that tests see the adapter act
            core = torch.randn(r, r) * RANDOM_CORE_STD
        self.lotr_G[adapter_name] = nn.Parameter(core.to(device=device, dtype=dtype))
        self.set_adapter(self.active_adapters)

    def factors(self, adapter_name: str, device: torch.device | None = None) -> tuple[torch.Tensor, ...]:
        """``(A, G, B)`` of an adapter, moved to ``device`` when the layer sits elsewhere than the factors."""
        A, B = self._lotr_shared.get(adapter_name, self.lotr_group[adapter_name])
        G = self.lotr_G[adapter_name]
        if device is not None and A.device != device:
            A, B = A.to(device), B.to(device)
        return A, G, B

    def _delta(self, adapter_name: str) -> torch.Tensor:
        """``scaling · A G Bᵀ`` in the base weight's layout, computed in at least fp32 whatever the storage."""
        G = self.lotr_G[adapter_name]
        A, G, B = self.factors(adapter_name, G.device)
        compute = torch.promote_types(G.dtype, torch.float32)
        delta = (A.to(compute) @ G.to(compute) @ B.to(compute).T) * self.scaling[adapter_name]
        return transpose(delta, self.fan_in_fan_out)

    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        """The delta in the base weight's dtype, for merging (a quantized base: the cores')."""
        return self._delta(adapter_name).to(adapter_device_dtype(self.get_base_layer())[1])

    def supports_lora_conversion(self, adapter_name: str = "default") -> bool:
        return True

    def _get_additive_delta(self, adapter_name: str = "default") -> torch.Tensor:
        # PEFT >= 0.22's convert_to_lora asks for W' - W through this hook; LoTR is additive. In the adapter's
        # dtype, as PEFT's test requires: a bf16 or quantized base must not round the delta.
        return self._delta(adapter_name).to(self.lotr_G[adapter_name].dtype)


class Linear(nn.Module, LoTRLayer):
    """LoTR around an ``nn.Linear`` or a GPT-2 ``Conv1D`` (``fan_in_fan_out=True``)."""

    def __init__(
        self,
        base_layer: nn.Module,
        adapter_name: str,
        shared: SharedFactors,
        group: str,
        r: int,
        lotr_alpha: float,
        lotr_dropout: float,
        init_lotr: str,
        init_weights: bool = True,
        fan_in_fan_out: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        LoTRLayer.__init__(self, base_layer, shared, **kwargs)
        self.fan_in_fan_out = fan_in_fan_out
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, group, r, lotr_alpha, lotr_dropout, init_lotr, init_weights)

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        """Add ``scaling · A G Bᵀ`` of the given (default: active) adapters to the base weight.

        A quantized base is dequantized, added to and requantized (PEFT's ``get_base_weight`` /
        ``set_base_weight``), so the merged layer carries the requantization error of its backend.
        """
        adapter_names = check_adapters_to_merge(self, adapter_names)
        for name in adapter_names:
            if name not in self.lotr_G:
                continue
            weight = self.get_base_weight()  # a float base: its .data itself; quantized: a dequantized copy
            if safe_merge:
                weight = weight.clone()
            weight += self.get_delta_weight(name).to(weight.dtype)
            if safe_merge and not torch.isfinite(weight).all():  # PEFT's wording, as for LoRA
                raise ValueError(
                    f"NaNs detected in the merged weights. The adapter {name} seems to be broken"
                )
            self.set_base_weight(weight)
            self.merged_adapters.append(name)

    def unmerge(self) -> None:
        """Subtract every merged adapter again, last merged first."""
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            if name in self.lotr_G:
                weight = self.get_base_weight()
                weight -= self.get_delta_weight(name).to(weight.dtype)
                self.set_base_weight(weight)

    def _adapter_output(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """``scaling · dropout(x) (A G Bᵀ)ᵀ`` for one adapter."""
        A, G, B = self.factors(name, x.device)
        # (x B) Gᵀ Aᵀ = x (A G Bᵀ)ᵀ. Folding the r x r core into B first keeps the activations saved for
        # backward exactly those of LoRA (x and one N x r product); the fold costs d_in·r² per call.
        right = B @ G.T
        h = self._cast_input_dtype(self.lotr_dropout[name](x), right.dtype)
        return (h @ right) @ A.T * self.scaling[name]

    def _base_output(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        result = self.base_layer(x, *args, **kwargs)
        if (
            self.quantization_backend is not None
        ):  # bitsandbytes 4-bit: adding in place to its output breaks backward
            result = self.quantization_backend.maybe_clone_base_result(result)
        return result

    def _check_forward_args(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """Mixed-adapter batches need one adapter name per input row and no merged adapter (as LoRA)."""
        adapter_names = kwargs.get("adapter_names")
        if adapter_names is None:
            return
        if len(x) != len(adapter_names):
            raise ValueError(
                "Length of `adapter_names` should be the same as the number of inputs, but got "
                f"{len(adapter_names)} and {len(x)} respectively."
            )
        if self.merged:
            raise ValueError(
                "Cannot pass `adapter_names` when there are merged adapters, please call `unmerge_adapter` first."
            )

    def _mixed_batch_forward(
        self, x: torch.Tensor, *args: Any, adapter_names: list[str], **kwargs: Any
    ) -> torch.Tensor:
        """Each row with its own adapter (``"__base__"``: none), as PEFT's LoRA does."""
        result = self._base_output(x, *args, **kwargs)
        for name in set(adapter_names):
            if name == "__base__" or name not in self.lotr_G:
                continue
            rows = [i for i, item in enumerate(adapter_names) if item == name]
            result[rows] += self._adapter_output(name, x[rows]).to(result.dtype)
        return result

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        self._check_forward_args(x, *args, **kwargs)
        adapter_names = kwargs.pop("adapter_names", None)
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return self.base_layer(x, *args, **kwargs)
        if adapter_names is not None:
            return self._mixed_batch_forward(x, *args, adapter_names=adapter_names, **kwargs)
        if self.merged:
            return self.base_layer(x, *args, **kwargs)
        result = self._base_output(x, *args, **kwargs)
        for name in self.active_adapters:
            if name in self.lotr_G:
                result = result + self._adapter_output(name, x).to(result.dtype)
        return result

    def __repr__(self) -> str:
        return "lotr." + super().__repr__()


def _in_out_features(layer: nn.Module) -> tuple[int, int]:
    if not _is_supported(layer):
        raise TypeError(
            f"LoTR adapts nn.Linear, transformers' Conv1D and quantized linear layers, got {type(layer).__name__}"
        )
    d_in, d_out = _get_in_out_features(layer)  # PEFT's: also the quantized layers' own attribute names
    return d_in, d_out


def _is_supported(layer: nn.Module) -> bool:
    if isinstance(layer, (nn.Linear, Conv1D)):  # bitsandbytes' and torchao's quantized linears among them
        return True
    try:
        backend = resolve_quantization_backend(layer)
    except ValueError:  # a torchao weight without its config: still a linear layer
        return True
    return backend is not None and backend.layer_type == "linear" and None not in _get_in_out_features(layer)


def adapter_device_dtype(base: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where and in which dtype an adapter on ``base`` lives: the base weight's, or float32 (its compute dtype
    when it has one) for integer storage such as bitsandbytes' int8 / packed 4-bit."""
    weight = getattr(base, "weight", None)
    if weight is None:  # layers that keep their quantized data under other names (HQQ: W_q)
        weight = next(t for t in [*base.parameters(), *base.buffers()])
    dtype = weight.dtype
    if not dtype.is_floating_point:
        dtype = getattr(base, "compute_dtype", None) or torch.float32
    return weight.device, dtype


def quantization_backend(base: nn.Module, **quantization_kwargs: Any) -> Any:
    """PEFT's quantization backend of ``base``, None for a float layer.

    A plain float ``nn.Linear`` / ``Conv1D`` is answered without PEFT's lookup, which imports every installed
    quantization library (torchao and bitsandbytes log warnings at import): float models stay quiet.
    """
    if type(base) in (nn.Linear, Conv1D) and type(base.weight) in (nn.Parameter, torch.Tensor):
        return None
    return resolve_quantization_backend(base, **quantization_kwargs)


def dequantized_weight(base: nn.Module, **quantization_kwargs: Any) -> torch.Tensor:
    """The base weight as a float tensor in its stored layout (dequantized through PEFT's backend)."""
    backend = quantization_backend(base, **quantization_kwargs)
    if backend is None:
        return base.weight.detach()
    return backend.get_base_weight(base).detach()


def in_out_features(layer: nn.Module) -> tuple[int, int]:
    """``(d_in, d_out)`` of a supported target (or of the base layer of a LoTR layer)."""
    if isinstance(layer, BaseTunerLayer):
        layer = layer.get_base_layer()
    return _in_out_features(layer)


def is_supported_target(layer: nn.Module) -> bool:
    if isinstance(layer, BaseTunerLayer):
        layer = layer.get_base_layer()
    return _is_supported(layer)
