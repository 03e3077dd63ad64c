"""One table of settings and its doors: serve(), fork_processes, the command
line, environment variables, tornado.options, docs/usage.md, and the frozen
Settings the server reads."""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tornado.options import OptionParser

from tests import procs, serving
from tornado_prefork import _settings, fork_processes, serve, server
from tornado_prefork import options as prefork_options
from tornado_prefork._settings import SETTINGS, Scope, Setting
from tornado_prefork._supervisor import children as _children
from tornado_prefork.cli import build_parser, settings_from

USAGE = procs.ROOT / "docs" / "usage.md"
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


def test_settings_fields_are_the_table_and_serve_builds_them_typed() -> None:
    fields = {field.name: field for field in dataclasses.fields(_settings.Settings)}
    assert list(fields) == [s.name for s in SETTINGS]
    built = _settings.Settings()
    parameters = inspect.signature(serve).parameters
    for setting in SETTINGS:
        assert getattr(built, setting.name) == setting.default, setting.name
        if setting.name in parameters:
            # serve()'s annotation is the field's type: one type per setting.
            assert str(parameters[setting.name].annotation) == str(fields[setting.name].type), (
                setting.name
            )
    assert _settings.BY_NAME["body_timeout"].optional
    assert not _settings.BY_NAME["timeout"].optional
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.timeout = 1.0  # type: ignore[misc]


def test_supervisor_record_round_trips_and_ignores_unknown_names() -> None:
    settings = _settings.Settings(timeout=5.0, graceful_timeout=2.0)
    record = settings.supervisor_record()
    assert record == {s.name: getattr(settings, s.name) for s in SETTINGS if s.supervisor}
    again = _settings.Settings.from_record({**record, "a_setting_from_the_future": 1})
    assert again.supervisor_record() == record
    assert again.port == _settings.default("port")


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


@pytest.mark.tornado_api
def test_tornado_options_have_every_setting_with_serves_defaults() -> None:
    parser = OptionParser()
    prefork_options.define_options(parser)
    prefork_options.parse_command_line(["app"], parser)
    names = {s.name for s in _settings.of_scope(Scope.SERVE, Scope.HTTP, Scope.TLS)}
    assert names <= set(parser.as_dict())
    assert not {s.name for s in _settings.of_scope(Scope.COMMAND)} & set(parser.as_dict())
    assert prefork_options.serve_kwargs(parser) == {s.name: s.default for s in KEYWORDS}


@pytest.mark.tornado_api
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


@pytest.mark.tornado_api
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
        _settings.Settings(**{name: value}).check("serve() argument")
    assert str(caught.value).startswith(message)


def test_readme_table_is_the_generated_one() -> None:
    """Set UPDATE_README=1 to write the generated table into docs/usage.md."""
    text = USAGE.read_text()
    match = TABLE.search(text)
    assert match is not None, "usage.md needs <!-- settings:start --> ... <!-- settings:end -->"
    table = _settings.markdown_table()
    if os.environ.get("UPDATE_README") and match.group(2) != table:
        USAGE.write_text(text[: match.start(2)] + table + text[match.end(2) :])
        return
    assert match.group(2) == table, "the settings table of docs/usage.md is stale: UPDATE_README=1"


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


@pytest.mark.tornado_api
def test_an_app_whose_constructor_makes_a_loop_is_told_to_pass_a_factory() -> None:
    # debug=True starts Tornado's autoreload, which calls IOLoop.current().
    kind, message = serving.refused("tests.debugapp:app")
    assert kind == "RuntimeError"
    assert "created by the application's constructor (IOLoop.current())" in message
    assert "Pass serve() a function that returns the application, or an import string" in message


# Every number of the table, and what each door must refuse of it: nan and
# infinity, a number too large for what the server does with it (a C int of
# listen(), poll()'s milliseconds), a float for an int and a bool for a number.
NUMBERS = [s for s in SETTINGS if s.kind in (int, float)]
# fork_processes()'s own names for the settings it takes.
FORK_ARGUMENTS = {
    "processes": "num_processes",
    "max_restarts": "max_restarts",
    "graceful_timeout": "graceful_timeout",
    "min_uptime": "min_uptime",
    "backoff_cap": "backoff_cap",
}


