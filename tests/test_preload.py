"""Preload: the app's code in the parent before the fork, the collector frozen (real processes)."""

from __future__ import annotations

import concurrent.futures
import subprocess
from pathlib import Path

import pytest

from tests import procs, serving
from tests.serving import MODULE


def private_bytes(pid: int) -> int:
    """Memory that only ``pid`` maps (copied on write, or its own), from smaps_rollup."""
    total = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1]) * 1024
    return total


def collect_in_every_worker(base: str, workers: int) -> dict[int, dict[str, int]]:
    """Asks until each worker has run a full collection; returns its answer by pid.

    The requests go ``workers`` at a time: one after another, an idle server
    may hand every connection to the same worker, while a worker busy
    collecting leaves the next one to a sibling.
    """
    answers: dict[int, dict[str, int]] = {}
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for _ in range(200):
            for status, body in pool.map(lambda _: serving.get(base, "/collect"), range(workers)):
                assert status == 200
                answers[body["pid"]] = body
            if len(answers) == workers:
                return answers
    raise AssertionError(f"only workers {sorted(answers)} answered")


@pytest.mark.parametrize(
    ("app", "string", "preload", "frozen"),
    [
        ("tests.heavyapp:app", True, None, True),
        ("tests.heavyapp:make_app", True, None, True),
        ("tests.heavyapp:app", False, None, True),
        ("tests.heavyapp:app", True, False, False),
    ],
)
def test_workers_inherit_a_frozen_collector_when_the_app_is_in_the_parent(
    app: str, string: bool, preload: bool | None, frozen: bool
) -> None:
    with serving.running(app, string=string, preload=preload) as s:
        answers = collect_in_every_worker(serving.url(s), 2)
        counts = [answer["frozen"] for answer in answers.values()]
        assert all(count > 100_000 for count in counts) if frozen else counts == [0, 0], counts


def test_a_worker_keeps_the_preloaded_app_shared_through_full_collections() -> None:
    with (
        serving.running("tests.heavyapp:app", string=True) as shared,
        serving.running("tests.heavyapp:app", string=True, preload=False) as own,
    ):
        for s, most in ((shared, 0.4), (own, None)):
            base = serving.url(s)
            # Two rounds: the first collection may still promote young objects.
            collect_in_every_worker(base, 2)
            answers = collect_in_every_worker(base, 2)
            for pid, answer in answers.items():
                table = answer["table_bytes"]
                assert table > 10 * 2**20, answer
                private = private_bytes(pid)
                if most is not None:
                    assert private < most * table, (pid, private, table)
                else:
                    # Built in the worker itself: all of it is the worker's own.
                    assert private > 0.8 * table, (pid, private, table)


SAYS_WHERE = """
import os
from tests.webapp import make_app
os.write(1, b"imported in %d\\n" % os.getpid())
"""


@pytest.mark.tornado_api
@pytest.mark.parametrize(
    ("flag", "imported", "built"),
    [
        (None, "parent", "workers"),
        ("--preload", "parent", "parent"),
        ("--no-preload", "workers", "workers"),
    ],
)
def test_where_the_command_line_imports_and_calls_the_factory(
    flag: str | None, imported: str, built: str, tmp_path: Path
) -> None:
    (tmp_path / "sayswhere.py").write_text(SAYS_WHERE)
    argv = [*MODULE, "sayswhere:make_app", "--processes=2", "--port=0"]
    with serving.running(argv=argv + ([flag] if flag else []), env=_path(tmp_path)) as s:
        serving.url(s)
        where = {"parent": [s.pid], "workers": sorted(procs.children_of(s.pid))}
        # webapp.make_app says "factory <pid>" each time it is called.
        imports = sorted(int(line.split()[-1]) for line in s.matching("imported in", True))
        builds = sorted(int(line.split()[-1]) for line in s.matching("factory ", True))
        assert (imports, builds) == (where[imported], where[built]), (s.lines, where)


def test_running_server_passes_preload_false(tmp_path: Path) -> None:
    from tornado_prefork.testing import running_server

    (tmp_path / "sayswhere.py").write_text(SAYS_WHERE)
    with running_server("sayswhere:make_app", 2, env=_path(tmp_path), preload=False) as server:
        assert server.worker_pids
    imports = {int(line.split()[-1]) for line in server.output if line.startswith("imported in")}
    assert imports == set(server.worker_pids), server.output


def _path(directory: Path) -> dict[str, str]:
    return {"PYTHONPATH": f"{directory}:{procs.ROOT}"}


