"""``tornado-prefork APP [options] [-- app options]``: the command line, parsed into a `serve` call.

Every flag comes from the table of settings (`tornado_prefork._settings`) and
can also be set by an environment variable ``TORNADO_PREFORK_<NAME>``; a flag
wins over the environment.
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.config
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from tornado_prefork import _settings, logs
from tornado_prefork._serve import app as _app
from tornado_prefork._settings import SETTINGS, Scope
from tornado_prefork.errors import StartupError, SupervisorError
from tornado_prefork.server import serve

PROG = "tornado-prefork"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block of forty flags.
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``tornado-prefork``. Values are kept as given
    (text, or True/False for switches) and None when absent; `settings_from`
    turns them into the settings."""
    from tornado_prefork._version import __version__

    parser = _Parser(
        prog=PROG,
        usage=f"{PROG} APP [options] [-- app options]",
        description="Run a Tornado application in pre-forked worker processes.",
        epilog="Every flag can also be set by an environment variable: "
        f"--max-body-size as {_settings.ENV_PREFIX}MAX_BODY_SIZE, a switch such as "
        f"--xheaders as {_settings.ENV_PREFIX}XHEADERS=true; a flag wins. Arguments "
        "after -- go to the application's own tornado.options. Signals to the "
        "parent: TERM/INT graceful stop, QUIT immediate stop, HUP rolling reload, "
        "TTIN one worker more, TTOU one worker fewer, USR1 reopen log files.",
    )
    parser.add_argument(
        "app",
        metavar="APP",
        help="import string 'package.module:name' of a tornado.web.Application "
        "or of a function that returns one (see --preload)",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    for setting in SETTINGS:
        shown = setting.show(setting.cli_default) if setting.octal else setting.cli_default
        help = f"{setting.meaning()} (default: {shown})"
        if setting.kind is bool:
            # A switch that is not off by default (on, or decided by serve()) has a
            # --no- form; so does --access-log, which was on by default before.
            negatable = setting.cli_default is not False or setting.name == "access_log"
            action: Any = argparse.BooleanOptionalAction if negatable else "store_true"
            parser.add_argument(setting.flag, action=action, default=None, help=help)
        else:
            parser.add_argument(setting.flag, metavar=setting.metavar, help=help)
    return parser


def settings_from(
    args: argparse.Namespace, environ: Mapping[str, str]
) -> tuple[dict[str, Any], set[str]]:
    """Every setting's value: the flag's, else its environment variable's,
    else the command line's default. Also returns the names set by the user.
    Raises `ValueError` naming the flag or variable of a bad value."""
    values: dict[str, Any] = {}
    given: set[str] = set()
    for setting in SETTINGS:
        raw = getattr(args, setting.name)
        if isinstance(raw, bool):
            values[setting.name] = raw
        elif raw is not None:
            values[setting.name] = setting.parse(raw, setting.flag)
        elif setting.env in environ:
            values[setting.name] = setting.parse(environ[setting.env], setting.env)
        else:
            values[setting.name] = setting.cli_default
            continue
        given.add(setting.name)
    return values, given


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``tornado-prefork``; returns the parent's exit status (2 for a bad
    flag or value, 1 for a server that cannot start).

    .. versionadded:: 0.1
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    app_args = None
    if "--" in argv:
        argv, app_args = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if not _app.IMPORT_STRING.match(args.app):
            raise ValueError(f"APP {args.app!r} is not of the form 'package.module:name'")
        values, given = settings_from(args, os.environ)
        ssl_options = _settings.ssl_context(values)
    except ValueError as e:
        parser.error(str(e))
    except StartupError as e:
        return _fail(e)
    try:
        _configure_logging(values, given)
    except ValueError as e:
        parser.error(str(e))
    # As gunicorn and uvicorn do: APP is found relative to --app-dir (default: here).
    sys.path.insert(0, os.path.abspath(values["app_dir"]))
    if app_args is not None:
        _app.parse_options_after_import(app_args)
    keywords = {s.name: values[s.name] for s in _settings.of_scope(Scope.SERVE, Scope.HTTP)}
    try:
        serve(args.app, ssl_options=ssl_options, **keywords)
    except (StartupError, SupervisorError) as e:
        return _fail(e)
    return 0


def _fail(error: Exception) -> int:
    print(f"{PROG}: error: {error}", file=sys.stderr)
    return 1


def _configure_logging(values: Mapping[str, Any], given: set[str]) -> None:
    """Raises `ValueError` naming the flag whose file cannot be used."""
    if values["log_config"] is not None:
        try:
            with open(values["log_config"], encoding="utf-8") as f:
                logging.config.dictConfig(json.load(f))
        except (OSError, ValueError) as e:
            raise ValueError(f"--log-config {values['log_config']}: {e}") from e
    # A --log-config that sets levels keeps them unless --log-level is given too.
    keep_level = values["log_config"] is not None and "log_level" not in given
    # Asking for a file of the access log is asking for the access log (as
    # gunicorn's --access-logfile), unless --no-access-log says otherwise.
    access_log = values["access_log"] or (
        values["access_logfile"] is not None and "access_log" not in given
    )
    logs.enable(None if keep_level else values["log_level"].upper(), access_log=access_log)
    if values["access_logfile"] is not None:
        try:
            logs.access_log_to(values["access_logfile"])
        except OSError as e:
            raise ValueError(f"--access-logfile {values['access_logfile']}: {e}") from e
