"""What serve() refuses before any fork: a clear message naming the thing, no child."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

from tests.serving import refused

APP = "tests.webapp:app"


def test_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        kind, message = refused(APP, port=port, address="127.0.0.1")
    assert kind == "StartupError"
    assert message == f"cannot listen on 127.0.0.1:{port}: address already in use"


def test_address_that_does_not_resolve() -> None:
    kind, message = refused(APP, port=0, address="no-such-host.invalid")
    assert kind == "StartupError"
    assert message.startswith("cannot resolve address 'no-such-host.invalid'")


def test_unix_socket_directory_missing(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "app.sock"
    kind, message = refused(APP, unix_socket=str(path))
    assert (kind, message) == (
        "StartupError",
        f"cannot listen on unix socket {path}: directory {tmp_path / 'missing'} does not exist",
    )


def test_unix_socket_directory_not_writable() -> None:
    # root may write anywhere: the attempt then runs as nobody, in a directory
    # nobody can reach (pytest's own tmp_path is private to root).
    top = Path(tempfile.mkdtemp(prefix="tornado-prefork-"))
    try:
        top.chmod(0o755)
        locked = top / "locked"
        locked.mkdir(mode=0o555)
        path = locked / "app.sock"
        kind, message = refused(APP, as_nobody=os.geteuid() == 0, unix_socket=str(path))
    finally:
        shutil.rmtree(top)
    assert (kind, message) == (
        "StartupError",
        f"cannot listen on unix socket {path}: directory {locked} is not writable",
    )


def test_unix_socket_in_the_way(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    path.write_text("not a socket")
    kind, message = refused(APP, unix_socket=str(path))
    assert message == f"cannot listen on unix socket {path}: it exists and is not a socket"
    assert path.read_text() == "not a socket"


def test_unix_socket_of_a_live_server_is_not_stolen(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(str(path))
        live.listen()
        kind, message = refused(APP, unix_socket=str(path))
    assert message == f"cannot listen on unix socket {path}: a server is listening on it"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (
            "tests.nosuch:app",
            "cannot import tests.nosuch ('tests.nosuch:app'): no module named 'tests.nosuch'",
        ),
        (
            "nosuchpackage.web:app",
            "cannot import nosuchpackage.web ('nosuchpackage.web:app'): "
            "no module named 'nosuchpackage'",
        ),
        (
            "tests.webapp:nothing",
            "tests.webapp has no name 'nothing' (from import string 'tests.webapp:nothing')",
        ),
        ("tests.webapp", "import string 'tests.webapp' must look like 'package.module:name'"),
        ("broken:app", "cannot import broken ('broken:app'): syntax error at "),
    ],
)
def test_import_strings_checked_without_importing(
    target: str, message: str, tmp_path: Path
) -> None:
    (tmp_path / "broken.py").write_text("app = (\n")
    kind, text = refused(target, string=True, path=tmp_path)
    assert kind == "StartupError"
    assert text.startswith(message), text


def test_import_string_module_is_not_run_in_the_parent(tmp_path: Path) -> None:
    # The module would print on import; the check must not run it, and the
    # parent must still fail on the missing name.
    (tmp_path / "noisy.py").write_text("print('imported!')\napp = None\n")
    kind, text = refused("noisy:missing", string=True, path=tmp_path)
    assert text == "noisy has no name 'missing' (from import string 'noisy:missing')"


@pytest.mark.parametrize(
    ("app", "settings", "kind", "message"),
    [
        ("42", {}, "TypeError", "app must be a tornado.web.Application"),
        (
            APP,
            {"port": "8888"},
            "TypeError",
            "serve() argument port must be an int, not str '8888'",
        ),
        (APP, {"port": 70000}, "ValueError", "serve() argument port must be from 0 to 65535"),
        (APP, {"processes": 2.0}, "TypeError", "serve() argument processes must be an int"),
        (
            APP,
            {"graceful_timeout": -1},
            "ValueError",
            "serve() argument graceful_timeout must be >= 0, not -1",
        ),
        (
            APP,
            {"idle_connection_timeout": 0},
            "ValueError",
            "serve() argument idle_connection_timeout must be > 0, not 0",
        ),
        (
            APP,
            {"no_such_option": 1},
            "TypeError",
            "serve() got unexpected keyword argument(s) no_such_option;",
        ),
    ],
)
def test_bad_arguments(app: str, settings: dict[str, object], kind: str, message: str) -> None:
    got_kind, text = refused(app, **settings)
    assert got_kind == kind
    assert text.startswith(message), text
