"""One table of settings and its doors: serve(), fork_processes, the command
line, environment variables, tornado.options, the supervisor's config, the README."""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
from pathlib import Path
from typing import Any

import pytest
from tornado.options import OptionParser

from tests import procs, serving
from tornado_prefork import _settings, fork_processes, serve
from tornado_prefork import options as prefork_options
from tornado_prefork._hooks import SupervisorConfig
from tornado_prefork._settings import SETTINGS, Scope, Setting
from tornado_prefork.cli import build_parser, settings_from

README = procs.ROOT / "README.md"
TABLE = re.compile(r"(<!-- settings:start -->\n)(.*?)(<!-- settings:end -->)", re.S)
KEYWORDS = _settings.of_scope(Scope.SERVE, Scope.HTTP)


def test_serve_has_every_setting_with_the_tables_default() -> None:
    parameters = inspect.signature(serve).parameters
    own = {"app", "family", "ssl_options", "server_options"}
    assert set(parameters) - own == {s.name for s in KEYWORDS}
    for setting in KEYWORDS:
        assert parameters[setting.name].default == setting.default, setting.name


def test_fork_processes_takes_its_defaults_from_the_table() -> None:
    parameters = inspect.signature(fork_processes).parameters
    for name in ("graceful_timeout", "min_uptime", "backoff_cap"):
        assert parameters[name].default == _settings.default(name), name
    # None, as in Tornado, means the table's max_restarts.
    assert parameters["max_restarts"].default is None


def test_supervisor_config_gets_every_field_from_the_table() -> None:
    config = _settings.supervisor_config({})
    fields = dataclasses.fields(SupervisorConfig)
    assert set(config) == {field.name for field in fields}
    for field in fields:
        if field.default is not dataclasses.MISSING:
            assert config[field.name] == field.default, field.name
    assert _settings.supervisor_config({"timeout": 5.0})["timeout"] == 5.0


def test_command_line_has_every_setting_with_the_same_default_but_address() -> None:
    parser = build_parser()
    flags = {option for action in parser._actions for option in action.option_strings}
    assert {s.flag for s in SETTINGS} <= flags
    values, given = settings_from(parser.parse_args(["pkg.mod:app"]), {})
    assert given == set()
    differences = {n: v for n, v in values.items() if v != _settings.BY_NAME[n].default}
    assert differences == {"address": "127.0.0.1"}


def other_value(setting: Setting) -> tuple[str, Any]:
    """A valid value that is not the default, as text and as the value."""
    if setting.kind is bool:
        return ("false", False) if setting.default else ("true", True)
    if setting.choices:
        return setting.choices[-1], setting.choices[-1]
    if setting.kind is str:
        return "/x", "/x"
    if setting.octal:
        return "644", 0o644
    if setting.kind is int:
        return str((setting.default or 0) + 1), (setting.default or 0) + 1
    return "2.5", 2.5


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_every_setting_has_an_environment_variable_and_the_flag_wins(setting: Setting) -> None:
    text, value = other_value(setting)
    assert value != setting.cli_default
    parser = build_parser()
    env = {f"TORNADO_PREFORK_{setting.name.upper()}": text}
    values, given = settings_from(parser.parse_args(["pkg.mod:app"]), env)
    assert (values[setting.name], given) == (value, {setting.name})
    # The flag, set to the default, wins over the environment.
    if setting.kind is bool:
        if not setting.default:
            return  # a switch that is off by default has no flag that says "off"
        flag = [setting.flag]
    else:
        default = setting.cli_default
        flag = [setting.flag, f"{default:o}" if setting.octal else str(default)]
    values, _ = settings_from(parser.parse_args(["pkg.mod:app", *flag]), env)
    assert values[setting.name] == setting.cli_default


@pytest.mark.parametrize("setting", [s for s in SETTINGS if s.optional], ids=lambda s: s.name)
def test_none_is_none_at_every_door_of_a_setting_that_takes_none(setting: Setting) -> None:
    # What --help shows as the default is a value: "--address None", every interface.
    assert setting.parse("None", setting.flag) is None
    parser = build_parser()
    env = {setting.env: "None"}
    values, given = settings_from(parser.parse_args(["pkg.mod:app"]), env)
    assert (values[setting.name], given) == (None, {setting.name})
    if setting.kind is not bool:
        args = parser.parse_args(["pkg.mod:app", setting.flag, "None"])
        assert settings_from(args, {})[0][setting.name] is None
    if setting.scope is not Scope.COMMAND:
        options = OptionParser()
        prefork_options.define_options(options)
        prefork_options.parse_command_line(["app", f"--{setting.name}=None"], options)
        assert options[setting.name] is None


