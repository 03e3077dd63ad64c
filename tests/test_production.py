"""Privileges, the X-Forwarded-For guard, logging, and the testing helpers."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient
from tornado.testing import AsyncTestCase

from tests import procs, serving
from tests.procs import ids
from tests.serving import live_workers
from tornado_prefork.testing import RunningServer, running_server

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")


@root_only
def test_workers_drop_to_the_user_the_parent_stays_root(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    sock = tmp_path / "app.sock"
    with serving.running(user="nobody", group="nogroup", unix_socket=str(sock)) as s:
        serving.url(s)
        workers = live_workers(s, 2)
        for pid in workers:
            assert ids(pid, "Uid") == [65534] * 4
            assert ids(pid, "Gid")[0] == 65534
            assert ids(pid, "Groups") == [65534]
        assert ids(s.pid, "Uid")[0] == 0
        assert (sock.stat().st_uid, sock.stat().st_gid) == (65534, 65534)
        assert serving.get(f"unix:{sock}")[1]["pid"] in workers


def test_user_refused_when_not_root() -> None:
    kind, message = serving.refused(
        "tests.webapp:app", as_nobody=os.geteuid() == 0, port=0, user="nobody"
    )
    assert kind == "StartupError"
    assert message.startswith("--user/--group need the server to start as root")


@root_only
def test_unknown_user_and_group_refused() -> None:
    refused = serving.refused
    assert refused("tests.webapp:app", port=0, user="no-such-user")[1] == (
        "no such user: no-such-user"
    )
    assert refused("tests.webapp:app", port=0, group="no-such-group")[1] == (
        "no such group: no-such-group"
    )


@pytest.mark.tornado_api
@pytest.mark.parametrize(
    ("allowed", "seen"),
    [("127.0.0.1", "10.1.2.3"), ("10.9.9.9", "127.0.0.1"), ("*", "10.1.2.3")],
)
def test_forwarded_headers_trusted_only_from_listed_proxies(allowed: str, seen: str) -> None:
    with serving.running(processes=1, xheaders=True, forwarded_allow_ips=allowed) as s:
        base = serving.url(s)
        conn = serving.connect(base)
        conn.request("GET", "/", headers={"X-Forwarded-For": "10.1.2.3"})
        assert json.loads(conn.getresponse().read())["remote_ip"] == seen
        conn.close()


@pytest.mark.tornado_api
@pytest.mark.parametrize("access_log", [True, False])
def test_every_line_says_which_process_wrote_it(access_log: bool) -> None:
    flag = "--access-log" if access_log else "--no-access-log"
    argv = [serving.COMMAND, "tests.webapp:app", "--processes=2", "--port=0", flag]
    with serving.running(argv=argv) as s:
        base = serving.url(s)
        workers = live_workers(s, 2)
        for _ in range(6):
            serving.get(base)
    assert f"master {s.pid} " in s.output and "Serving on" in s.output
    assert any(f"worker {i} {pid} " in s.output for i in (0, 1) for pid in workers)
    requests = s.matching("200 GET / (127.0.0.1)")
    if access_log:
        assert len(requests) == 6 and all(" worker " in line for line in requests)
    else:
        assert requests == []


def test_sigusr1_reopens_log_files(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with serving.running(log_file=log) as s:
        base = serving.url(s)
        serving.get(base)
        log.rename(tmp_path / "server.log.1")  # what logrotate does
        s.signal(signal.SIGUSR1)
        deadline = time.monotonic() + 5
        # The parent and each worker say so in their new file.
        while not log.exists() or log.read_text().count("log files reopened") < 3:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        for _ in range(4):
            serving.get(base)
    fresh = log.read_text()
    assert fresh.count("200 GET /") == 4
    assert "stopping 2 workers gracefully" in fresh  # the parent's file was reopened too
    assert (tmp_path / "server.log.1").read_text().count("200 GET /") == 1


@pytest.mark.tornado_api
def test_running_server_context_manager() -> None:
    with running_server("tests.webapp:make_app", processes=2, graceful_timeout=5) as server:
        assert isinstance(server, RunningServer) and len(server.worker_pids) == 2
        with urllib.request.urlopen(server.url + "/") as response:
            assert json.load(response)["ppid"] == server.pid
    assert all(not procs.alive(pid) for pid in server.worker_pids)


@pytest.mark.tornado_api
def test_running_server_reports_a_server_that_does_not_stop_cleanly() -> None:
    with (
        pytest.raises(AssertionError, match="exited with status"),
        running_server("tests.webapp:make_app", processes=1) as server,
    ):
        os.kill(server.pid, signal.SIGKILL)
    assert not procs.alive(server.pid)


@pytest.mark.tornado_api
def test_prefork_server_fixture(prefork_server: object) -> None:
    server = prefork_server("tests.webapp:make_app", processes=2)  # type: ignore[operator]
    with urllib.request.urlopen(server.url + "/") as response:
        assert json.load(response)["pid"] in server.worker_pids


@pytest.mark.tornado_api
class RunningServerInAsyncTestCase(AsyncTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.server = running_server("tests.webapp:make_app", processes=2)
        self.url = self.server.__enter__().url

    def tearDown(self) -> None:
        self.server.__exit__(None, None, None)
        super().tearDown()

    def test_answers(self) -> None:
        with urllib.request.urlopen(self.url + "/") as response:
            assert json.load(response)["task_id"] in (0, 1)


async def test_prefork_server_fixture_with_tornasync(prefork_server: Any, io_loop: Any) -> None:
    # The README's example, as written there.
    server = prefork_server("tests.webapp:make_app", processes=2, graceful_timeout=5)
    response = await AsyncHTTPClient().fetch(server.url + "/")
    assert response.code == 200


def test_process_titles_with_the_setproctitle_extra(tmp_path: Path) -> None:
    # A stand-in for the extra that records each title it is given.
    (tmp_path / "setproctitle.py").write_text(
        "import os\n"
        "def setproctitle(title):\n"
        "    with open(os.environ['TITLES'], 'a') as f:\n"
        "        f.write(f'{os.getpid()} {title}\\n')\n"
    )
    titles = tmp_path / "titles"
    env = {"PYTHONPATH": str(tmp_path), "TITLES": str(titles)}
    with serving.running(env=env) as s:
        serving.url(s)
        workers = live_workers(s, 2)
    seen = dict(line.split(" ", 1) for line in titles.read_text().splitlines())
    assert seen[str(s.pid)] == "tornado-prefork: master tests.webapp:make_app"
    assert sorted(seen[str(pid)] for pid in workers) == [
        "tornado-prefork: worker 0",
        "tornado-prefork: worker 1",
    ]
