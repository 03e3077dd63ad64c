"""``tornado-prefork APP [options]``: the command line, parsed into a `serve` call."""

from __future__ import annotations

import argparse
import os
import re
import ssl
import sys
from collections.abc import Callable, Sequence

from tornado_prefork import logs
from tornado_prefork._knobs import KNOBS
from tornado_prefork.errors import StartupError, SupervisorError
from tornado_prefork.server import serve

_APP = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


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
        epilog="Signals to the parent: TERM/INT graceful stop, QUIT immediate stop, "
        "HUP rolling reload, TTIN one worker more, TTOU one worker fewer.",
    )
    parser.add_argument(
        "app",
        type=_app,
        metavar="APP",
        help="import string 'package.module:name' of a tornado.web.Application "
        "or of a function that returns one (see --preload)",
    )
    for knob in KNOBS:
        if knob.kind is bool:
            # A setting whose default is None (decided by serve()) has a --no- form.
            action = "store_true" if knob.default is False else argparse.BooleanOptionalAction
            parser.add_argument(knob.flag, action=action, default=knob.default, help=knob.help)
            continue
        if knob.parse is not None:
            kind: Callable[[str], object] = _checked(knob.parse, "octal mode")
            default: object = f"{knob.default:o}"
        elif knob.kind is str:
            kind, default = str, knob.default
        else:
            kind, default = _number(knob.kind, knob.low or 0, knob.high), knob.default
        parser.add_argument(
            knob.flag,
            type=kind,
            default=default,
            metavar=knob.metavar,
            help=knob.help,
            choices=knob.choices,
        )
    parser.add_argument("--certfile", metavar="F", help="TLS certificate chain (PEM)")
    parser.add_argument("--keyfile", metavar="F", help="TLS private key (PEM)")
    parser.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="log every request",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error", "critical"],
        metavar="L",
        help="one of debug, info, warning, error, critical",
    )
    return parser


def _checked(parse: Callable[[str], object], what: str) -> Callable[[str], object]:
    def check(text: str) -> object:
        try:
            return parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {what}") from None

    check.__name__ = what
    return check


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``tornado-prefork``; returns the parent's exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.certfile is None) != (args.keyfile is None):
        parser.error("--certfile and --keyfile go together")
    logs.enable(args.log_level.upper(), access_log=args.access_log)
    # As gunicorn and uvicorn do: APP is found relative to where the command runs.
    sys.path.insert(0, os.getcwd())
    settings = {knob.name: getattr(args, knob.name) for knob in KNOBS}
    try:
        serve(args.app, ssl_options=_ssl_context(args.certfile, args.keyfile), **settings)
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
