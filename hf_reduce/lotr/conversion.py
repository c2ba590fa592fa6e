"""Exact conversion of a LoTR adapter into a rank-r LoRA adapter, for serving stacks that only know LoRA.

``ΔW = (lotr_alpha / r) · A G Bᵀ`` is already a rank-r product: with ``lora_A = Bᵀ`` and ``lora_B = A G`` and
``lora_alpha = lotr_alpha`` LoRA computes the same update, so no SVD (and no approximation) is needed, unlike
PEFT's generic ``convert_to_lora`` (which also works on LoTR models, through ``get_delta_weight``).
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import torch
from peft import LoraConfig
from peft.utils import SAFETENSORS_WEIGHTS_NAME
from peft.utils.other import ModulesToSaveWrapper
from safetensors.torch import save_file
from torch import nn

from ..hub import CardInfo, render_model_card
from ..utils import atomic_directory
from .layer import LoTRLayer

_PEFT_PREFIX = "base_model.model."


def lotr_to_lora(
    model: nn.Module, adapter_name: str = "default"
) -> tuple[LoraConfig, dict[str, torch.Tensor]]:
    """``(LoraConfig, state_dict)`` of the LoRA adapter that computes exactly what LoTR ``adapter_name`` does.

    ``model`` is the ``PeftModel`` returned by ``get_peft_model`` / ``PeftModel.from_pretrained``.
    """
    config = model.peft_config.get(adapter_name) if hasattr(model, "peft_config") else None
    if config is None:
        raise ValueError(f"no adapter {adapter_name!r}; adapters: {list(getattr(model, 'peft_config', {}))}")
    state_dict: dict[str, torch.Tensor] = {}
    targets, conv1d = set(), False
    for name, module in model.named_modules():
        if not isinstance(module, LoTRLayer) or adapter_name not in module.lotr_G:
            continue
        A, G, B = (t.detach() for t in module.factors(adapter_name))
        state_dict[f"{name}.lora_A.weight"] = B.T.contiguous()
        state_dict[f"{name}.lora_B.weight"] = (A @ G).contiguous()
        targets.add(name.removeprefix(_PEFT_PREFIX))
        conv1d |= module.fan_in_fan_out
    if not targets:
        raise ValueError(f"adapter {adapter_name!r} has no LoTR layers to convert")
    lora_config = LoraConfig(
        r=config.r,
        lora_alpha=config.lotr_alpha,
        lora_dropout=config.lotr_dropout,
        target_modules=targets,
        fan_in_fan_out=conv1d,
        modules_to_save=list(config.modules_to_save) if config.modules_to_save else None,
        base_model_name_or_path=config.base_model_name_or_path,
        task_type=config.task_type,
    )
    if config.modules_to_save:
        for name, module in model.named_modules():
            if isinstance(module, ModulesToSaveWrapper) and adapter_name in module.modules_to_save:
                for param_name, param in module.modules_to_save[adapter_name].named_parameters():
                    state_dict[f"{name}.{param_name}"] = param.detach()
    return lora_config, state_dict


def save_as_lora(path: str | os.PathLike, model: nn.Module, adapter_name: str = "default") -> Path:
    """Write the exact LoRA equivalent of a LoTR adapter as a PEFT LoRA checkpoint folder.

    Load it anywhere with ``PeftModel.from_pretrained(base_model, path)``, no hf_reduce needed; the folder's
    README.md is a LoRA model card (``library_name: peft``).
    """
    lora_config, state_dict = lotr_to_lora(model, adapter_name)
    # The card of a plain LoRA adapter (library: peft), for the folder as it stands on its own.
    lora_view = SimpleNamespace(
        peft_config={"default": lora_config}, active_adapter="default", config=getattr(model, "config", None)
    )
    task = "text-classification" if str(lora_config.task_type) in ("SEQ_CLS", "TaskType.SEQ_CLS") else "other"
    card = render_model_card(lora_view, CardInfo(task=task, base_model=lora_config.base_model_name_or_path))
    path = Path(path)
    with atomic_directory(path) as staging:
        save_file(state_dict, str(staging / SAFETENSORS_WEIGHTS_NAME))
        lora_config.save_pretrained(str(staging))
        card.save(staging / "README.md")
    return path
