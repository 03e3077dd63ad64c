"""An app for the settings tests: it reports what its HTTPServer was given, and
defines tornado.options of its own (set after the command line's ``--``)."""

from __future__ import annotations

import os
from typing import Any

from tornado.options import define, options
from tornado.web import Application, RequestHandler

define("greeting", default="hello", type=str)
define("debug", default=True, type=bool)


class ParamsHandler(RequestHandler):
    def get(self) -> None:
        connection: Any = self.request.connection
        params = connection.params
        self.write(
            {
                "pid": os.getpid(),
                "no_keep_alive": params.no_keep_alive,
                "decompress": params.decompress,
                "chunk_size": params.chunk_size,
                "max_header_size": params.max_header_size,
                "header_timeout": params.header_timeout,
                "max_body_size": params.max_body_size,
                "body_timeout": params.body_timeout,
                "max_buffer_size": connection.stream.max_buffer_size,
                "remote_ip": self.request.remote_ip,
                "protocol": self.request.protocol,
                "greeting": options.greeting,
                "debug": options.debug,
            }
        )

    def post(self) -> None:
        self.write({"length": len(self.request.body)})


def make_app() -> Application:
    return Application([(r"/", ParamsHandler)])


def make_debug_app() -> Application:
    """An app that asks Tornado for autoreload, which workers must not get."""
    return Application([(r"/", ParamsHandler)], debug=True)
