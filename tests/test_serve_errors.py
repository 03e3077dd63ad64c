"""What serve() refuses before any fork: a clear message naming the thing, no child."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

from tests.serving import refused
from tornado_prefork._serve import app as _app
from tornado_prefork.errors import StartupError

APP = "tests.webapp:app"


@pytest.mark.tornado_api
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


@pytest.mark.tornado_api
def test_unix_socket_directory_missing(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "app.sock"
    kind, message = refused(APP, unix_socket=str(path))
    assert (kind, message) == (
        "StartupError",
        f"cannot listen on unix socket {path}: directory {tmp_path / 'missing'} does not exist",
    )


@pytest.mark.tornado_api
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


@pytest.mark.tornado_api
def test_unix_socket_in_the_way(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    path.write_text("not a socket")
    kind, message = refused(APP, unix_socket=str(path))
    assert message == f"cannot listen on unix socket {path}: it exists and is not a socket"
    assert path.read_text() == "not a socket"


@pytest.mark.tornado_api
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
            {"graceful_timeout": 1e300},
            "ValueError",
            "serve() argument graceful_timeout must be at most 86400 (a day), not 1e+300",
        ),
        (
            APP,
            {"backlog": 99999999999},
            "ValueError",
            "serve() argument backlog must be at most 2147483647 (what listen() takes), "
            "not 99999999999",
        ),
        (APP, {"port": 80.5}, "TypeError", "serve() argument port must be an int, not float 80.5"),
        (
            APP,
            {"timeout": True},
            "TypeError",
            "serve() argument timeout must be a number, not bool True",
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


# Modules that bind "app" at import in a way the pre-check must accept, or
# cannot rule out: it must pass them all, and the import tells.
BINDS_APP = {
    "assign": "app = object()\n",
    "annotated": "app: object = object()\n",
    "augmented": "app = 1\napp += 1\n",
    "tuple": "first, (second, app) = 1, (2, 3)\n",
    "starred": "first, *app = [1, 2, 3]\n",
    "list-target": "[app] = [1]\n",
    "with": "import contextlib\nwith contextlib.nullcontext(1) as app:\n    pass\n",
    "with-tuple": "import contextlib\nwith contextlib.nullcontext((1, 2)) as (x, app):\n    pass\n",
    "for": "for app in [1]:\n    pass\n",
    "for-else": "for x in []:\n    pass\nelse:\n    app = 1\n",
    "while": "while True:\n    app = 1\n    break\n",
    "walrus": "if (app := object()) is None:\n    pass\n",
    "walrus-in-call": "print(app := 1)\n",
    "walrus-in-comprehension": "[app := x for x in [1]]\n",
    "walrus-in-default": "def f(x=(app := 1)):\n    return x\n",
    "walrus-in-decorator": "def d(x):\n    return lambda f: f\n@d(app := 1)\ndef f():\n    pass\n",
    "walrus-in-class-bases": "class C((app := object)):\n    pass\n",
    "import-as": "import json as app\n",
    "import-dotted": "import app.sub\n",
    "from-import-as": "from json import loads as app\n",
    "from-import": "from os.path import join, sep as app\n",
    "star-import": "from os.path import *\n",
    "global-in-function": "def init():\n    global app\n    app = 1\ninit()\n",
    "global-in-class": "class C:\n    global app\n    app = 1\n",
    "if": "import os\nif os.environ.get('X'):\n    app = 1\nelse:\n    app = 2\n",
    "try": "try:\n    import nosuch as app\nexcept ImportError:\n    app = None\n",
    "try-finally": "try:\n    pass\nfinally:\n    app = 1\n",
    "except-body": "try:\n    raise KeyError\nexcept KeyError:\n    app = 1\n",
    "match-capture": "match 1:\n    case app:\n        pass\n",
    "match-as": "match [1]:\n    case [int() as app]:\n        pass\n",
    "match-star": "match [1, 2]:\n    case [x, *app]:\n        pass\n",
    "match-mapping-rest": "match {'k': 1}:\n    case {'k': 1, **app}:\n        pass\n",
    "match-class": "match 1j:\n    case complex(real=app):\n        pass\n",
    "module-getattr": "def __getattr__(name):\n    return name\n",
    "module-getattr-assigned": "__getattr__ = dict(app=1).__getitem__\n",
    "globals": "globals()['app'] = 1\n",
    "globals-update": "globals().update(app=1)\n",
    "vars": "vars()['app'] = 1\n",
    "locals": "locals()['app'] = 1\n",
    "exec": "exec('app = 1')\n",
    "setattr-on-self": "import sys\nsetattr(sys.modules[__name__], 'app', 1)\n",
    "replaced-in-sys-modules": "import sys, types\nsys.modules[__name__] = types.ModuleType('m')\n",
    "attribute-of-self": "import importlib\nimportlib.import_module(__name__).app = 1\n",
    "dict": "import sys\nsys.modules[__name__].__dict__['app'] = 1\n",
    "function": "def app():\n    pass\n",
    "async-function": "async def app():\n    pass\n",
    "class": "class app:\n    pass\n",
    "nested-blocks": (
        "import os\nif True:\n    for x in [1]:\n        try:\n"
        "            with open(os.devnull) as app:\n                pass\n"
        "        finally:\n            pass\n"
    ),
}

# Modules where "app" certainly stays unbound: the check refuses them.
LACKS_APP = {
    "elsewhere": "other = 1\n",
    "read-only": "print(__name__)\nother = [app for app in []]\n",
    "function-local": "def f():\n    app = 1\n    return app\n",
    "class-attribute": "class C:\n    app = 1\n",
    "lambda-walrus": "f = lambda: (app := 1)\n",
    "annotation-only": "app: object\n",
    "except-as": "try:\n    raise KeyError\nexcept KeyError as app:\n    pass\n",
    "global-of-another-name": "def f():\n    global other\n    other = 1\n",
}


@pytest.mark.parametrize("case", sorted(BINDS_APP))
def test_import_string_check_passes_every_way_of_binding_the_name(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = _module(tmp_path, monkeypatch, case, BINDS_APP[case])
    _app.check(f"{name}:app")


@pytest.mark.parametrize("case", sorted(LACKS_APP))
def test_import_string_check_refuses_a_name_never_bound(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = _module(tmp_path, monkeypatch, case, LACKS_APP[case])
    with pytest.raises(StartupError) as caught:
        _app.check(f"{name}:app")
    assert str(caught.value) == f"{name} has no name 'app' (from import string '{name}:app')"


def test_import_string_check_passes_a_submodule_of_a_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Importing pkg.app anywhere sets the attribute on the package.
    (tmp_path / "checkedpkg").mkdir()
    (tmp_path / "checkedpkg" / "__init__.py").write_text("")
    (tmp_path / "checkedpkg" / "app.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    _app.check("checkedpkg:app")
    with pytest.raises(StartupError, match="checkedpkg has no name 'other'"):
        _app.check("checkedpkg:other")


def _module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, source: str) -> str:
    # A fresh name: find_spec answers from sys.modules for one imported before.
    name = "checked_" + case.replace("-", "_")
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    compile(source, name, "exec")
    return name
