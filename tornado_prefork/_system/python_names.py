"""Every use of a private name of Python's standard library, in one place.

The standard library offers no public way to do these few things. Each
accessor says what it relies on, and ``tests/test_private_names.py`` checks
each against the running Python, so a Python upgrade means reading this file
and running that test. (``os._exit`` is not here: it is documented, the
underscore only says that it skips the interpreter's clean-up.)
"""

from __future__ import annotations

import atexit
import logging


def run_atexit_handlers() -> None:
    """Runs (and unregisters) every `atexit` handler now, as an interpreter
    that ends normally does, exceptions logged rather than raised.

    Relies on ``atexit._run_exitfuncs``: ``SystemExit`` would run them too but
    unwinds the stack first, into code that is not this process's to run.
    """
    atexit._run_exitfuncs()


def formatter_format(formatter: logging.Formatter) -> str | None:
    """The format string ``formatter`` was made with (None: the default).

    Relies on ``logging.Formatter._fmt``: a formatter keeps its format string
    nowhere public.
    """
    fmt: str | None = formatter._fmt
    return fmt
