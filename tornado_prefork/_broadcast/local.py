"""The in-process backend: every subscriber is in this process (a test, ``python
app.py``, a single worker), so publishing is numbering and fanning out."""

from __future__ import annotations

from tornado_prefork._broadcast import journal as _journal
from tornado_prefork._broadcast.backend import Backend, new_epoch
from tornado_prefork._broadcast.codec import Kind, decode
from tornado_prefork._broadcast.events import Gap, Message, Position
from tornado_prefork._broadcast.subscription import Fanout


class LocalBackend(Backend):
    """Numbers and keeps history as the hub does, for this process alone."""

    def __init__(self) -> None:
        self.fanout = Fanout(lambda topic: None, lambda topic: None)
        self.journal = _journal.Journal(new_epoch(), self.fanout.has)

    async def publish(self, topic: str, kind: Kind, raw: bytes) -> Position:
        entry, seq = self.journal.append(topic, kind, raw)
        position = Position(entry.epoch, seq)
        self.fanout.stats.published += 1
        self.fanout.deliver(topic, position, kind, raw)
        return position

    async def history(self, topic: str, since: Position) -> tuple[Gap | None, list[Message]]:
        epoch, oldest, last, kept = self.journal.history(topic, since)
        gap, entries = _journal.resume(topic, since, epoch, oldest, last, kept)
        return gap, [
            Message(topic, decode(kind, raw), Position(epoch, seq), raw)
            for seq, kind, raw in entries
        ]
