"""The tornado-prefork demo: one Tornado app in N worker processes.

Run it as ``python demo/app.py --processes 4 --port 8888 --address 127.0.0.1``
and try ``curl http://127.0.0.1:8888/`` a few times: the pid changes from one
worker to the next. ``/slow?seconds=N`` answers after N seconds; send SIGTERM
(or press Ctrl-C) meanwhile to watch a graceful stop finish it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from tornado.options import options
from tornado.web import Application, RequestHandler

import tornado_prefork
import tornado_prefork.logs
from tornado_prefork import options as prefork_options


class MainHandler(RequestHandler):
    def get(self) -> None:
        self.write({"pid": os.getpid(), "task_id": tornado_prefork.task_id()})


class SlowHandler(RequestHandler):
    async def get(self) -> None:
        seconds = float(self.get_argument("seconds", "1"))
        await asyncio.sleep(seconds)
        self.write({"pid": os.getpid(), "task_id": tornado_prefork.task_id(), "slept": seconds})


def make_app() -> Application:
    """Called in each worker after the fork."""
    return Application([(r"/", MainHandler), (r"/slow", SlowHandler)])


def main() -> int:
    prefork_options.define_options()
    prefork_options.parse_command_line()
    # Tags each line with master / worker N and the pid.
    tornado_prefork.logs.enable(options.logging.upper())
    try:
        tornado_prefork.serve(make_app, **prefork_options.serve_kwargs())
    except (tornado_prefork.StartupError, tornado_prefork.SupervisorError) as e:
        logging.getLogger("tornado.general").error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
