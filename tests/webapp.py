"""The application the serve() tests run, imported by scenario scripts and the CLI."""

from __future__ import annotations

import asyncio
import os
import time

from tornado.web import Application, RequestHandler
from tornado.websocket import WebSocketHandler

import tornado_prefork
from tests.scenarios import say


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


class BlockHandler(RequestHandler):
    def get(self) -> None:
        say("block-start", os.getpid())
        time.sleep(float(self.get_argument("seconds", "60")))  # blocks the event loop
        self.write({"pid": os.getpid()})


class EchoSocket(WebSocketHandler):
    def open(self) -> None:
        say("ws-open", os.getpid())

    def on_message(self, message: str | bytes) -> None:
        self.write_message(message)


ROUTES = [
    (r"/", WhoHandler),
    (r"/slow", SlowHandler),
    (r"/block", BlockHandler),
    (r"/ws", EchoSocket),
]


def make_app() -> Application:
    say("factory", os.getpid())
    return Application(ROUTES)


async def slow_factory() -> Application:
    """Takes a while to build, as an app that opens its database pools does."""
    await asyncio.sleep(0.5)
    say("app-built", os.getpid())
    return Application(ROUTES)


async def make_app_async() -> Application:
    await asyncio.sleep(0)
    return make_app()


def broken_factory() -> Application:
    raise RuntimeError("boom at boot")


def wrong_type_factory() -> int:
    return 42


app = Application(ROUTES)


def crashing_factory() -> Application:
    """Builds the app, then the worker dies 50 ms after it started serving."""
    from tornado.ioloop import IOLoop

    say("crashing-start", time.monotonic())
    IOLoop.current().call_later(0.05, os._exit, 1)
    return Application(ROUTES)


def booting_factory() -> Application:
    """Takes 10 s to build, as an app that loads a large model does."""
    say("importing", os.getpid())
    time.sleep(10)
    return make_app()


def factory_with_cleanup() -> Application:
    """Registers clean-up at exit in the worker that builds the app."""
    import atexit

    pid = os.getpid()
    atexit.register(say, "atexit", pid)
    return make_app()


async def loop_reporting_factory() -> Application:
    """Says which event loop the worker runs: ``loop <pid> <module>.<class>``."""
    loop = asyncio.get_running_loop()
    say("loop", os.getpid(), f"{type(loop).__module__}.{type(loop).__name__}")
    return make_app()
