"""What carries messages between the subscribers of a process and the
others: the in-process backend (`local`) in one process, the link to the hub
(`link`) in a worker of serve(). Each process has one, `current()`."""

from __future__ import annotations

import abc
import secrets

from tornado_prefork._broadcast.codec import Kind
from tornado_prefork._broadcast.events import Gap, Message, Position
from tornado_prefork._broadcast.subscription import Fanout
from tornado_prefork.errors import BroadcastError


def new_epoch() -> str:
    """A name for one life of a journal: a hub's, or a process's own."""
    return secrets.token_hex(4)


class Backend(abc.ABC):
    """Numbers what this process publishes and brings it every message of
    the topics its subscribers want (`fanout`)."""

    fanout: Fanout

    @abc.abstractmethod
    async def publish(self, topic: str, kind: Kind, raw: bytes) -> Position:
        """Publishes a message; its position once numbered."""

    @abc.abstractmethod
    async def history(self, topic: str, since: Position) -> tuple[Gap | None, list[Message]]:
        """What followed ``since`` in ``topic``: a gap first if the history
        kept does not reach back to it, then the messages kept after it."""


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
        # Imported here: the in-process backend is itself a `Backend`.
        from tornado_prefork._broadcast.local import LocalBackend

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
