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


class FrameError(ValueError):
    """A peer sent bytes that are not a frame of this protocol."""


#: The largest frame a peer may send: 64 MiB, a message's data included.
MAX_FRAME = 64 * 1024 * 1024
#: The largest topic, in UTF-8 bytes (its length travels in 2 bytes).
MAX_TOPIC = 0xFFFF
#: The largest data of one message: what a frame holds besides its topic.
MAX_DATA = MAX_FRAME - MAX_TOPIC - 64


def check_topic(topic: object) -> str:
    """``topic`` if it can be one; `ValueError` saying why not otherwise."""
    if not isinstance(topic, str) or not topic or len(topic.encode()) > MAX_TOPIC:
        raise ValueError(
            f"a broadcast topic must be a non-empty str of at most {MAX_TOPIC} UTF-8 bytes, "
            f"not {topic!r:.80}"
        )
    return topic


class Kind(enum.IntEnum):
    """What the data of a message was when it was published."""

    BYTES = 0
    TEXT = 1
    JSON = 2


def encode(data: object) -> tuple[Kind, bytes]:
    """``data`` as it travels; `TypeError` naming its type if it is neither
    bytes, str nor something `json.dumps` takes."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        kind, raw = Kind.BYTES, bytes(data)
    elif isinstance(data, str):
        kind, raw = Kind.TEXT, data.encode()
    else:
        try:
            text = json.dumps(data, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as e:
            raise TypeError(
                f"broadcast data must be bytes, str or a JSON value, not {type(data).__name__}: {e}"
            ) from None
        kind, raw = Kind.JSON, text.encode()
    if len(raw) > MAX_DATA:
        raise ValueError(f"broadcast data must be at most {MAX_DATA} bytes, not {len(raw)}")
    return kind, raw


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
    #: h: the hub dropped messages of a topic for this worker, up to a seq
    #: (epoch, seq, topic): sent once it reads again, so that its subscribers
    #: hear of a drop even when no later message comes.
    SKIPPED = 10
    #: h: a request could not be carried out (request id, why): the broker
    #: behind the hub cannot be reached.
    FAILED = 11
    #: h: what the subscribers of a topic had seen is gone from the broker
    #: (topic): they are told of a gap at once.
    LOST = 12


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


def skipped(topic: str, epoch: str, seq: int) -> bytes:
    return frame(Frame.SKIPPED, _SEQ.pack(seq), _text(epoch), _text(topic))


def failed(request: int, why: str) -> bytes:
    return frame(Frame.FAILED, _ID.pack(request), why.encode())


def lost(topic: str) -> bytes:
    return frame(Frame.LOST, _text(topic))


def parse(kind: Frame, body: memoryview) -> tuple[Any, ...]:
    """The fields of a frame's body, as the functions above wrote them;
    `FrameError` for a body that is not one."""
    try:
        return _parse(kind, body)
    except (struct.error, IndexError, UnicodeDecodeError, ValueError) as e:
        raise FrameError(f"a {kind.name} frame that cannot be read: {e}") from None


def _parse(kind: Frame, body: memoryview) -> tuple[Any, ...]:
    if kind is Frame.SKIPPED:
        (seq,) = _SEQ.unpack_from(body, 0)
        epoch, at = _read_text(body, 8)
        return _read_text(body, at)[0], epoch, seq
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
    if kind is Frame.FAILED:
        (request,) = _ID.unpack_from(body, 0)
        return request, bytes(body[4:]).decode(errors="replace")
    if kind in (Frame.WANT, Frame.DROP, Frame.LOST):
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
        # Bytes the next frame needs in all: a large frame arriving in many
        # reads is looked at once it is whole, not at each read.
        self._need = _HEAD.size

    def feed(self, data: bytes) -> Iterator[tuple[Frame, memoryview]]:
        """Each whole frame in what has arrived so far, as (type, body);
        `ValueError` for a frame larger than `MAX_FRAME` or of an unknown type."""
        buffer = self._buffer
        buffer += data
        end = len(buffer)
        if end < self._need:
            return iter(())
        at = 0
        frames: list[tuple[Frame, memoryview]] = []
        while end - at >= _HEAD.size:
            size, kind = _HEAD.unpack_from(buffer, at)
            if size > MAX_FRAME or size < 1:
                raise FrameError(f"a frame of {size} bytes")
            if end - at - 4 < size:
                break
            at += 4 + size
        # Only the whole frames are copied, once, out of the buffer.
        view = memoryview(bytes(buffer[:at]))
        del buffer[:at]
        self._need = _HEAD.size
        if len(buffer) >= _HEAD.size:
            self._need = 4 + _HEAD.unpack_from(buffer, 0)[0]
        start = 0
        while start < at:
            size, kind = _HEAD.unpack_from(view, start)
            try:
                frames.append((Frame(kind), view[start + _HEAD.size : start + 4 + size]))
            except ValueError:
                raise FrameError(f"a frame of unknown type {kind}") from None
            start += 4 + size
        return iter(frames)