def bad_numbers(setting: Setting) -> dict[str, tuple[object, str]]:
    """The values ``setting`` must refuse, by case: as a Python value and as text."""
    huge: tuple[object, str] = (10**20, "1" + "0" * 20) if setting.kind is int else (1e300, "1e300")
    cases = {
        "nan": (float("nan"), "nan"),
        "inf": (float("inf"), "inf"),
        "-inf": (float("-inf"), "-inf"),
        "huge": huge,
        "bool": (True, "true"),
    }
    if setting.kind is int:
        cases["float"] = (2.5, "2.5")
    return cases


BAD_NUMBERS = [
    pytest.param(setting, case, id=f"{setting.name}-{case}")
    for setting in NUMBERS
    for case in bad_numbers(setting)
]


def kind_text(setting: Setting, door: str) -> str:
    if setting.octal:
        return "an octal file mode"
    text = "an int" if setting.kind is int else "a number"
    # fork_processes() takes None for its counts, as Tornado's does.
    takes_none = setting.optional or (door.startswith("fork_processes()") and setting.kind is int)
    return text + (" or None" if takes_none else "")


def assert_refused(setting: Setting, case: str, door: str, shown: str, message: str) -> None:
    """``message`` is ``<door> must be <what>, not <shown>``, with the bound that
    ``case`` breaks as the README states it."""
    match = re.fullmatch(rf"{re.escape(door)} must be (.+), not {re.escape(shown)}", message)
    assert match is not None, message
    what = match.group(1)
    constraint = setting.constraint()
    assert constraint is not None
    assert what in (constraint, *constraint.split(" and ")), message
    if case == "nan":
        assert what == constraint, message
    elif case in ("inf", "huge"):
        top = setting.high if setting.high is not None else setting.most
        shown_top = f"0o{top:o}" if setting.octal else str(top)
        assert shown_top in what, message
    elif case == "-inf":
        assert what.startswith(("from ", ">= ", "> 0")), message


def refuses_value(setting: Setting, case: str, door: str, call: Callable[[Any], object]) -> None:
    """``call(value)`` refuses ``case``'s value, naming ``door``."""
    value, _ = bad_numbers(setting)[case]
    wrong_type = isinstance(value, bool) or (setting.kind is int and isinstance(value, float))
    with pytest.raises(TypeError if wrong_type else ValueError) as caught:
        call(value)
    message = str(caught.value)
    if wrong_type:
        assert message == f"{door} must be {kind_text(setting, door)}, not {_shown(value)}"
    else:
        assert_refused(setting, case, door, setting.show(value), message)


def refuses_text(setting: Setting, case: str, door: str, call: Callable[[str], object]) -> None:
    """``call(text)`` refuses ``case``'s text with `ValueError`, naming ``door``."""
    _, text = bad_numbers(setting)[case]
    with pytest.raises(ValueError) as caught:
        call(text)
    message = str(caught.value)
    try:
        int(text, 8 if setting.octal else 10) if setting.kind is int else float(text)
    except ValueError:
        assert message == f"{door} must be {kind_text(setting, door)}, not {text!r}"
    else:
        assert_refused(setting, case, door, repr(text), message)


def _shown(value: object) -> str:
    return f"{type(value).__name__} {value!r}"


def _no_fork(what: str) -> None:
    # In place of the last check before the fork: a bad value that got
    # through fails the test instead of forking the test process.
    raise AssertionError(f"{what} took a bad argument and went on to fork")


