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

from tornado_prefork import _settings, _tornado
from tornado_prefork._settings import Scope


def define_options(parser: OptionParser | None = None, group: str = "tornado-prefork") -> None:
    """Defines every setting of `tornado_prefork.serve` that comes from outside
    (``--processes``, ``--port``, ``--address``, ``--graceful_timeout``,
    ``--max_body_size``, ``--certfile``, ...: the command line's flags, with
    ``_`` for ``-``, but for its logging and development flags) on ``parser``
    (default: the global `tornado.options.options`), with the same defaults
    as `serve`. Options already defined there are left as they are.
    ``--unix_socket_mode`` is read as octal.

    .. versionadded:: 0.1
    .. versionchanged:: 0.2
       Every setting of the table, the `HTTPServer` and TLS ones included;
       ``--address`` defaults to None (every interface), as for `serve`.
    """
    parser = tornado.options.options if parser is None else parser
    for setting in _settings.of_scope(Scope.SERVE, Scope.HTTP, Scope.TLS):
        if setting.name not in parser:
            # Octal modes are defined as text and read by serve_kwargs().
            kind = str if setting.octal else setting.kind
            default = f"{setting.default:o}" if setting.octal else setting.default
            parser.define(setting.name, default=default, type=kind, help=setting.help, group=group)


def serve_kwargs(parser: OptionParser | None = None) -> dict[str, Any]:
    """The parsed options as keyword arguments for `tornado_prefork.serve`,
    ``ssl_options`` built from ``--certfile``, ``--keyfile``, ``--ca_certs``,
    ``--cert_reqs`` and ``--ciphers``.

    Raises `ValueError` naming the option whose value is out of bounds, and
    `.StartupError` for a certificate that cannot be loaded.

    .. versionadded:: 0.1
    """
    parser = tornado.options.options if parser is None else parser
    values: dict[str, Any] = {}
    for setting in _settings.of_scope(Scope.SERVE, Scope.HTTP, Scope.TLS):
        if setting.name in parser:
            value = parser[setting.name]
            door = f"option --{setting.name}"
            if isinstance(value, str) and setting.octal:
                values[setting.name] = setting.parse(value, door)
            else:
                values[setting.name] = setting.check(value, door)
    tls = {s.name: values.pop(s.name) for s in _settings.of_scope(Scope.TLS) if s.name in values}
    context = _settings.ssl_context(tls, lambda s: f"option --{s.name}")
    if context is not None:
        values["ssl_options"] = context
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
            and _tornado.option_type(parser, name) not in (None, bool)
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
