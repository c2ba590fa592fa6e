"""Drop the import-time notices of optional quantization kernels.

PEFT imports torchao and bitsandbytes whenever they are installed (the ``quant`` extra). On a machine without
their GPU kernels both log, at import, that those kernels could not be loaded, and torch logs a deprecation
for an enum torchao registers. None of it is actionable for a user of hf_reduce; ``HF_REDUCE_VERBOSE=1`` (or a
command's ``--verbose``) keeps them. Filters match these messages only: every other record of those loggers
passes.
"""

from __future__ import annotations

import logging
import os
import sys

#: logger name -> substrings of the messages dropped.
NOTICES = {
    "torchao": ("Failed to load",),
    "torch.utils._pytree": ("is an Enum subclass and is now natively supported",),
    "bitsandbytes.backends.cpu.ops": ("Failed to load CPU gemm_4bit_forward",),
}


class _DropNotices(logging.Filter):
    def __init__(self, fragments: tuple[str, ...]) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        if os.environ.get("HF_REDUCE_VERBOSE", "") not in ("", "0") or "--verbose" in sys.argv:
            return True
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


def install() -> None:
    """Add the filters (once) to the loggers of :data:`NOTICES`; done on import."""
    for name, fragments in NOTICES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNotices) for f in logger.filters):
            logger.addFilter(_DropNotices(fragments))


install()
