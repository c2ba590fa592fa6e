"""LoTR tuner layers: ``nn.Linear`` and transformers' GPT-2 ``Conv1D``.

A layer owns only its cores ``G_l`` (``lotr_G[adapter]``, r x r). The shared factors ``A`` and ``B`` live once
on the tuner (:class:`~hf_reduce.lotr.model.LoTRModel`); the layer keeps an *unregistered* reference to the
tuner's containers and looks the factors up at every use, so state dicts hold each factor once and the
reference stays right after deepcopy, dtype casts and ``assign=True`` loading.
"""

from __future__ import annotations

from typing import Any

import torch
from peft.tuners.tuners_utils import BaseTunerLayer, check_adapters_to_merge
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
        weight = self.get_base_layer().weight
        dtype = weight.dtype if weight.dtype.is_floating_point else torch.float32
        if init_weights:
            core = torch.eye(r) if init_lotr == "tucker" else torch.zeros(r, r)
        else:  # PEFT's convention: a non-identity start, so that tests see the adapter act
            core = torch.randn(r, r) * RANDOM_CORE_STD
        self.lotr_G[adapter_name] = nn.Parameter(core.to(device=weight.device, dtype=dtype))
        self.set_adapter(self.active_adapters)

    def factors(self, adapter_name: str, device: torch.device | None = None) -> tuple[torch.Tensor, ...]:
        """``(A, G, B)`` of an adapter, moved to ``device`` when the layer sits elsewhere than the factors."""
        A, B = self._lotr_shared.get(adapter_name, self.lotr_group[adapter_name])
        G = self.lotr_G[adapter_name]
        if device is not None and A.device != device:
            A, B = A.to(device), B.to(device)
        return A, G, B

    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        """``scaling · A G Bᵀ`` in the base weight's layout and dtype."""
        A, G, B = self.factors(adapter_name, self.get_base_layer().weight.device)
        compute = torch.promote_types(G.dtype, torch.float32)  # merge in at least fp32, whatever the storage
        delta = (A.to(compute) @ G.to(compute) @ B.to(compute).T) * self.scaling[adapter_name]
        return transpose(delta, self.fan_in_fan_out).to(self.get_base_layer().weight.dtype)

    def supports_lora_conversion(self, adapter_name: str = "default") -> bool:
        return True


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
        """Add ``scaling · A G Bᵀ`` of the given (default: active) adapters to the base weight."""
        adapter_names = check_adapters_to_merge(self, adapter_names)
        base = self.get_base_layer()
        for name in adapter_names:
            if name not in self.lotr_G:
                continue
            delta = self.get_delta_weight(name)
            if safe_merge:
                merged = base.weight.data + delta
                if not torch.isfinite(merged).all():  # PEFT's wording, as for LoRA
                    raise ValueError(
                        f"NaNs detected in the merged weights. The adapter {name} seems to be broken"
                    )
                base.weight.data = merged
            else:
                base.weight.data += delta
            self.merged_adapters.append(name)

    def unmerge(self) -> None:
        """Subtract every merged adapter again, last merged first."""
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            if name in self.lotr_G:
                self.get_base_layer().weight.data -= self.get_delta_weight(name)

    def _adapter_output(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """``scaling · dropout(x) (A G Bᵀ)ᵀ`` for one adapter."""
        A, G, B = self.factors(name, x.device)
        # (x B) Gᵀ Aᵀ = x (A G Bᵀ)ᵀ. Folding the r x r core into B first keeps the activations saved for
        # backward exactly those of LoRA (x and one N x r product); the fold costs d_in·r² per call.
        right = B @ G.T
        h = self._cast_input_dtype(self.lotr_dropout[name](x), right.dtype)
        return (h @ right) @ A.T * self.scaling[name]

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
        result = self.base_layer(x, *args, **kwargs)
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
        result = self.base_layer(x, *args, **kwargs)
        for name in self.active_adapters:
            if name in self.lotr_G:
                result = result + self._adapter_output(name, x).to(result.dtype)
        return result

    def __repr__(self) -> str:
        return "lotr." + super().__repr__()


def _in_out_features(layer: nn.Module) -> tuple[int, int]:
    if isinstance(layer, nn.Linear):
        return layer.in_features, layer.out_features
    if isinstance(layer, Conv1D):
        d_in, d_out = layer.weight.shape
        return d_in, d_out
    raise TypeError(f"LoTR adapts nn.Linear and transformers' Conv1D, got {type(layer).__name__}")


def in_out_features(layer: nn.Module) -> tuple[int, int]:
    """``(d_in, d_out)`` of a supported target (or of the base layer of a LoTR layer)."""
    if isinstance(layer, BaseTunerLayer):
        layer = layer.get_base_layer()
    return _in_out_features(layer)


def is_supported_target(layer: nn.Module) -> bool:
    if isinstance(layer, BaseTunerLayer):
        layer = layer.get_base_layer()
    return isinstance(layer, (nn.Linear, Conv1D))
