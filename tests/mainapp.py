"""Tornado's usual ``main()``, which serves the application itself, and its
variants: what users point the server at where a factory belongs.

Each listens on port 0, so that a run before the server refused them never
collides with anything on the machine.
"""

from __future__ import annotations

import asyncio

from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.netutil import bind_sockets
from tornado.web import Application, RequestHandler


class MainHandler(RequestHandler):
    def get(self) -> None:
        self.write("Hello, world")


def make_app() -> Application:
    return Application([(r"/", MainHandler)])


async def main() -> None:
    # Tornado's "Hello, world", word for word but the port.
    app = make_app()
    app.listen(0)
    await asyncio.Event().wait()


def main_sync() -> None:
    make_app().listen(0)
    IOLoop.current().start()


async def main_bind() -> None:
    server = HTTPServer(make_app())
    server.bind(0, "127.0.0.1")
    server.start()
    await asyncio.Event().wait()


async def main_sockets() -> None:
    server = HTTPServer(make_app())
    server.add_sockets(bind_sockets(0, "127.0.0.1"))
    await asyncio.Event().wait()


def setup() -> None:
    # Builds the application and forgets to return it.
    make_app()
