"""The application the serve() tests run, imported by scenario scripts and the CLI."""

from __future__ import annotations

import asyncio
import os

from tornado.web import Application, RequestHandler
from tornado.websocket import WebSocketHandler

import tornado_prefork


def say(*parts: object) -> None:
    """One write(2) per line on stdout, so lines of sibling workers never mix."""
    os.write(1, (" ".join(map(str, parts)) + "\n").encode())


class WhoHandler(RequestHandler):
    def get(self) -> None:
        self.write(
            {
                "pid": os.getpid(),
                "ppid": os.getppid(),
                "task_id": tornado_prefork.task_id(),
                "remote_ip": self.request.remote_ip,
                "protocol": self.request.protocol,
            }
        )

    def post(self) -> None:
        self.write({"pid": os.getpid(), "length": len(self.request.body)})


class SlowHandler(RequestHandler):
    async def get(self) -> None:
        seconds = float(self.get_argument("seconds", "1"))
        say("slow-start", os.getpid())
        await asyncio.sleep(seconds)
        self.write({"pid": os.getpid(), "slept": seconds})


class EchoSocket(WebSocketHandler):
    def open(self) -> None:
        say("ws-open", os.getpid())

    def on_message(self, message: str | bytes) -> None:
        self.write_message(message)


def make_app() -> Application:
    say("factory", os.getpid())
    return Application([(r"/", WhoHandler), (r"/slow", SlowHandler), (r"/ws", EchoSocket)])


async def make_app_async() -> Application:
    await asyncio.sleep(0)
    return make_app()


def broken_factory() -> Application:
    raise RuntimeError("boom at boot")


def wrong_type_factory() -> int:
    return 42


app = Application([(r"/", WhoHandler), (r"/slow", SlowHandler), (r"/ws", EchoSocket)])
