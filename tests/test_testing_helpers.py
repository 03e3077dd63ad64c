"""tornado_prefork.testing: fails fast, closes what it opens, finds apps elsewhere, is a plugin."""

from __future__ import annotations

import gc
import importlib.metadata
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tornado_prefork.testing import running_server

pytestmark = pytest.mark.tornado_api

ELSEWHERE = """
from tornado.web import Application, RequestHandler

class Here(RequestHandler):
    def get(self):
        self.write({"where": __file__})

def make_app():
    return Application([(r"/", Here)])
"""


@pytest.mark.filterwarnings("error::ResourceWarning")
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_a_server_that_cannot_start_fails_at_once_and_closes_its_pipes() -> None:
    started = time.monotonic()
    with (
        pytest.raises(AssertionError, match="exited with status 1 before serving") as caught,
        running_server("tests.nosuch:app", processes=1, timeout=30),
    ):
        raise AssertionError("never reached")
    assert time.monotonic() - started < 10
    assert "cannot import tests.nosuch" in str(caught.value)
    gc.collect()


@pytest.mark.filterwarnings("error::ResourceWarning")
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_app_dir_and_cwd(tmp_path: Path) -> None:
    (tmp_path / "elsewhere.py").write_text(ELSEWHERE)
    with running_server("elsewhere:make_app", processes=1, app_dir=tmp_path) as server:
        assert where(server.url) == str(tmp_path / "elsewhere.py")
    with running_server("elsewhere:make_app", processes=1, cwd=tmp_path) as server:
        assert where(server.url) == str(tmp_path / "elsewhere.py")
    gc.collect()


def where(url: str) -> str:
    with urllib.request.urlopen(url + "/") as response:
        return str(json.load(response)["where"])


def test_the_fixture_is_a_pytest_plugin() -> None:
    plugins = importlib.metadata.entry_points(group="pytest11")
    assert [p.value for p in plugins if p.name == "tornado_prefork"] == ["tornado_prefork.testing"]


def test_a_users_suite_gets_the_fixture_without_a_conftest(tmp_path: Path) -> None:
    (tmp_path / "elsewhere.py").write_text(ELSEWHERE)
    (tmp_path / "test_user.py").write_text(
        "import json, urllib.request\n"
        "from tornado.httpclient import AsyncHTTPClient\n"
        "def test_sync(prefork_server):\n"
        "    server = prefork_server('elsewhere:make_app', processes=1)\n"
        "    with urllib.request.urlopen(server.url) as response:\n"
        "        assert 'elsewhere.py' in json.load(response)['where']\n"
        "async def test_tornasync(prefork_server, io_loop):\n"
        "    server = prefork_server('elsewhere:make_app', processes=1)\n"
        "    response = await AsyncHTTPClient().fetch(server.url)\n"
        "    assert response.code == 200\n"
    )
    # The filters the README gives for pytest-tornasync on pytest 9.
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nfilterwarnings =\n    error\n"
        "    ignore::pytest.PytestRemovedIn10Warning\n"
        "    ignore:make_current is deprecated:DeprecationWarning\n"
        "    ignore:clear_current is deprecated:DeprecationWarning\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_user.py"],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


# A logging configuration that hides every INFO line.
QUIET = {
    "version": 1,
    "handlers": {"h": {"class": "logging.StreamHandler"}},
    "root": {"level": "WARNING", "handlers": ["h"]},
}


@pytest.mark.parametrize("hidden_by", ["log_level", "log_config"])
def test_ready_whatever_the_logging_hides(hidden_by: str, tmp_path: Path) -> None:
    # The server logs no INFO line; every worker must still be ready at the yield.
    (tmp_path / "quiet.json").write_text(json.dumps(QUIET))
    options = {"log_level": "warning", "log_config": str(tmp_path / "quiet.json")}
    quiet = {hidden_by: options[hidden_by]}
    with running_server("tests.webapp:slow_factory", processes=2, timeout=10, **quiet) as server:
        assert not [line for line in server.output if "Serving on" in line], server.output
        assert len(server.worker_pids) == 2
        for _ in range(4):
            assert pid(server.url) in server.worker_pids


def test_url_of_every_interface_and_of_a_unix_socket(tmp_path: Path) -> None:
    for options in [{"address": "None"}, {"address": "None", "reuse_port": True}]:
        with running_server("tests.webapp:make_app", processes=2, **options) as server:
            assert server.url.startswith("http://127.0.0.1:")
            assert pid(server.url) in server.worker_pids
    sock = tmp_path / "app.sock"
    with running_server("tests.webapp:make_app", processes=1, unix_socket=sock) as server:
        assert server.url == f"unix:{sock}"
        assert sock.is_socket()


def pid(url: str) -> int:
    with urllib.request.urlopen(url + "/") as response:
        return int(json.load(response)["pid"])
