"""In-process pieces, under Tornado's AsyncTestCase and pytest-tornasync's fixtures.

Nothing here forks: ``check_can_fork`` is the gate that fork_processes() and
serve() pass before any fork, so it can be run inside a live event loop.
"""

from __future__ import annotations

import socket

import pytest
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream
from tornado.testing import AsyncTestCase, gen_test

from tornado_prefork._supervisor import channel as _channel
from tornado_prefork._supervisor import children as _children

pytestmark = pytest.mark.tornado_api


class RefusedInsideLoopTest(AsyncTestCase):
    @gen_test
    async def test_running_loop_is_refused(self) -> None:
        with pytest.raises(RuntimeError, match="inside a running event loop"):
            _children.check_can_fork("fork_processes()")

    def test_open_loop_is_refused_when_not_running(self) -> None:
        # AsyncTestCase made this IOLoop and has not closed it yet.
        with pytest.raises(RuntimeError, match="event loop already exists"):
            _children.check_can_fork("fork_processes()")

    @gen_test
    async def test_parent_eof_reaches_a_child_loop(self) -> None:
        # The child's end of the channel reads EOF once the parent's end is
        # gone: what a worker's event loop watches for.
        parent_end, child_end = socket.socketpair()
        stream = IOStream(child_end)
        parent_end.close()
        assert await stream.read_until_close() == b""


async def test_running_loop_is_refused_under_tornasync(io_loop: IOLoop) -> None:
    assert IOLoop.current() is io_loop
    with pytest.raises(RuntimeError, match="inside a running event loop"):
        _children.check_can_fork("serve()")


async def test_messages_cross_a_channel(io_loop: IOLoop) -> None:
    parent_end, child_end = socket.socketpair()
    with parent_end, child_end:
        _channel.send(child_end, _channel.READY)
        _channel.send(child_end, _channel.HEARTBEAT)
        reader = _channel.Reader()
        stream = IOStream(parent_end)
        data = await stream.read_bytes(len(b"READY\nHB\n"))
        assert reader.feed(data[:4]) == []
        assert reader.feed(data[4:]) == [_channel.READY, _channel.HEARTBEAT]
        stream.close()


def test_reader_bounds_a_garbage_stream() -> None:
    reader = _channel.Reader()
    assert reader.feed(b"x" * 100_000) == []
    assert reader.feed(b"xx\nREADY\n") == [b"xx", _channel.READY]


def test_error_messages_carry_a_traceback() -> None:
    parent_end, child_end = socket.socketpair()
    with parent_end, child_end:
        _channel.send_error(child_end, "Traceback ...\nImportError: no module named x\n")
        (message,) = _channel.Reader().feed(parent_end.recv(65536))
        assert _channel.parse_error(message) == "Traceback ...\nImportError: no module named x\n"
        assert _channel.parse_error(_channel.READY) is None
