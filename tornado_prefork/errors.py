"""Errors a user can cause when starting a server, and the supervisor giving up."""

from __future__ import annotations


class StartupError(RuntimeError):
    """The server cannot start; the message names what is wrong.

    Raised by `tornado_prefork.serve` before any worker is forked: an address
    that is in use or does not resolve, a unix socket in a directory that is
    missing or not writable, an import string that does not import. The
    original error, if any, is the ``__cause__``.

    .. versionadded:: 0.1
    """


class SupervisorError(RuntimeError):
    """The supervisor gave up: a worker kept failing at once, or none could start.

    Raised in the parent once the processes still running have been stopped.

    .. versionadded:: 0.1
    """


class BroadcastError(RuntimeError):
    """A message could not be published: the hub that carries messages across
    workers cannot be reached (it is restarting, or broadcast is off).

    .. versionadded:: 0.1
    """