def test_an_import_that_fails_in_the_parent_is_one_line_and_exit_1(tmp_path: Path) -> None:
    (tmp_path / "badconfig.py").write_text(
        "import os\nSECRET = os.environ['NO_SUCH_SETTING']\napp = None\n"
    )
    result = subprocess.run(
        [*MODULE, "badconfig:app", "--processes=2", "--port=0"],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=tmp_path,
        env=_path(tmp_path) | {"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(
        "tornado-prefork: error: cannot import badconfig ('badconfig:app'): "
        "KeyError: 'NO_SUCH_SETTING' ("
    ), line
    assert line.endswith("badconfig.py:2)"), line


def test_serve_raises_before_any_fork_when_the_import_fails(tmp_path: Path) -> None:
    (tmp_path / "boom.py").write_text("raise RuntimeError('no database configured')\napp = None\n")
    kind, text = serving.refused("boom:app", string=True, path=tmp_path)
    assert kind == "StartupError"
    assert text.startswith("cannot import boom ('boom:app'): RuntimeError: no database configured")


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("app = 42\n", "'notanapp:app' is int 42, not a tornado.web.Application"),
        (
            "import asyncio\nasyncio.set_event_loop(asyncio.new_event_loop())\n"
            "from tests.webapp import app\n",
            "importing notanapp (from 'notanapp:app') created an event loop (",
        ),
    ],
)
def test_what_cannot_be_preloaded_is_refused_before_any_fork(
    code: str, message: str, tmp_path: Path
) -> None:
    (tmp_path / "notanapp.py").write_text(code)
    kind, text = serving.refused("notanapp:app", string=True, path=tmp_path)
    assert kind in ("StartupError", "TypeError")
    assert text.startswith(message), text


@pytest.mark.parametrize(
    ("app", "preload", "kind", "message"),
    [
        ("app", False, "ValueError", "preload=False needs a factory"),
        ("slow_factory", True, "ValueError", "preload=True cannot call the async"),
        (
            "make_app",
            "yes",
            "TypeError",
            "serve() argument preload must be True, False or None, not str 'yes'",
        ),
        ("broken_factory", True, "StartupError", "tests.webapp:broken_factory"),
    ],
)
def test_preload_that_cannot_apply(app: str, preload: object, kind: str, message: str) -> None:
    got_kind, text = serving.refused(f"tests.webapp:{app}", preload=preload)
    assert (got_kind, text[: len(message)]) == (kind, message), text


CONNECTS = """
import logging, socket, sqlite3, threading
{body}
from tests.webapp import make_app
"""


@pytest.mark.parametrize(
    ("body", "warned"),
    [
        (
            "DB = sqlite3.connect({db!r})\nPEER = socket.create_connection(('127.0.0.1', {port}))",
            ["opened fd ", "sessions.db", "IPv4 stream socket connected to 127.0.0.1:{port}"],
        ),
        (
            "threading.Thread(target=threading.Event().wait, name='cache-refresher',"
            " daemon=True).start()",
            ["started 1 thread(s): cache-refresher", "start them in a factory"],
        ),
        # A log file in append mode is safe to share: no warning.
        ("logging.getLogger('app').addHandler(logging.FileHandler({log!r}))", []),
    ],
)
def test_what_the_import_leaves_in_the_parent_is_named_in_a_warning(
    body: str, warned: list[str], tmp_path: Path
) -> None:
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        code = body.format(db=str(tmp_path / "sessions.db"), port=port, log=str(tmp_path / "log"))
        (tmp_path / "connects.py").write_text(CONNECTS.format(body=code))
        argv = [*MODULE, "connects:make_app", "--processes=2", "--port=0"]
        with serving.running(argv=argv, env=_path(tmp_path)) as s:
            serving.url(s)
            warnings = s.matching("RuntimeWarning")
    if not warned:
        assert warnings == [], s.lines
        return
    (warning,) = warnings
    assert "importing connects (from 'connects:make_app')" in warning
    for text in warned:
        assert text.format(port=port) in warning, warning


@pytest.mark.tornado_api
@pytest.mark.parametrize("string", [False, True], ids=["function", "import-string"])
def test_a_main_called_in_the_parent_is_refused_at_once(string: bool) -> None:
    # With preload=True the factory runs in the parent: a main() that serves
    # the application itself would hold the parent there for good.
    kind, text = serving.refused("tests.mainapp:main_sync", string=string, preload=True)
    assert kind == "StartupError"
    assert text.startswith("tests.mainapp:main_sync called Application.listen() ("), text
    assert ") while the parent was building its application: it serves the application " in text
    assert "no worker would ever start" in text
    assert "e.g. tests.mainapp:make_app: the server listens for every worker" in text


def test_a_main_given_to_the_command_line_with_preload_is_one_line_and_exit_1() -> None:
    argv = [*MODULE, "tests.mainapp:main_sync", "--preload", "--processes=2", "--port=0"]
    with procs.Scenario(argv, merge=False) as s:
        code = s.finish(timeout=10)
    assert code == 1, s.stderr
    assert s.output == ""
    (line,) = s.stderr.splitlines()
    assert line.startswith(
        "tornado-prefork: error: tests.mainapp:main_sync called Application.listen() ("
    ), line
    assert "Point the server at a function that returns the tornado.web.Application" in line
