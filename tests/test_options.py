"""tornado_prefork.options: the same flags for any tornado.options app."""

from __future__ import annotations

import pytest
from tornado.options import Error, OptionParser

from tornado_prefork import options as prefork_options

pytestmark = pytest.mark.tornado_api


def parser() -> OptionParser:
    p = OptionParser()
    prefork_options.define_options(p)
    p.define("debug", default=False, type=bool)
    return p


def test_space_and_equals_forms() -> None:
    p = parser()
    rest = prefork_options.parse_command_line(
        ["app", "--processes", "4", "--graceful-timeout=2.5", "--debug", "--port", "9000", "x"], p
    )
    assert (p.processes, p.graceful_timeout, p.debug, p.port) == (4, 2.5, True, 9000)
    assert rest == ["x"]


def test_defaults() -> None:
    p = parser()
    prefork_options.parse_command_line(["app"], p)
    # As serve()'s: only the command line binds 127.0.0.1 by default.
    assert (p.processes, p.port, p.address, p.graceful_timeout) == (0, 8888, None, 30.0)


def test_bad_values_raise_as_in_tornado_without_exit_on_error() -> None:
    with pytest.raises(Error, match="processes"):
        prefork_options.parse_command_line(["app", "--processes"], parser(), exit_on_error=False)
    with pytest.raises(ValueError, match="^option --processes must be an int, not 'many'$"):
        prefork_options.parse_command_line(
            ["app", "--processes", "many"], parser(), exit_on_error=False
        )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "70000"], "option --port must be from 0 to 65535, not '70000'"),
        (["--processes", "four"], "option --processes must be an int, not 'four'"),
        (["--processes=-1"], "option --processes must be >= 0, not '-1'"),
        (["--graceful-timeout", "soon"], "option --graceful_timeout must be a number, not 'soon'"),
        (
            ["--timeout", "nan"],
            "option --timeout must be >= 0 and at most 86400 (a day), not 'nan'",
        ),
        (
            ["--graceful-timeout=inf"],
            "option --graceful_timeout must be at most 86400 (a day), not 'inf'",
        ),
        (
            ["--backlog", "99999999999"],
            "option --backlog must be at most 2147483647 (what listen() takes), not '99999999999'",
        ),
        (["--port", "80.5"], "option --port must be an int, not '80.5'"),
        (["--reuse_port=maybe"], "option --reuse_port must be true or false, not 'maybe'"),
        (["--unix_socket_mode", "999"], "option --unix_socket_mode must be an octal file mode"),
        (["--loop", "trio"], "option --loop must be one of auto, asyncio, uvloop, not 'trio'"),
        (["--certfile", "c.pem"], "option --certfile and option --keyfile go together"),
        (["--bogus"], "Unrecognized command line option: 'bogus'"),
        (["--port"], "Option 'port' requires a value"),
        (["--debug", "--workers", "x"], "option --workers: invalid literal for int()"),
    ],
)
def test_a_bad_command_line_is_one_line_and_exit_status_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # As tornado-prefork's flags: no traceback, no page of help.
    p = parser()
    p.define("workers", default=1, type=int)
    with pytest.raises(SystemExit) as caught:
        prefork_options.parse_command_line(["demo/app.py", *args], p)
    assert caught.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"app.py: error: {message}"), err
    assert err.endswith(" (see app.py --help)\n") and err.count("\n") == 1, err


def test_none_is_none_for_the_options_that_take_it() -> None:
    p = parser()
    p.define("name", default="x", type=str)
    prefork_options.parse_command_line(
        ["app", "--address", "None", "--metrics_port=None", "--preload=None", "--name=None"], p
    )
    assert (p.address, p.metrics_port, p.preload) == (None, None, None)
    # An option of the application's own is Tornado's: text stays text.
    assert p.name == "None"
    assert prefork_options.serve_kwargs(p)["address"] is None


def test_the_applications_own_definition_of_a_name_is_left_to_tornado() -> None:
    p = OptionParser()
    p.define("port", default="http", type=str)
    prefork_options.define_options(p)
    prefork_options.parse_command_line(["app", "--port", "https"], p)
    assert p.port == "https"


def test_tls_options_may_come_from_several_sources_before_the_final_parse() -> None:
    p = parser()
    prefork_options.parse_command_line(["app", "--certfile", "c.pem"], p, final=False)
    p.keyfile = "k.pem"
    prefork_options.parse_command_line(["app"], p)
    assert (p.certfile, p.keyfile) == ("c.pem", "k.pem")


def test_existing_definitions_are_kept() -> None:
    p = OptionParser()
    p.define("port", default=80, type=int)
    prefork_options.define_options(p)
    prefork_options.parse_command_line(["app"], p)
    assert p.port == 80


def test_octal_mode_and_lifecycle_knobs() -> None:
    p = parser()
    prefork_options.parse_command_line(
        ["app", "--unix_socket_mode", "660", "--max_requests", "500", "--timeout=0"], p
    )
    kwargs = prefork_options.serve_kwargs(p)
    assert kwargs["unix_socket_mode"] == 0o660
    assert (kwargs["max_requests"], kwargs["timeout"]) == (500, 0.0)