@pytest.mark.parametrize(("setting", "case"), BAD_NUMBERS)
def test_every_number_refuses_nan_infinity_and_what_the_server_cannot_take_at_every_door(
    setting: Setting, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = setting.name
    # serve(): the check it makes first, before anything else runs.
    door = f"serve() argument {name}"
    refuses_value(
        setting, case, door, lambda v: server._check_arguments(_settings.Settings(**{name: v}), {})
    )
    # fork_processes(), for the settings it takes: nothing may be forked.
    if name in FORK_ARGUMENTS:
        monkeypatch.setattr(_children, "check_can_fork", _no_fork)
        argument = FORK_ARGUMENTS[name]
        door = f"fork_processes() argument {argument}"
        if argument == "num_processes":
            refuses_value(setting, case, door, lambda v: fork_processes(v))
        else:
            refuses_value(setting, case, door, lambda v: fork_processes(2, **{argument: v}))
    # The command line and the environment.
    parser = build_parser()
    refuses_text(
        setting,
        case,
        setting.flag,
        lambda t: settings_from(parser.parse_args(["pkg.mod:app", f"{setting.flag}={t}"]), {}),
    )
    refuses_text(
        setting,
        case,
        setting.env,
        lambda t: settings_from(parser.parse_args(["pkg.mod:app"]), {setting.env: t}),
    )
    # tornado.options: on the command line, and set in code (or by a config
    # file) where Tornado's own type check lets the value through.
    options = OptionParser()
    prefork_options.define_options(options)
    door = f"option --{name}"
    refuses_text(
        setting,
        case,
        door,
        lambda t: prefork_options.parse_command_line(
            ["app", f"--{name}", t], options, exit_on_error=False
        ),
    )

    def set_in_code(value: object) -> None:
        options[name] = value
        prefork_options.serve_kwargs(options)

    value = bad_numbers(setting)[case][0]
    if setting.octal:
        refuses_text(setting, case, door, set_in_code)
    elif isinstance(value, setting.kind):
        refuses_value(setting, case, door, set_in_code)


@pytest.mark.parametrize("setting", NUMBERS, ids=lambda s: s.name)
def test_every_number_takes_its_largest_value_and_refuses_the_next(setting: Setting) -> None:
    top = setting.high if setting.high is not None else setting.most
    assert top is not None, f"{setting.name} has no largest value"
    above: float = top + 1 if setting.kind is int else math.nextafter(top, math.inf)
    door = f"serve() argument {setting.name}"
    assert setting.check(top, door) == top
    with pytest.raises(ValueError, match=f"^{re.escape(door)} must be "):
        setting.check(above, door)
    text = f"{top:o}" if setting.octal else str(top)
    assert setting.parse(text, setting.flag) == top


@pytest.mark.parametrize(
    ("call", "message"),
    [
        pytest.param(
            lambda: server._check_arguments(_settings.Settings(timeout=float("nan")), {}),
            "serve() argument timeout must be >= 0 and at most 86400 (a day), not nan",
            id="serve-timeout-nan",
        ),
        pytest.param(
            lambda: settings_from(build_parser().parse_args(["a.b:c", "--timeout", "nan"]), {}),
            "--timeout must be >= 0 and at most 86400 (a day), not 'nan'",
            id="flag-timeout-nan",
        ),
        pytest.param(
            lambda: settings_from(
                build_parser().parse_args(["a.b:c"]), {"TORNADO_PREFORK_TIMEOUT": "nan"}
            ),
            "TORNADO_PREFORK_TIMEOUT must be >= 0 and at most 86400 (a day), not 'nan'",
            id="environment-timeout-nan",
        ),
        pytest.param(
            lambda: prefork_options.parse_command_line(
                ["app", "--graceful_timeout=inf"], _defined(), exit_on_error=False
            ),
            "option --graceful_timeout must be at most 86400 (a day), not 'inf'",
            id="option-graceful-timeout-inf",
        ),
        pytest.param(
            lambda: fork_processes(2, graceful_timeout=float("inf")),
            "fork_processes() argument graceful_timeout must be at most 86400 (a day), not inf",
            id="fork-processes-graceful-timeout-inf",
        ),
        pytest.param(
            lambda: settings_from(
                build_parser().parse_args(["a.b:c", "--backlog", "99999999999"]), {}
            ),
            "--backlog must be at most 2147483647 (what listen() takes), not '99999999999'",
            id="flag-backlog",
        ),
        # Past poll()'s 24.8 days, the idle parent's wait raised OverflowError.
        pytest.param(
            lambda: server._check_arguments(_settings.Settings(max_worker_age=30 * 86400.0), {}),
            "serve() argument max_worker_age must be at most 604800 (a week), not 2592000.0",
            id="serve-max-worker-age-a-month",
        ),
    ],
)
def test_the_issues_numbers_are_refused_in_words(
    call: Callable[[], object], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_children, "check_can_fork", _no_fork)
    with pytest.raises(ValueError) as caught:
        call()
    assert str(caught.value) == message


def _defined() -> OptionParser:
    options = OptionParser()
    prefork_options.define_options(options)
    return options
