"""The child's side of the channel: whole messages or none, never a torn one."""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time

import pytest

from tornado_prefork._supervisor import channel as _channel

BIG = b"ERROR " + b"x" * 50_000


def read_all(parent: socket.socket) -> tuple[list[bytes], bytes]:
    """Everything the parent end can read until EOF: whole messages, and the rest."""
    parent.settimeout(5)
    reader = _channel.Reader()
    messages: list[bytes] = []
    received = b""
    while chunk := parent.recv(65536):
        received += chunk
        messages += reader.feed(chunk)
    return messages, received[received.rfind(b"\n") + 1 :]


def test_a_parent_that_does_not_read_never_gets_a_torn_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    parent, child = socket.socketpair()
    child.setblocking(False)  # as in a worker, whose event loop watches it
    with parent, child:
        began = time.monotonic()
        sends = 0
        with caplog.at_level(logging.WARNING, logger="tornado_prefork.channel"):
            while not caplog.records:
                _channel.send(child, BIG, timeout=0.2)
                sends += 1
                assert sends < 1000
        assert time.monotonic() - began < 5
        (record,) = caplog.records
        assert "has not read this worker's channel for 0.2 s; ERROR message dropped" in (
            record.getMessage()
        )
        torn = "channel closed for writing" in record.getMessage()
        if torn:
            # Shut for writing: later messages go nowhere, without an error.
            _channel.send(child, _channel.HEARTBEAT, timeout=0.2)
        else:
            child.shutdown(socket.SHUT_WR)
        messages, rest = read_all(parent)
    assert messages == [BIG] * len(messages) and len(messages) == sends - 1
    # What the parent is left with has no newline: its Reader never returns it.
    assert b"\n" not in rest and (rest != b"") == torn


def test_a_slow_parent_gets_the_whole_message() -> None:
    parent, child = socket.socketpair()
    with parent, child:
        child.setblocking(False)
        # Fill the buffer, then let the parent start reading a little later.
        filler = b"x" * 4096
        while True:
            try:
                child.send(filler)
            except BlockingIOError:
                break
        got: list[bytes] = []
        reader = threading.Thread(target=lambda: got.extend(read_all(parent)[0]))
        timer = threading.Timer(0.2, reader.start)
        timer.start()
        _channel.send(child, b"\n" + BIG, timeout=5)
        child.shutdown(socket.SHUT_WR)
        timer.join()
        reader.join(timeout=10)
    assert got[-1] == BIG


def test_a_parent_that_is_gone_is_not_an_error() -> None:
    parent, child = socket.socketpair()
    parent.close()
    # With SIGPIPE at its default, as in a worker: no signal either.
    previous = signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        with child:
            _channel.send(child, _channel.READY)
            _channel.send(child, BIG)
    finally:
        signal.signal(signal.SIGPIPE, previous)
