"""tornado_prefork.options: the same flags for any tornado.options app."""

from __future__ import annotations

import pytest
from tornado.options import Error, OptionParser

from tornado_prefork import options as prefork_options


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


def test_bad_values_fail_as_in_tornado() -> None:
    with pytest.raises(Error, match="processes"):
        prefork_options.parse_command_line(["app", "--processes"], parser())
    with pytest.raises(ValueError, match="many"):
        prefork_options.parse_command_line(["app", "--processes", "many"], parser())


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