def test_tornado_options_have_every_setting_with_serves_defaults() -> None:
    parser = OptionParser()
    prefork_options.define_options(parser)
    prefork_options.parse_command_line(["app"], parser)
    names = {s.name for s in _settings.of_scope(Scope.SERVE, Scope.HTTP, Scope.TLS)}
    assert names <= set(parser.as_dict())
    assert not {s.name for s in _settings.of_scope(Scope.COMMAND)} & set(parser.as_dict())
    assert prefork_options.serve_kwargs(parser) == {s.name: s.default for s in KEYWORDS}


def test_tornado_options_values_are_checked_naming_the_option() -> None:
    parser = OptionParser()
    prefork_options.define_options(parser)
    # On the command line, as its flags are...
    with pytest.raises(ValueError, match=r"^option --max_body_size must be >= 0, not '-1'$"):
        prefork_options.parse_command_line(
            ["app", "--max_body_size", "-1"], parser, exit_on_error=False
        )
    with pytest.raises(ValueError, match=r"^option --ca_certs need option --certfile"):
        prefork_options.parse_command_line(
            ["app", "--ca_certs", "ca.pem"], parser, exit_on_error=False
        )
    # ...and set in code or by a config file, when they become serve()'s.
    parser = OptionParser()
    prefork_options.define_options(parser)
    parser.max_body_size = -1
    with pytest.raises(ValueError, match=r"^option --max_body_size must be >= 0, not -1$"):
        prefork_options.serve_kwargs(parser)
    parser = OptionParser()
    prefork_options.define_options(parser)
    parser.ca_certs = "ca.pem"
    with pytest.raises(ValueError, match=r"^option --ca_certs need option --certfile"):
        prefork_options.serve_kwargs(parser)


def test_tornado_options_build_the_tls_context() -> None:
    parser = OptionParser()
    prefork_options.define_options(parser)
    here = Path(__file__).parent
    prefork_options.parse_command_line(
        ["app", f"--certfile={here / 'test.crt'}", f"--keyfile={here / 'test.key'}"], parser
    )
    kwargs = prefork_options.serve_kwargs(parser)
    assert kwargs["ssl_options"].verify_mode.name == "CERT_NONE"
    assert "certfile" not in kwargs


@pytest.mark.parametrize(
    ("name", "value", "error", "message"),
    [
        ("port", "80", TypeError, "serve() argument port must be an int, not str '80'"),
        ("port", True, TypeError, "serve() argument port must be an int, not bool True"),
        ("port", -1, ValueError, "serve() argument port must be from 0 to 65535, not -1"),
        ("graceful_timeout", -0.5, ValueError, "serve() argument graceful_timeout must be >= 0"),
        ("body_timeout", 0, ValueError, "serve() argument body_timeout must be > 0, not 0"),
        (
            "unix_socket_mode",
            0o1777,
            ValueError,
            "serve() argument unix_socket_mode must be from 0o0 to 0o777, not 0o1777",
        ),
        ("address", 127, TypeError, "serve() argument address must be a string or None"),
        ("xheaders", 1, TypeError, "serve() argument xheaders must be True or False, not int 1"),
    ],
)
def test_one_message_format_naming_the_setting_and_door(
    name: str, value: object, error: type, message: str
) -> None:
    with pytest.raises(error) as caught:
        _settings.check({name: value}, "serve() argument")
    assert str(caught.value).startswith(message)


def test_readme_table_is_the_generated_one() -> None:
    """Set UPDATE_README=1 to write the generated table into the README."""
    text = README.read_text()
    match = TABLE.search(text)
    assert match is not None, "README.md needs <!-- settings:start --> ... <!-- settings:end -->"
    table = _settings.markdown_table()
    if os.environ.get("UPDATE_README") and match.group(2) != table:
        README.write_text(text[: match.start(2)] + table + text[match.end(2) :])
        return
    assert match.group(2) == table, "the README's settings table is stale: UPDATE_README=1"


def test_serve_in_a_running_loop_says_what_serve_needs() -> None:
    kind, message = serving.refused("tests.webapp:make_app", in_a_running_loop=True)
    assert kind == "RuntimeError"
    assert message.startswith("serve() was called from inside a running event loop"), message
    assert "after" not in message and "fork_processes" not in message


def test_reload_needs_an_import_string() -> None:
    kind, message = serving.refused("tests.webapp:make_app", reload=True)
    assert (kind, message.split(":")[0]) == (
        "ValueError",
        "serve() argument reload needs app as an import string 'package.module",
    )


def test_an_app_whose_constructor_makes_a_loop_is_told_to_pass_a_factory() -> None:
    # debug=True starts Tornado's autoreload, which calls IOLoop.current().
    kind, message = serving.refused("tests.debugapp:app")
    assert kind == "RuntimeError"
    assert "created by the application's constructor (IOLoop.current())" in message
    assert "Pass serve() a function that returns the application, or an import string" in message
