"""The wire format of the channel between the parent and one child.

Each child gets one end of a ``socketpair``. The child writes short
newline-terminated ASCII messages; the parent never writes, so when the parent
is gone the child reads EOF.
"""

from __future__ import annotations

import json
import socket

READY = b"READY"
HEARTBEAT = b"HB"
# The worker has served max_requests and asks to be replaced.
RECYCLE = b"RECYCLE"
# "ERROR <json string>": why the child could not start (a traceback).
ERROR = b"ERROR"

# Bounds what the parent buffers for one child that writes without newlines.
MAX_MESSAGE = 64 * 1024


def send(channel: socket.socket, message: bytes) -> None:
    """Sends one message from the child; a parent that is gone is not an error here."""
    try:
        channel.sendall(message + b"\n")
    except OSError:
        # The parent-death path notices the missing parent on its own.
        pass


def send_error(channel: socket.socket, text: str) -> None:
    """Sends the reason the child could not start, cut to fit one message."""
    send(channel, ERROR + b" " + json.dumps(text[-MAX_MESSAGE // 2 :]).encode())


def parse_error(message: bytes) -> str | None:
    """The text of an ERROR message, or None if ``message`` is not one."""
    kind, _, payload = message.partition(b" ")
    if kind != ERROR:
        return None
    try:
        text = json.loads(payload)
    except ValueError:
        return None
    return text if isinstance(text, str) else None


class Reader:
    """Splits what the parent receives on one channel into messages."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> list[bytes]:
        """Returns the complete messages in ``data`` plus what was buffered before."""
        *messages, self._pending = (self._pending + data).split(b"\n")
        if len(self._pending) > MAX_MESSAGE:
            # A child that writes without newlines must not grow the parent's memory.
            self._pending = b""
        return messages
