"""An application whose WebSockets say which worker holds them, for the tests of their counting."""

from __future__ import annotations

import os

from tornado.web import Application
from tornado.websocket import WebSocketHandler

from tests import webapp


class PidSocket(WebSocketHandler):
    """Sends the worker's pid as its first message; echoes, and closes when told "close"."""

    def open(self) -> None:
        self.write_message(str(os.getpid()))

    def on_message(self, message: str | bytes) -> None:
        if message == "close":
            self.close(1000, "asked to")
        else:
            self.write_message(message)


ROUTES = [(r"/pid", PidSocket), *webapp.ROUTES]

app = Application(ROUTES)
