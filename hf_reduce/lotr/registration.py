"""Register LoTR with PEFT through its public ``register_peft_method``: the top of the package, as the
``register_peft_method`` call in each of PEFT's own ``tuners/<method>/__init__.py``.

PEFT has no plugin discovery: a process that loads a LoTR adapter must ``import hf_reduce`` first.
"""

from __future__ import annotations

import threading

from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_PREFIX_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
from peft.utils import register_peft_method

from .config import LoTRConfig
from .model import LoTRModel
from .peft_type import LOTR_PEFT_TYPE_NAME, LOTR_PREFIX, lotr_peft_type

_lock = threading.Lock()


def register_lotr() -> None:
    """Make ``LoTRConfig`` / ``LoTRModel`` known to PEFT. Idempotent; called by ``import hf_reduce``."""
    peft_type = lotr_peft_type()
    with _lock:
        if PEFT_TYPE_TO_TUNER_MAPPING.get(peft_type) is LoTRModel:
            return
        if peft_type in PEFT_TYPE_TO_TUNER_MAPPING:  # hf_reduce re-imported (e.g. importlib.reload)
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
