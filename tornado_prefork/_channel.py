"""The wire format of the channel between the parent and one child.

Each child gets one end of a ``socketpair``. The child writes short
newline-terminated ASCII messages; the parent never writes, so when the parent
is gone the child reads EOF.
"""

from __future__ import annotations

import socket

READY = b"READY"
HEARTBEAT = b"HB"


def send(channel: socket.socket, message: bytes) -> None:
    """Sends one message from the child; a parent that is gone is not an error here."""
    try:
        channel.sendall(message + b"\n")
    except OSError:
        # The parent-death path notices the missing parent on its own.
        pass


class Reader:
    """Splits what the parent receives on one channel into messages."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> list[bytes]:
        """Returns the complete messages in ``data`` plus what was buffered before."""
        *messages, self._pending = (self._pending + data).split(b"\n")
        # A child that writes garbage without newlines must not grow the parent's memory.
        self._pending = self._pending[-64:]
        return messages
