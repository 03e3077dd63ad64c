"""A WebSocket whose upgrade finishes after the drain began (the connection
was accepted from the backlog at the drain's start) is told 1001 too, not
cut off when the worker exits."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from tests import procs, serving


def test_a_websocket_upgraded_during_the_drain_gets_1001() -> None:
    with serving.running("tests.wsapp:app", processes=1, graceful_timeout=5) as s:
        base = serving.url(s)
        (worker,) = serving.live_workers(s, 1)
        url = base.replace("http://", "ws://") + "/pid"

        async def test() -> int | None:
            # The worker is stopped: the connection waits in the backlog, and
            # the SIGTERM is handled only once it runs again.
            os.kill(worker, signal.SIGSTOP)
            connecting = asyncio.ensure_future(websocket_connect(HTTPRequest(url)))
            # In the backlog before the stop, whatever the load on this machine.
            deadline = time.monotonic() + 10
            while procs.accept_queue(serving.port_of(base)) < 1:
                assert time.monotonic() < deadline, "the connection never reached the backlog"
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)  # and its upgrade request sent after it
            s.signal(signal.SIGTERM)
            await asyncio.sleep(0.2)
            os.kill(worker, signal.SIGCONT)
            conn = await asyncio.wait_for(connecting, 10)
            deadline = time.monotonic() + 10
            while await conn.read_message() is not None:
                assert time.monotonic() < deadline
            # Closed by the server; closed here too, or Tornado warns of it later.
            conn.close()
            return conn.close_code

        assert asyncio.run(asyncio.wait_for(test(), 20)) == 1001
        assert s.finish(timeout=10) == 0
