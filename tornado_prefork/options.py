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

from tornado_prefork._knobs import KNOBS


def define_options(parser: OptionParser | None = None, group: str = "tornado-prefork") -> None:
    """Defines every setting of `tornado_prefork.serve` that comes from outside
    (``--processes``, ``--port``, ``--address``, ``--graceful_timeout``, ...,
    the same as the command line's, with ``_`` for ``-``) on ``parser``
    (default: the global `tornado.options.options`). Options already defined
    there are left as they are. ``--unix_socket_mode`` is read as octal.

    .. versionadded:: 0.1
    """
    parser = tornado.options.options if parser is None else parser
    for knob in KNOBS:
        if knob.name not in parser:
            # Text for the values read through a parse function (octal modes).
            kind = str if knob.parse is not None else knob.kind
            default = f"{knob.default:o}" if knob.parse is not None else knob.default
            parser.define(knob.name, default=default, type=kind, help=knob.help, group=group)


def serve_kwargs(parser: OptionParser | None = None) -> dict[str, Any]:
    """The parsed flags as keyword arguments for `tornado_prefork.serve`.

    .. versionadded:: 0.1
    """
    parser = tornado.options.options if parser is None else parser
    values = {}
    for knob in KNOBS:
        if knob.name in parser:
            value = parser[knob.name]
            values[knob.name] = (
                knob.parse(value) if knob.parse and isinstance(value, str) else value
            )
    return values


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
