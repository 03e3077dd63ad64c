"""`tornado.options` helpers: the same flags for any app, with one call.

::

    from tornado_prefork import options as prefork_options

    prefork_options.define_options()
    prefork_options.parse_command_line()   # accepts --processes 4 and --processes=4
    tornado_prefork.serve(make_app, **prefork_options.serve_kwargs())
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import tornado.options
from tornado.options import OptionParser

# name -> (default, type, help). Names match serve()'s keywords.
FLAGS: dict[str, tuple[object, type, str]] = {
    "processes": (0, int, "worker processes; 0 means one per usable CPU"),
    "port": (8888, int, "TCP port to listen on"),
    "address": ("127.0.0.1", str, "address to listen on"),
    "unix_socket": (None, str, "listen on this unix socket instead of TCP"),
    "reuse_port": (False, bool, "each worker binds its own socket with SO_REUSEPORT"),
    "backlog": (128, int, "listen backlog"),
    "xheaders": (False, bool, "trust X-Real-Ip/X-Forwarded-For from a proxy"),
    "graceful_timeout": (30.0, float, "seconds a worker gets to finish after SIGTERM"),
    "max_restarts": (100, int, "restarts of crashed workers before giving up"),
    "min_uptime": (1.0, float, "a worker that dies younger than this (seconds) backs off"),
}


def define_options(parser: OptionParser | None = None, group: str = "tornado-prefork") -> None:
    """Defines the flags of `tornado_prefork.serve` on ``parser`` (default: the
    global `tornado.options.options`): ``--processes``, ``--port``,
    ``--address``, ``--unix_socket``, ``--reuse_port``, ``--backlog``,
    ``--xheaders``, ``--graceful_timeout``, ``--max_restarts``,
    ``--min_uptime``. Options already defined there are left as they are.

    .. versionadded:: 0.1
    """
    parser = tornado.options.options if parser is None else parser
    for name, (default, kind, help_text) in FLAGS.items():
        if name not in parser:
            parser.define(name, default=default, type=kind, help=help_text, group=group)


def serve_kwargs(parser: OptionParser | None = None) -> dict[str, Any]:
    """The parsed flags as keyword arguments for `tornado_prefork.serve`.

    .. versionadded:: 0.1
    """
    parser = tornado.options.options if parser is None else parser
    return {name: parser[name] for name in FLAGS if name in parser}


def parse_command_line(
    args: Sequence[str] | None = None,
    parser: OptionParser | None = None,
    final: bool = True,
) -> list[str]:
    """Like `tornado.options.parse_command_line`, but also accepts ``--name value``.

    Tornado's parser only knows ``--name=value``; servers are usually started
    with ``--processes 4``. A value that follows a defined, non-boolean option
    is joined to it; everything else is passed through unchanged. Returns the
    arguments that are not options, as Tornado's does.

    .. versionadded:: 0.1
    """
    parser = tornado.options.options if parser is None else parser
    argv = list(sys.argv if args is None else args)
    return parser.parse_command_line(_join_values(argv, parser), final=final)


def _join_values(argv: list[str], parser: OptionParser) -> list[str]:
    joined = argv[:1]
    rest = iter(argv[1:])
    for arg in rest:
        name = arg.lstrip("-").replace("-", "_")
        takes_value = (
            arg.startswith("-")
            and "=" not in arg
            and name in parser
            and parser._options[parser._normalize_name(name)].type is not bool
        )
        if takes_value:
            value = next(rest, None)
            if value is not None:
                arg = f"{arg}={value}"
        if arg == "--":
            joined.append(arg)
            joined.extend(rest)
            break
        joined.append(arg)
    return joined
