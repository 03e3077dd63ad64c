"""`tornado.options` helpers: the same flags for any app, with one call.

::

    from tornado_prefork import options as prefork_options

    prefork_options.define_options()
    prefork_options.parse_command_line()   # accepts --processes 4 and --processes=4
    tornado_prefork.serve(make_app, **prefork_options.serve_kwargs())

A bad value (``--port 70000``, ``--processes four``) stops the program in
`parse_command_line` with one line naming it and exit status 2, as
``tornado-prefork`` does, before anything is forked.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import tornado.options
from tornado.options import OptionParser

from tornado_prefork import _settings
from tornado_prefork._settings import Scope
from tornado_prefork._system import tornado_names as _tornado_names


def define_options(parser: OptionParser | None = None, group: str = "tornado-prefork") -> None:
    """Defines every setting of `tornado_prefork.serve` that comes from outside
    (``--processes``, ``--port``, ``--address``, ``--graceful_timeout``,
    ``--max_body_size``, ``--certfile``, ...: the command line's flags, with
    ``_`` for ``-``, but for its logging and development flags) on ``parser``
    (default: the global `tornado.options.options`), with the same defaults
    as `serve`. Options already defined there are left as they are.
    ``--unix_socket_mode`` is read as octal.

    .. versionadded:: 0.1
    """
    parser = tornado.options.options if parser is None else parser
    for setting in _settings.of_scope(Scope.SERVE, Scope.HTTP, Scope.TLS):
        if setting.name not in parser:
            # Octal modes are defined as text and read by serve_kwargs().
            kind = str if setting.octal else setting.kind
            default = f"{setting.default:o}" if setting.octal else setting.default
            parser.define(
                setting.name, default=default, type=kind, help=setting.meaning(), group=group
            )


def serve_kwargs(parser: OptionParser | None = None) -> dict[str, Any]:
    """The parsed options as keyword arguments for `tornado_prefork.serve`,
    ``ssl_options`` built from ``--certfile``, ``--keyfile``, ``--ca_certs``,
    ``--cert_reqs`` and ``--ciphers``.

    Raises `ValueError` naming the option whose value is out of bounds (one
    set in code or by a config file: `parse_command_line` checks those of
    the command line), and `.StartupError` for a certificate that cannot be
    loaded.

    .. versionadded:: 0.1
    """
    parser = tornado.options.options if parser is None else parser
    values: dict[str, Any] = {}
    for setting in _settings.of_scope(Scope.SERVE, Scope.HTTP, Scope.TLS):
        if setting.name in parser:
            value = parser[setting.name]
            if isinstance(value, str) and setting.octal:
                values[setting.name] = setting.parse(value, _door(setting))
            else:
                values[setting.name] = setting.check(value, _door(setting))
    tls = {s.name: values.pop(s.name) for s in _settings.of_scope(Scope.TLS) if s.name in values}
    context = _settings.ssl_context(tls, _door)
    if context is not None:
        values["ssl_options"] = context
    return values


def parse_command_line(
    args: Sequence[str] | None = None,
    parser: OptionParser | None = None,
    final: bool = True,
    *,
    exit_on_error: bool = True,
) -> list[str]:
    """Like `tornado.options.parse_command_line`, but also accepts ``--name
    value``, and reads the settings as ``tornado-prefork`` reads its flags.

    Tornado's parser only knows ``--name=value``; servers are usually started
    with ``--processes 4``. A value that follows a defined, non-boolean option
    is joined to it; everything else is passed through unchanged. The values
    of the options `define_options` defined are read and checked by the table
    of settings, as the command line's (``None`` is None for those that take
    it: ``--address None``, every interface); with ``final`` the TLS options
    must go together. Returns the arguments that are not options, as
    Tornado's does.

    A bad value, an unknown option or one without its value prints one line
    naming it, ``app.py: error: option --port must be from 0 to 65535, not
    '70000' (see app.py --help)``, and exits with status 2, as the command
    line does, before anything starts. With ``exit_on_error=False`` it raises
    `ValueError` for a value and `tornado.options.Error` for an option
    instead (Tornado's own parser prints its whole help first; this one does
    not).

    .. versionadded:: 0.1
    """
    parser = tornado.options.options if parser is None else parser
    argv = _join_values(list(sys.argv if args is None else args), parser)
    try:
        remaining = _parse(argv, parser)
        if final:
            tls = {
                s.name: parser[s.name] for s in _settings.of_scope(Scope.TLS) if s.name in parser
            }
            _settings.check_tls(tls, _door)
    except (ValueError, tornado.options.Error) as e:
        if not exit_on_error:
            raise
        program = os.path.basename(argv[0]) if argv else "python"
        sys.stderr.write(f"{program}: error: {e} (see {program} --help)\n")
        sys.exit(2)
    if final:
        parser.run_parse_callbacks()
    return remaining


def _parse(argv: list[str], parser: OptionParser) -> list[str]:
    """Tornado's walk over the options, with the settings' values read by the table."""
    for index, arg in enumerate(argv[1:], 1):
        if arg == "--":
            return argv[index + 1 :]
        if not arg.startswith("-"):
            return argv[index:]
        name, equals, text = arg.lstrip("-").partition("=")
        if name not in parser:
            # Tornado's words, without the whole help it prints before them.
            raise tornado.options.Error(f"Unrecognized command line option: {name!r}")
        setting = _setting(parser, name)
        if setting is not None and equals:
            value = setting.parse(text, _door(setting))
            parser[setting.name] = f"{value:o}" if setting.octal else value
            continue
        # The application's own options, switches, --help: Tornado's parser.
        try:
            parser.parse_command_line([argv[0], arg], final=False)
        except ValueError as e:
            raise ValueError(f"option --{name}: {e}") from None
    return []


def _setting(parser: OptionParser, name: str) -> _settings.Setting | None:
    """The setting behind option ``name``, if `define_options` defined it
    (an option the application defined under that name is its own)."""
    setting = _settings.BY_NAME.get(name.replace("-", "_"))
    if setting is None or setting.scope is Scope.COMMAND:
        return None
    kind = str if setting.octal else setting.kind
    return setting if _tornado_names.option_type(parser, name) is kind else None


def _door(setting: _settings.Setting) -> str:
    return f"option --{setting.name}"


def _join_values(argv: list[str], parser: OptionParser) -> list[str]:
    joined = argv[:1]
    rest = iter(argv[1:])
    for arg in rest:
        name = arg.lstrip("-").replace("-", "_")
        takes_value = (
            arg.startswith("-")
            and "=" not in arg
            and _tornado_names.option_type(parser, name) not in (None, bool)
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
