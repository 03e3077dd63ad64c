"""The tornado-prefork demo: one Tornado app in N worker processes.

Run it as ``python demo/app.py --processes 4 --port 8888 --address 127.0.0.1``
and try ``curl http://127.0.0.1:8888/`` a few times: the pid changes from one
worker to the next. ``/slow?seconds=N`` answers after N seconds.
"""

from __future__ import annotations

import asyncio
import os

from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.options import options
from tornado.web import Application, RequestHandler

import tornado_prefork
from tornado_prefork import options as prefork_options


class MainHandler(RequestHandler):
    def get(self) -> None:
        self.write({"pid": os.getpid(), "task_id": tornado_prefork.task_id()})


class SlowHandler(RequestHandler):
    async def get(self) -> None:
        seconds = float(self.get_argument("seconds", "1"))
        await asyncio.sleep(seconds)
        self.write({"pid": os.getpid(), "slept": seconds})


def make_app() -> Application:
    return Application([(r"/", MainHandler), (r"/slow", SlowHandler)])


async def run_worker(sockets: list) -> None:  # type: ignore[type-arg]
    server = HTTPServer(make_app())
    server.add_sockets(sockets)
    await asyncio.Event().wait()


def main() -> None:
    prefork_options.define_options()
    prefork_options.parse_command_line()
    sockets = bind_sockets(options.port, options.address)
    tornado_prefork.fork_processes(
        options.processes,
        options.max_restarts,
        graceful_timeout=options.graceful_timeout,
        min_uptime=options.min_uptime,
    )
    asyncio.run(run_worker(sockets))


if __name__ == "__main__":
    main()
