"""Progress bars: one per long loop, and none for the short ones.

A bar appears only once its loop has run for :data:`DELAY_S` seconds (tqdm's ``delay``), so the many short
passes of a small run (an evaluation per solver, a latency probe) print nothing, while a long training or
activation pass still shows its bar. Bars are removed when their loop ends (``leave=False``) unless the
caller keeps them. As tqdm's ``disable=None``, no bar is drawn when stderr is not a terminal (a log file, a
pipe, a captured subprocess), where its redraws would only leave fragments; ``TQDM_DISABLE=1`` hides them all
(tqdm's own switch).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

#: Seconds a loop runs before its bar is drawn.
DELAY_S = 2.0


def progress(
    iterable: Iterable | None = None,
    desc: str = "",
    *,
    total: int | None = None,
    initial: int = 0,
    disable: bool = False,
    leave: bool = False,
) -> Any:
    """A tqdm bar over ``iterable`` (or a manual one with ``total``) that shows only for long loops."""
    return tqdm(
        iterable,
        desc=desc,
        total=total,
        initial=initial,
        disable=True if disable else None,  # None: off on a non-terminal stderr
        leave=leave,
        delay=DELAY_S,
        dynamic_ncols=True,
    )
