"""The hello-world app of the benchmarks, started the way each pattern starts it.

    python benchmarks/hello.py --pattern tornado --processes 2 --port 8000

Patterns:

- ``tornado``: Tornado's documented multi-process pattern, ``bind_sockets``
  -> ``fork_processes(N)`` -> ``HTTPServer.add_sockets`` in ``asyncio.run``.
- ``tornado-reuseport``: ``fork_processes(N)``, then each child binds its
  own socket with ``reuse_port=True``.
- ``prefork``: ``tornado_prefork.serve()`` in its default mode.
- ``prefork-reuseport``: ``tornado_prefork.serve(reuse_port=True)``.

With ``BENCH_STATS`` set to a directory, each worker writes how many requests
it has answered to ``<dir>/<pid>`` four times a second.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

import tornado.process
from tornado.httpserver import HTTPServer
from tornado.ioloop import PeriodicCallback
from tornado.netutil import bind_sockets
from tornado.web import Application, RequestHandler

import tornado_prefork

_answered = 0


class HelloHandler(RequestHandler):
    def get(self) -> None:
        global _answered
        _answered += 1
        self.set_header("X-Worker", str(os.getpid()))
        self.write("Hello, world")


class SlowHandler(RequestHandler):
    async def get(self) -> None:
        await asyncio.sleep(float(self.get_argument("seconds", "2")))
        self.write("slept")


def make_app() -> Application:
    stats = os.environ.get("BENCH_STATS")
    if stats:
        path = Path(stats) / str(os.getpid())
        PeriodicCallback(lambda: path.write_text(str(_answered)), 250).start()
    return Application([(r"/", HelloHandler), (r"/slow", SlowHandler)])


async def _serve_forever(sockets: list) -> None:  # type: ignore[type-arg]
    server = HTTPServer(make_app())
    server.add_sockets(sockets)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pattern", required=True)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if args.pattern == "tornado":
        sockets = bind_sockets(args.port, "127.0.0.1")
        tornado.process.fork_processes(args.processes)
        asyncio.run(_serve_forever(sockets))
    elif args.pattern == "tornado-reuseport":
        tornado.process.fork_processes(args.processes)
        asyncio.run(_serve_forever(bind_sockets(args.port, "127.0.0.1", reuse_port=True)))
    elif args.pattern.startswith("prefork"):
        tornado_prefork.serve(
            make_app,
            args.port,
            "127.0.0.1",
            processes=args.processes,
            reuse_port=args.pattern == "prefork-reuseport",
        )
    else:
        parser.error(f"unknown pattern {args.pattern}")


if __name__ == "__main__":
    main()
