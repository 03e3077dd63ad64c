"""The wire format of the channel between the parent and one child.

Each child gets one end of a ``socketpair``. The child writes short
newline-terminated ASCII messages; the parent never writes, so when the parent
is gone the child reads EOF.
"""

from __future__ import annotations

import json
import logging
import select
import socket
import time

READY = b"READY"
HEARTBEAT = b"HB"
# The worker has served max_requests and asks to be replaced.
RECYCLE = b"RECYCLE"
# "ERROR <json string>": why the child could not start (a traceback).
ERROR = b"ERROR"
# "SILENT <name>": the sidecar called name sent this worker nothing, not even
# its tick, for too long: alive but deaf, for the parent to replace.
SILENT = b"SILENT"

# Bounds what the parent buffers for one child that writes without newlines.
MAX_MESSAGE = 64 * 1024
# How long a child waits for room in its channel. The channel's buffer holds
# hundreds of messages, so a full one means a parent that stopped reading.
SEND_TIMEOUT = 1.0

_log = logging.getLogger("tornado_prefork.channel")


def send(channel: socket.socket, message: bytes, timeout: float = SEND_TIMEOUT) -> None:
    """Sends one message from the child, whole or not at all.

    Works whether the channel is blocking or not, waiting up to ``timeout``
    seconds for the parent to make room. Drops the message, without raising, when
    the parent is gone (the parent-death path notices that on its own) or has
    not read for ``timeout`` seconds. In that last case, if part of the
    message was already written, the child shuts its channel for writing, so
    that the parent never reads a torn message: it reads EOF, hears nothing
    more from this child and, once ``timeout`` of serve() passes, replaces it
    as a hung worker. A message dropped for a parent that does not read is
    logged as a warning.
    """
    data = memoryview(message + b"\n")
    deadline = time.monotonic() + timeout
    sent = 0
    while sent < len(data):
        try:
            # MSG_NOSIGNAL: a child runs with default signal dispositions,
            # where writing to a closed channel would kill it with SIGPIPE.
            sent += channel.send(data[sent:], socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            continue
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            return
        left = deadline - time.monotonic()
        if left <= 0 or not _wait_writable(channel, left):
            _give_up(channel, message, torn=sent > 0, timeout=timeout)
            return


def _wait_writable(channel: socket.socket, timeout: float) -> bool:
    poller = select.poll()
    poller.register(channel, select.POLLOUT)
    return bool(poller.poll(timeout * 1000))


def _give_up(channel: socket.socket, message: bytes, torn: bool, timeout: float) -> None:
    kind = message.partition(b" ")[0].decode(errors="replace")
    if torn:
        try:
            channel.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # already gone: the parent reads EOF all the same
    _log.warning(
        "the parent has not read this worker's channel for %.1f s; %s message dropped%s",
        timeout,
        kind,
        ", channel closed for writing" if torn else "",
    )


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
