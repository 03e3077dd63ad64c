"""Which backend this process has: the in-process one unless serve() installed
the link to the hub in a worker, or turned broadcast off."""

from __future__ import annotations

from tornado_prefork._broadcast.backend import Backend
from tornado_prefork._broadcast.local import LocalBackend
from tornado_prefork.errors import BroadcastError

_current: Backend | None = None
# Why this process has no backend (serve() with broadcast off), if it has none.
_off: str | None = None


def current() -> Backend:
    """This process's backend: the in-process one unless serve() set another;
    `.BroadcastError` when serve() turned broadcast off."""
    global _current
    if _off is not None:
        raise BroadcastError(f"broadcast is off in this server ({_off}): no hub carries messages")
    if _current is None:
        _current = LocalBackend()
    return _current


def existing() -> Backend | None:
    """This process's backend if it has one, never making one: what the
    metrics read their counts from."""
    return _current


def drain() -> None:
    """The worker drains: every subscription of this process ends, so that
    long polls answer now (their clients ask another worker) instead of
    holding the drain until ``graceful_timeout``."""
    if _current is not None:
        _current.fanout.end_all()


def install(backend: Backend | None) -> None:
    """Makes ``backend`` this process's (None: the in-process one, made when used)."""
    global _current, _off
    _current = backend
    _off = None


def turn_off(why: str) -> None:
    """No backend in this process: publishing or subscribing raises, saying ``why``."""
    global _current, _off
    _current = None
    _off = why
