"""LoTRConfig: the PEFT configuration of low tensor rank adaptation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from peft.config import PeftConfig

from .peft_type import LOTR_PEFT_TYPE_NAME, lotr_peft_type

SHARE_BY = ("module", "shape")
INIT_LOTR = ("zero_core", "fan_in", "tucker")


@dataclass
class LoTRConfig(PeftConfig):
    """Configuration of a LoTR adapter (Bershatsky et al., "LoTR: Low Tensor Rank Weight Adaptation", 2024).

    The update of every adapted weight ``W_l`` (``d_out x d_in``) is ``ΔW_l = (lotr_alpha / r) · A · G_l · Bᵀ``
    where ``A`` (``d_out x r``) and ``B`` (``d_in x r``) are shared by all layers of a group and only the core
    ``G_l`` (``r x r``) belongs to layer ``l``. A group is the same projection across the depth of the model
    (``share_by="module"``, the paper's tensor view), all targets of one weight shape (``share_by="shape"``, as
    the authors' code does), or explicit regular expressions (``share_by={"group": "regex", ...}``).

    Trainable parameters: ``Σ_groups r·(d_in + d_out) + n_layers·r²``.

    Args:
        r: the rank of the shared factors and the size of each core.
        lotr_alpha: the update is scaled by ``lotr_alpha / r``.
        target_modules: module names (suffix match), a regex, or ``"all-linear"``; defaults per model type
            follow PEFT's LoRA defaults.
        exclude_modules: module names or a regex never to adapt.
        layers_to_transform, layers_pattern: restrict adaptation to some layer indices (as in LoRA).
        lotr_dropout: dropout on the adapter's input.
        fan_in_fan_out: the target stores its weight as ``(d_in, d_out)`` (GPT-2's ``Conv1D``).
        share_by: ``"module"``, ``"shape"`` or a mapping ``{group name: regex over module names}``.
        init_lotr: how ``A``, ``B`` and the cores start; every choice leaves the output unchanged at step 0.
            ``"fan_in"`` (default): ``A ~ N(0, 1)``, ``B ~ N(0, 1/d_in)``, ``G = 0``. ``Bᵀx`` then has entries of
            order 1 at any width, as LoRA's kaiming-initialised ``A`` does: a first optimizer step moves a layer's
            output by the same amount at any width, SGD at PEFT's test rate (0.5) stays finite, and on MiniLM it
            reached the best accuracy of the three (``scripts/benchmarks/lotr_learning_rates.py``).
            ``"zero_core"``: the paper's unscaled ``A, B ~ N(0, 1)``, ``G = 0``; its first steps grow with
            ``sqrt(d_in)``. ``"tucker"``: ``G = I``, ``A = 0``, ``B`` = the leading mode-``d_in`` singular vectors
            of the group's stacked pretrained weights (a Tucker-2 / HOSVD factor).
        init_weights: ``True`` (default) starts as ``init_lotr`` says; ``False`` starts from random cores (and a
            random ``A`` for ``"tucker"``), so the adapter changes the output from the start. PEFT's own tests
            use ``False`` for every tuner.
        modules_to_save: extra modules trained and saved in full (e.g. a classifier head).
    """

    r: int = field(default=8, metadata={"help": "Rank of the shared factors A, B and size of each core G."})
    lotr_alpha: float = field(
        default=1.0, metadata={"help": "Scaling numerator: ΔW = lotr_alpha / r · A G Bᵀ."}
    )
    target_modules: list[str] | str | None = field(
        default=None, metadata={"help": "Module names or regex to adapt, or 'all-linear'."}
    )
    exclude_modules: list[str] | str | None = field(
        default=None, metadata={"help": "Module names or regex never to adapt."}
    )
    layers_to_transform: list[int] | int | None = field(
        default=None, metadata={"help": "Only adapt layers with these indices."}
    )
    layers_pattern: list[str] | str | None = field(
        default=None,
        metadata={"help": "Name of the layer list for layers_to_transform, e.g. 'layers' or 'h'."},
    )
    lotr_dropout: float = field(default=0.0, metadata={"help": "Dropout on the adapter input."})
    fan_in_fan_out: bool = field(default=False, metadata={"help": "True for weights stored (d_in, d_out)."})
    share_by: Literal["module", "shape"] | dict[str, str] = field(
        default="module", metadata={"help": "How targets share (A, B): 'module', 'shape' or {group: regex}."}
    )
    init_lotr: Literal["zero_core", "fan_in", "tucker"] = field(
        default="fan_in", metadata={"help": "fan_in, zero_core or tucker."}
    )
    init_weights: bool = field(
        default=True,
        metadata={
            "help": "True: the init_lotr start (output unchanged). False: random cores (PEFT's test convention)."
        },
    )
    modules_to_save: list[str] | None = field(
        default=None, metadata={"help": "Modules besides the adapter to train and save, e.g. the classifier."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = lotr_peft_type()
        if isinstance(self.target_modules, list):
            self.target_modules = set(self.target_modules)
        if isinstance(self.exclude_modules, list):
            self.exclude_modules = set(self.exclude_modules)
        if not isinstance(self.r, int) or self.r < 1:
            raise ValueError(f"r must be a positive integer, got {self.r!r}")
        if not 0.0 <= self.lotr_dropout < 1.0:
            raise ValueError(f"lotr_dropout must lie in [0, 1), got {self.lotr_dropout}")
        if isinstance(self.share_by, dict):
            if not self.share_by:
                raise ValueError("share_by as a mapping needs at least one {group name: regex} entry")
            bad = [name for name in self.share_by if not name or "." in name]
            if bad:
                raise ValueError(f"share_by group names must be non-empty and contain no '.', got {bad}")
        elif self.share_by not in SHARE_BY:
            raise ValueError(
                f"share_by must be one of {list(SHARE_BY)} or a {{group: regex}} mapping, got {self.share_by!r}"
            )
        if self.init_lotr not in INIT_LOTR:
            raise ValueError(f"init_lotr must be one of {list(INIT_LOTR)}, got {self.init_lotr!r}")
        if self.layers_pattern and self.layers_to_transform is None:
            raise ValueError("layers_pattern needs layers_to_transform")


__all__ = ["INIT_LOTR", "LOTR_PEFT_TYPE_NAME", "SHARE_BY", "LoTRConfig"]
