"""LoTR's member of PEFT's ``PeftType`` enum and its parameter prefix: the bottom of the package, imported by
the config and the tuner model.

PEFT only registers names that already exist in its closed ``PeftType`` enum, so a member is added first.
The member is namespaced (``HF_REDUCE_LOTR``): should a future PEFT ship a ``LOTR`` type of its own, both
coexist and an adapter saved by hf_reduce still loads with hf_reduce's implementation.
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
