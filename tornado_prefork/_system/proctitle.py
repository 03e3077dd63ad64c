"""Process titles (``ps``, ``top``) when the optional ``setproctitle`` is installed."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import cast


def _load() -> Callable[[str], None] | None:
    try:
        module = importlib.import_module("setproctitle")
    except ImportError:
        return None
    return cast("Callable[[str], None]", module.setproctitle)


_setproctitle = _load()


def set_title(title: str) -> None:
    """Sets ``tornado-prefork: <title>``; does nothing without ``setproctitle``."""
    if _setproctitle is not None:
        _setproctitle(f"tornado-prefork: {title}")
