"""The event loop a worker runs: asyncio's own, or uvloop's.

The choice is checked in the parent, before any fork, so that a missing
extra is one line at start-up and not a boot failure in every worker; the loop
itself is created in each worker, after the fork.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from tornado_prefork._settings import LOOPS
from tornado_prefork.errors import StartupError

_T = TypeVar("_T")


def resolve(loop: object) -> str:
    """The loop the workers will run for the setting ``loop``: ``"asyncio"`` or ``"uvloop"``.

    ``auto`` is uvloop when it is installed (the ``uvloop`` extra), else
    asyncio. Raises `ValueError` for an unknown name and `.StartupError` when
    uvloop is asked for and missing (or does not import).
    """
    if loop not in LOOPS:
        raise ValueError(f"loop must be one of {', '.join(LOOPS)}, not {loop!r}")
    if loop == "asyncio":
        return "asyncio"
    try:
        # Imported here, in the parent: a broken install fails before any
        # fork, and the workers share the module's pages.
        importlib.import_module("uvloop")
    except ImportError as e:
        if loop == "auto":
            return "asyncio"
        raise StartupError(
            f"loop='uvloop' needs uvloop ({e}): pip install 'tornado-prefork[uvloop]'"
        ) from e
    return "uvloop"


def run(main: Coroutine[Any, Any, _T], loop: str) -> _T:
    """Runs ``main`` to its end on a new event loop of the kind ``loop`` (from `resolve`).

    Like `asyncio.run`: the loop is created now and closed at the end.
    """
    if loop == "uvloop":
        uvloop_run: Callable[[Coroutine[Any, Any, _T]], _T] = importlib.import_module("uvloop").run
        return uvloop_run(main)
    return asyncio.run(main)
