"""What carries messages between the subscribers of a process and the
others: the in-process backend (`local`) in one process, the link to the hub
(`link`) in a worker of serve(). Which one a process has is `current`'s."""

from __future__ import annotations

import abc
import secrets

from tornado_prefork._broadcast.codec import Kind
from tornado_prefork._broadcast.events import Gap, Message, Position
from tornado_prefork._broadcast.subscription import Fanout


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
