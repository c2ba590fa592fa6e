"""Register LoTR with PEFT through its public ``register_peft_method``.

PEFT only registers names that already exist in its closed ``PeftType`` enum, so a member is added first.
The member is namespaced (``HF_REDUCE_LOTR``): should a future PEFT ship a ``LOTR`` type of its own, both
coexist and an adapter saved by hf_reduce still loads with hf_reduce's implementation. PEFT has no plugin
discovery: a process that loads a LoTR adapter must ``import hf_reduce`` first.
"""

from __future__ import annotations

import threading

from peft.utils import PeftType

LOTR_PEFT_TYPE_NAME = "HF_REDUCE_LOTR"
LOTR_PREFIX = "lotr_"
_lock = threading.Lock()


def lotr_peft_type() -> PeftType:
    """The ``PeftType`` member of LoTR, added to the enum on first use."""
    member = PeftType._value2member_map_.get(LOTR_PEFT_TYPE_NAME)
    if member is not None:
        return member
    with _lock:
        member = PeftType._value2member_map_.get(LOTR_PEFT_TYPE_NAME)
        if member is None:
            member = str.__new__(PeftType, LOTR_PEFT_TYPE_NAME)
            member._name_ = LOTR_PEFT_TYPE_NAME
            member._value_ = LOTR_PEFT_TYPE_NAME
            member.__objclass__ = PeftType
            PeftType._member_map_[LOTR_PEFT_TYPE_NAME] = member
            PeftType._value2member_map_[LOTR_PEFT_TYPE_NAME] = member
            if (
                LOTR_PEFT_TYPE_NAME not in PeftType._member_names_
            ):  # Python 3.13's _add_member_ skips this list
                PeftType._member_names_.append(LOTR_PEFT_TYPE_NAME)
            type.__setattr__(PeftType, LOTR_PEFT_TYPE_NAME, member)
    return member


def register_lotr() -> None:
    """Make ``LoTRConfig`` / ``LoTRModel`` known to PEFT. Idempotent; called by ``import hf_reduce``."""
    from peft.mapping import PEFT_TYPE_TO_PREFIX_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
    from peft.utils import register_peft_method

    from .config import LoTRConfig
    from .model import LoTRModel

    peft_type = lotr_peft_type()
    with _lock:
        if PEFT_TYPE_TO_TUNER_MAPPING.get(peft_type) is LoTRModel:
            return
        if peft_type in PEFT_TYPE_TO_TUNER_MAPPING:  # hf_reduce re-imported (e.g. importlib.reload)
            from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

            PEFT_TYPE_TO_CONFIG_MAPPING[peft_type] = LoTRConfig
            PEFT_TYPE_TO_TUNER_MAPPING[peft_type] = LoTRModel
            return
        owner = next(
            (t for t, p in PEFT_TYPE_TO_PREFIX_MAPPING.items() if p == LOTR_PREFIX and t != peft_type), None
        )
        if owner is not None:
            raise RuntimeError(
                f"PEFT method {owner} already uses the parameter prefix {LOTR_PREFIX!r}; hf_reduce's LoTR cannot be "
                "registered next to it in this PEFT version"
            )
        register_peft_method(
            name=LOTR_PEFT_TYPE_NAME.lower(), config_cls=LoTRConfig, model_cls=LoTRModel, prefix=LOTR_PREFIX
        )
