"""The memory benchmark's app: about a million small objects built at import.

As a real application holds routes, templates, caches and lookup tables. The
table is made of lists, which the garbage collector tracks (a dict or tuple of
plain values it may stop tracking), and right after a worker has answered its
first request and every 500th after it, it runs a full collection, as a
long-running process eventually does: however the load is split, every
worker has collected at least once, and no answer waits for a collection.

Run by ``benchmarks/memory.py``, either as ``heavy:make_app`` / ``heavy:app``
through ``tornado-prefork``, or as a launcher (the ``tornado`` patterns)::

    python benchmarks/heavy.py --pattern tornado --processes 4 --port 8000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import socket

import tornado.process
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application, RequestHandler

import tornado_prefork

# 500,000 rows of a list, an int and a str: 1.5 million objects.
TABLE = [[i, f"item-{i:07d}"] for i in range(500_000)]

COLLECT_EVERY = 500
_answered = 0


class HelloHandler(RequestHandler):
    def get(self) -> None:
        self.set_header("X-Worker", str(os.getpid()))
        self.write(f"Hello, world: {len(TABLE)} rows")

    def on_finish(self) -> None:
        global _answered
        _answered += 1
        if _answered % COLLECT_EVERY == 1:
            gc.collect()


def make_app() -> Application:
    return Application([(r"/", HelloHandler)])


async def _serve_forever(sockets: list[socket.socket]) -> None:
    server = HTTPServer(make_app())
    server.add_sockets(sockets)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pattern", required=True, choices=["tornado", "tornado-freeze", "serve"])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if args.pattern.startswith("tornado"):
        # Tornado's documented pattern: import, bind, fork, serve.
        sockets = bind_sockets(args.port, "127.0.0.1")
        if args.pattern == "tornado-freeze":
            gc.freeze()
        tornado.process.fork_processes(args.processes)
        asyncio.run(_serve_forever(sockets))
    else:
        tornado_prefork.serve(make_app(), args.port, "127.0.0.1", processes=args.processes)


if __name__ == "__main__":
    main()
