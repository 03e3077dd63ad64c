"""``tornado-prefork APP [options]``: the command line, parsed into a `serve` call."""

from __future__ import annotations

import argparse
import logging
import os
import re
import ssl
import sys
from collections.abc import Callable, Sequence

from tornado_prefork.errors import StartupError
from tornado_prefork.server import serve
from tornado_prefork.supervisor import SupervisorError

_APP = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_LOG_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


def _app(text: str) -> str:
    if not _APP.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not of the form 'package.module:name'")
    return text


def _number(
    kind: Callable[[str], float], low: float, high: float | None = None
) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {kind.__name__}") from None
        if value < low or (high is not None and value > high):
            bounds = f">= {low}" if high is None else f"from {low} to {high}"
            raise argparse.ArgumentTypeError(f"{text!r} must be {bounds}")
        return value

    parse.__name__ = kind.__name__
    return parse


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``tornado-prefork``."""
    parser = argparse.ArgumentParser(
        prog="tornado-prefork",
        description="Run a Tornado application in pre-forked worker processes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="Signals to the parent: TERM/INT graceful stop, QUIT immediate stop.",
    )
    parser.add_argument(
        "app",
        type=_app,
        metavar="APP",
        help="import string 'package.module:name' of a tornado.web.Application "
        "or of a function that returns one (imported in each worker)",
    )
    parser.add_argument(
        "--processes",
        type=_number(int, 0),
        default=0,
        metavar="N",
        help="worker processes; 0 means one per usable CPU",
    )
    parser.add_argument(
        "--port", type=_number(int, 0, 65535), default=8888, metavar="P", help="TCP port"
    )
    parser.add_argument("--address", default="127.0.0.1", metavar="A", help="address to bind")
    parser.add_argument(
        "--unix-socket", metavar="PATH", help="listen on this unix socket instead of TCP"
    )
    parser.add_argument(
        "--reuse-port",
        action="store_true",
        help="each worker binds its own socket with SO_REUSEPORT",
    )
    parser.add_argument(
        "--graceful-timeout",
        type=_number(float, 0),
        default=30.0,
        metavar="S",
        help="seconds a worker gets to finish its requests after SIGTERM",
    )
    parser.add_argument(
        "--max-restarts",
        type=_number(int, 0),
        default=100,
        metavar="N",
        help="restarts of failed workers before the server gives up",
    )
    parser.add_argument(
        "--min-uptime",
        type=_number(float, 0),
        default=1.0,
        metavar="S",
        help="a worker that dies younger than this is restarted with a growing delay",
    )
    parser.add_argument(
        "--backlog", type=_number(int, 1), default=128, metavar="N", help="listen backlog"
    )
    parser.add_argument("--certfile", metavar="F", help="TLS certificate chain (PEM)")
    parser.add_argument("--keyfile", metavar="F", help="TLS private key (PEM)")
    parser.add_argument(
        "--xheaders",
        action="store_true",
        help="trust X-Real-Ip/X-Forwarded-For and X-Scheme/X-Forwarded-Proto",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error", "critical"],
        metavar="L",
        help="one of debug, info, warning, error, critical",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``tornado-prefork``; returns the parent's exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.certfile is None) != (args.keyfile is None):
        parser.error("--certfile and --keyfile go together")
    logging.basicConfig(level=args.log_level.upper(), format=_LOG_FORMAT)
    # As gunicorn and uvicorn do: APP is found relative to where the command runs.
    sys.path.insert(0, os.getcwd())
    try:
        serve(
            args.app,
            args.port,
            args.address,
            processes=args.processes,
            unix_socket=args.unix_socket,
            reuse_port=args.reuse_port,
            backlog=args.backlog,
            ssl_options=_ssl_context(args.certfile, args.keyfile),
            graceful_timeout=args.graceful_timeout,
            max_restarts=args.max_restarts,
            min_uptime=args.min_uptime,
            xheaders=args.xheaders,
        )
    except (StartupError, SupervisorError) as e:
        print(f"tornado-prefork: error: {e}", file=sys.stderr)
        return 1
    return 0


def _ssl_context(certfile: str | None, keyfile: str | None) -> ssl.SSLContext | None:
    if certfile is None or keyfile is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as e:
        raise StartupError(f"cannot load --certfile {certfile} / --keyfile {keyfile}: {e}") from e
    return context
