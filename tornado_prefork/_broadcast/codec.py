"""How a message travels: its data as bytes with a kind, and the frames
between a worker and the hub.

Data is encoded once, by the publisher (`encode`), carried as bytes through
the hub, and decoded once per worker (`decode`), whatever the number of
subscribers there.

A frame is its length (4 bytes, big-endian, not counting itself), its type
(1 byte) and a body whose layout the type fixes (`FRAMES`). Strings (topics,
epochs) are UTF-8 with a 2-byte length. `Reader` cuts frames out of a byte
stream however it arrives.
"""

from __future__ import annotations

import enum
import json
import struct
from collections.abc import Iterator
from typing import Any

#: The largest frame a peer may send: 64 MiB, a message's data included.
MAX_FRAME = 64 * 1024 * 1024


class Kind(enum.IntEnum):
    """What the data of a message was when it was published."""

    BYTES = 0
    TEXT = 1
    JSON = 2


def encode(data: object) -> tuple[Kind, bytes]:
    """``data`` as it travels; `TypeError` naming its type if it is neither
    bytes, str nor something `json.dumps` takes."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return Kind.BYTES, bytes(data)
    if isinstance(data, str):
        return Kind.TEXT, data.encode()
    try:
        text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"broadcast data must be bytes, str or a JSON value, not {type(data).__name__}: {e}"
        ) from None
    return Kind.JSON, text.encode()


def decode(kind: Kind, raw: bytes) -> Any:
    """The data as it was published."""
    if kind is Kind.BYTES:
        return raw
    if kind is Kind.TEXT:
        return raw.decode()
    return json.loads(raw)


class Frame(enum.IntEnum):
    """The type of a frame. w: from a worker; h: from the hub."""

    #: h: the hub's epoch and pid, first on every connection.
    HELLO = 1
    #: w: publish (request id, topic, kind, data).
    PUBLISH = 2
    #: h: a publish was numbered (request id, seq, the topic's epoch).
    ACK = 3
    #: h: a message of a topic this worker wants (seq, epoch, topic, kind, data).
    MESSAGE = 4
    #: w: a first subscriber of a topic in this worker.
    WANT = 5
    #: w: the last subscriber of a topic in this worker is gone.
    DROP = 6
    #: w: what followed a position (request id, seq, epoch, topic).
    REPLAY = 7
    #: h: the answer to a REPLAY (request id, oldest and last seq kept, epoch, then messages).
    HISTORY = 8
    #: h: every second, so that a worker notices a dead or deaf hub.
    TICK = 9


_HEAD = struct.Struct("!IB")
_U16 = struct.Struct("!H")
_ID = struct.Struct("!I")
_SEQ = struct.Struct("!Q")
_ID_SEQ = struct.Struct("!IQ")
_ID_TWO_SEQ = struct.Struct("!IQQ")
_ENTRY = struct.Struct("!QBI")


def _text(value: str) -> bytes:
    raw = value.encode()
    if len(raw) > 0xFFFF:
        raise ValueError(f"a broadcast topic must be at most 65535 bytes, not {len(raw)}")
    return _U16.pack(len(raw)) + raw


def _read_text(body: memoryview, at: int) -> tuple[str, int]:
    (size,) = _U16.unpack_from(body, at)
    at += 2
    return bytes(body[at : at + size]).decode(), at + size


def frame(kind: Frame, *parts: bytes) -> bytes:
    """A frame of type ``kind`` whose body is ``parts``."""
    size = 1 + sum(len(part) for part in parts)
    return b"".join((_HEAD.pack(size, kind), *parts))


def hello(epoch: str, pid: int) -> bytes:
    return frame(Frame.HELLO, _ID.pack(pid), _text(epoch))


def publish(request: int, topic: str, kind: Kind, raw: bytes) -> bytes:
    return frame(Frame.PUBLISH, _ID.pack(request), _text(topic), bytes((kind,)), raw)


def ack(request: int, seq: int, epoch: str) -> bytes:
    return frame(Frame.ACK, _ID_SEQ.pack(request, seq), _text(epoch))


def message(seq: int, epoch: str, topic: str, kind: Kind, raw: bytes) -> bytes:
    return frame(Frame.MESSAGE, _SEQ.pack(seq), _text(epoch), _text(topic), bytes((kind,)), raw)


def want(topic: str) -> bytes:
    return frame(Frame.WANT, _text(topic))


def drop(topic: str) -> bytes:
    return frame(Frame.DROP, _text(topic))


def replay(request: int, topic: str, epoch: str, seq: int) -> bytes:
    return frame(Frame.REPLAY, _ID_SEQ.pack(request, seq), _text(epoch), _text(topic))


def history(
    request: int, epoch: str, oldest: int, last: int, entries: list[tuple[int, Kind, bytes]]
) -> bytes:
    parts = [_ID_TWO_SEQ.pack(request, oldest, last), _text(epoch)]
    for seq, kind, raw in entries:
        parts += [_ENTRY.pack(seq, kind, len(raw)), raw]
    return frame(Frame.HISTORY, *parts)


TICK = frame(Frame.TICK)


def parse(kind: Frame, body: memoryview) -> tuple[Any, ...]:
    """The fields of a frame's body, as the functions above wrote them."""
    if kind is Frame.MESSAGE:
        (seq,) = _SEQ.unpack_from(body, 0)
        epoch, at = _read_text(body, 8)
        topic, at = _read_text(body, at)
        return seq, epoch, topic, Kind(body[at]), bytes(body[at + 1 :])
    if kind is Frame.PUBLISH:
        (request,) = _ID.unpack_from(body, 0)
        topic, at = _read_text(body, 4)
        return request, topic, Kind(body[at]), bytes(body[at + 1 :])
    if kind is Frame.ACK:
        request, seq = _ID_SEQ.unpack_from(body, 0)
        return request, seq, _read_text(body, 12)[0]
    if kind in (Frame.WANT, Frame.DROP):
        return (_read_text(body, 0)[0],)
    if kind is Frame.HELLO:
        (pid,) = _ID.unpack_from(body, 0)
        return _read_text(body, 4)[0], pid
    if kind is Frame.REPLAY:
        request, seq = _ID_SEQ.unpack_from(body, 0)
        epoch, at = _read_text(body, 12)
        return request, _read_text(body, at)[0], epoch, seq
    if kind is Frame.HISTORY:
        request, oldest, last = _ID_TWO_SEQ.unpack_from(body, 0)
        epoch, at = _read_text(body, 20)
        entries = []
        while at < len(body):
            seq, data_kind, size = _ENTRY.unpack_from(body, at)
            at += _ENTRY.size
            entries.append((seq, Kind(data_kind), bytes(body[at : at + size])))
            at += size
        return request, epoch, oldest, last, entries
    return ()


class Reader:
    """Cuts frames out of bytes as they arrive."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[tuple[Frame, memoryview]]:
        """Each whole frame in what has arrived so far, as (type, body);
        `ValueError` for a frame larger than `MAX_FRAME` or of an unknown type."""
        buffer = self._buffer
        buffer += data
        at = 0
        end = len(buffer)
        frames: list[tuple[Frame, memoryview]] = []
        view = memoryview(bytes(buffer))
        while end - at >= _HEAD.size:
            size, kind = _HEAD.unpack_from(view, at)
            if size > MAX_FRAME or size < 1:
                raise ValueError(f"a broadcast frame of {size} bytes")
            if end - at - 4 < size:
                break
            frames.append((Frame(kind), view[at + _HEAD.size : at + 4 + size]))
            at += 4 + size
        del buffer[:at]
        return iter(frames)
