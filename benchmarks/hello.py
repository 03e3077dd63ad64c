"""The hello-world app of the benchmarks, started the way each pattern starts it.

    python benchmarks/hello.py --pattern tornado --processes 2 --port 8000

Patterns:

- ``tornado``: Tornado's documented multi-process pattern, ``bind_sockets``
  -> ``fork_processes(N)`` -> ``HTTPServer.add_sockets`` in ``asyncio.run``.
- ``tornado-uvloop``: the same on uvloop (``uvloop.run``), for what the
  loop alone is worth.
- ``tornado-reuseport``: ``fork_processes(N)``, then each child binds its
  own socket with ``reuse_port=True``.
- ``prefork``: ``tornado_prefork.serve(loop="asyncio")``, the default but
  for the loop (``auto`` would pick uvloop where it is installed).
- ``prefork-reuseport``: ``tornado_prefork.serve(reuse_port=True, loop="asyncio")``.
- ``prefork-uvloop``: ``tornado_prefork.serve(loop="uvloop")`` (the ``uvloop`` extra).
"""

from __future__ import annotations

import argparse
import asyncio
import os

import tornado.process
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application, RequestHandler

import tornado_prefork


class HelloHandler(RequestHandler):
    def get(self) -> None:
        self.set_header("X-Worker", str(os.getpid()))
        self.write("Hello, world")


class SlowHandler(RequestHandler):
    async def get(self) -> None:
        await asyncio.sleep(float(self.get_argument("seconds", "2")))
        self.write("slept")


def make_app() -> Application:
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
    # None: each pattern's own default (Tornado's and serve()'s).
    parser.add_argument("--backlog", type=int)
    args = parser.parse_args()
    backlog = {} if args.backlog is None else {"backlog": args.backlog}
    if args.pattern in ("tornado", "tornado-uvloop"):
        sockets = bind_sockets(args.port, "127.0.0.1", **backlog)
        tornado.process.fork_processes(args.processes)
        if args.pattern == "tornado":
            asyncio.run(_serve_forever(sockets))
        else:
            import uvloop

            uvloop.run(_serve_forever(sockets))
    elif args.pattern == "tornado-reuseport":
        tornado.process.fork_processes(args.processes)
        sockets = bind_sockets(args.port, "127.0.0.1", reuse_port=True, **backlog)
        asyncio.run(_serve_forever(sockets))
    elif args.pattern.startswith("prefork"):
        tornado_prefork.serve(
            make_app,
            args.port,
            "127.0.0.1",
            processes=args.processes,
            reuse_port=args.pattern == "prefork-reuseport",
            loop="uvloop" if args.pattern == "prefork-uvloop" else "asyncio",
            **backlog,
        )
    else:
        parser.error(f"unknown pattern {args.pattern}")


if __name__ == "__main__":
    main()
