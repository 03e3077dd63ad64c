"""Development mode: the file watcher, --reload on a real save, Tornado's autoreload kept off."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import procs, serving
from tests.serving import MODULE
from tornado_prefork._reload import watcher as _watcher

DEVAPP = """
from tornado.web import Application, RequestHandler

class Version(RequestHandler):
    def get(self):
        self.write({{"version": "{version}"}})

def make_app():
    return Application([(r"/", Version)])
"""


def write_app(directory: Path, version: str) -> None:
    (directory / "devapp.py").write_text(DEVAPP.format(version=version))


@pytest.fixture(params=["polling", "watchfiles"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def first_burst(root: Path, backend: str, action: object = None, limit: float = 10) -> list[str]:
    """The first burst of changes; ``action`` runs in a thread once the watch is in place."""
    deadline = time.monotonic() + limit
    threads = [threading.Thread(target=action)] if action is not None else []  # type: ignore[arg-type]

    def watching() -> None:
        for thread in threads:
            thread.start()

    changes: Iterator[list[str]] = _watcher.changes(
        str(root),
        lambda: time.monotonic() > deadline,
        use_watchfiles=backend == "watchfiles",
        watching=watching,
    )
    try:
        return next(changes, [])
    finally:
        for thread in threads:
            if thread.ident is not None:  # started: the watch came up
                thread.join()


def test_a_save_is_one_burst_and_caches_are_ignored(tmp_path: Path, backend: str) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__pycache__").mkdir()
    source = tmp_path / "pkg" / "views.py"
    source.write_text("x = 1\n")

    def save() -> None:
        (tmp_path / "pkg" / "__pycache__" / "views.py").write_text("cached")
        (tmp_path / "notes.txt").write_text("not watched")
        time.sleep(0.6)
        # An editor's save: write, then write again at once.
        source.write_text("x = 2\n")
        source.write_text("x = 22\n")

    started = time.monotonic()
    assert first_burst(tmp_path, backend, save) == [str(source)]
    assert time.monotonic() - started < 5


def test_a_removed_file_is_a_change(tmp_path: Path, backend: str) -> None:
    gone = tmp_path / "old.py"
    gone.write_text("")
    assert first_burst(tmp_path, backend, gone.unlink) == [str(gone)]


def test_no_change_no_burst(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("")
    assert first_burst(tmp_path, "polling", limit=1.5) == []
    assert first_burst(tmp_path, "watchfiles", limit=1.5) == []


def get_version(base: str) -> str:
    status, body = serving.get(base)
    assert status == 200
    return str(body["version"])


def wait_version(s: procs.Scenario, base: str, version: str, limit: float = 20) -> None:
    deadline = time.monotonic() + limit
    while get_version(base) != version:
        assert time.monotonic() < deadline, s.output
        time.sleep(0.1)


def test_reload_on_save_keeps_serving_through_a_typo(tmp_path: Path, backend: str) -> None:
    write_app(tmp_path, "v1")
    env = {}
    if backend == "polling":
        # The fallback, as on a machine without the extra.
        hide = tmp_path / "hide"
        hide.mkdir()
        (hide / "watchfiles.py").write_text("raise ImportError('not installed')\n")
        env["PYTHONPATH"] = str(hide)
    argv = [*MODULE, "devapp:make_app", f"--app-dir={tmp_path}", "--reload"]
    argv += ["--port=0", "--processes=1", "--graceful-timeout=2"]
    with serving.running(argv=argv, env=env) as s:
        base = serving.url(s)
        assert get_version(base) == "v1"
        # The watcher says so once its watch is in place.
        (watching,) = s.wait_line(f"reloading on changes under {tmp_path} ({backend}", timeout=10)
        assert " file watcher " in watching, watching
        # Same size as before: a stale .pyc must not hide it.
        write_app(tmp_path, "v2")
        wait_version(s, base, "v2")
        (tmp_path / "devapp.py").write_text("def make_app(:\n")
        s.wait_line("reload refused", timeout=15)
        assert get_version(base) == "v2"
        write_app(tmp_path, "v3")
        wait_version(s, base, "v3")
        s.stop(timeout=15, group=True)
    output = s.output
    assert output.count("reload refused") == 1, output
    assert "syntax error at" in output
    assert not list(tmp_path.glob("__pycache__/devapp*"))


@pytest.mark.tornado_api
def test_tornado_debug_mode_is_off_in_workers_with_one_warning(tmp_path: Path) -> None:
    (tmp_path / "debugapp.py").write_text(
        "from tornado.web import Application\nfrom tests.settingsapp import ParamsHandler\n"
        "def make_app():\n    return Application([(r'/', ParamsHandler)], debug=True)\n"
    )
    argv = [*MODULE, "debugapp:make_app", f"--app-dir={tmp_path}", "--port=0", "--processes=2"]
    with serving.running(argv=argv) as s:
        base = serving.url(s)
        workers = {serving.get(base)[1]["pid"] for _ in range(8)}
        # Tornado's autoreload notes the files' times half a second after the
        # start, then re-execs a worker within half a second of a change.
        time.sleep(1.0)
        os.utime(tmp_path / "debugapp.py", (time.time() + 5, time.time() + 5))
        time.sleep(1.5)
        assert procs.children_of(s.pid) and set(procs.children_of(s.pid)) >= workers
        s.stop(timeout=15, group=True)
    output = s.output
    assert output.count("the application asks for autoreload") == 1, output
    assert "--reload" in output
    assert "address already in use" not in output and "restarting" not in output
