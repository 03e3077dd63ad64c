"""Scenario programs: real files, each run in a fresh interpreter as
``python -m tests.scenarios.NAME ARGS...`` (`tests.procs.scenario`), and what
they share: `say`, logging one record per write, and reading an app and its
settings from the command line."""

from __future__ import annotations

import ast
import importlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

FORMAT = "%(process)d %(levelname)s %(message)s"


def say(*parts: object) -> None:
    """One write(2) per line on stdout, so lines of sibling processes never mix."""
    os.write(1, (" ".join(map(str, parts)) + "\n").encode())


class _OneWrite(logging.Handler):
    """One write(2) per record: lines of the parent and its workers never mix."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd

    def emit(self, record: logging.LogRecord) -> None:
        os.write(self.fd, (self.format(record) + "\n").encode())


def log_to(fd: int) -> None:
    """Logs at INFO to ``fd`` (1: with the scenario's own lines, 2: apart)."""
    handler = _OneWrite(fd)
    handler.setFormatter(logging.Formatter(FORMAT))
    logging.basicConfig(level=logging.INFO, handlers=[handler])


def child_count() -> int:
    """How many children this process has now (Linux)."""
    return len(Path(f"/proc/self/task/{os.getpid()}/children").read_text().split())


def settings(pairs: list[str]) -> dict[str, Any]:
    """``name=value`` arguments, each value a Python literal (``repr`` of the value)."""
    found = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        found[name] = ast.literal_eval(value)
    return found


def app(spec: str, as_string: bool) -> Any:
    """The application argument: the import string itself (``as_string``), the
    object a ``module:name`` spec names (imported here, in the parent), or a literal."""
    if as_string:
        return spec
    if ":" not in spec:
        return ast.literal_eval(spec)
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def hide(modules: list[str]) -> None:
    """Makes ``import name`` raise ImportError, as when the module is not installed."""
    for name in modules:
        sys.modules[name] = None  # type: ignore[assignment]
