"""The metrics pieces on their own: the directory, the endpoint, the refusals before any fork."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import pytest
from tornado.testing import AsyncHTTPTestCase
from tornado.web import Application

from tests import procs, serving
from tornado_prefork._metrics.endpoint import application, registry
from tornado_prefork._metrics.health import Health, Phase
from tornado_prefork._metrics.merge import MergingCollector

APP = "tests.webapp:app"


def test_metrics_made_before_the_directory_count_across_processes(tmp_path: Path) -> None:
    stale = tmp_path / "stale"
    stale.mkdir()
    # What an earlier run left: never read.
    (stale / "counter_1.db").write_bytes(b"garbage")
    result = procs.run(
        procs.scenario("metrics_early"),
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(stale), "TMPDIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    out = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert out["threads"] == "1"
    assert out["early"] == "2.0"
    assert out["plain"] == "4.0"
    assert out["exits"] == "1.0"
    path, set_in_env = out["dir"].split()
    assert set_in_env == "True"
    assert Path(path).parent == tmp_path and Path(path) != stale
    assert out["removed"] == "True"
    assert (stale / "counter_1.db").read_bytes() == b"garbage"


@pytest.mark.tornado_api
class EndpointTest(AsyncHTTPTestCase):
    def setUp(self) -> None:
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        self.directory = directory.name
        self.health = Health()
        super().setUp()

    def get_app(self) -> Application:
        return application(registry(self.directory, self.health, "9.9.9"), self.health)

    def publish(self, phase: Phase, ready: int, alive: int) -> None:
        self.health.publish_workers(ready, alive)
        self.health.publish_phase(phase)

    def test_healthz_follows_the_parent(self) -> None:
        def check(code: int, body: bytes) -> None:
            response = self.fetch("/healthz")
            assert (response.code, response.body) == (code, body)

        check(503, b"starting\n")
        self.publish(Phase.SERVING, ready=1, alive=2)
        check(200, b"ok\n")
        self.publish(Phase.SERVING, ready=0, alive=1)
        check(503, b"no worker is ready\n")
        self.publish(Phase.STOPPING, ready=2, alive=2)
        check(503, b"stopping\n")

    def test_metrics_show_the_version_and_the_workers(self) -> None:
        self.publish(Phase.SERVING, ready=3, alive=4)
        response = self.fetch("/metrics")
        assert response.code == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        lines = response.body.decode().splitlines()
        assert 'tornado_prefork_info{version="9.9.9"} 1.0' in lines
        assert "tornado_prefork_workers 4.0" in lines
        assert "tornado_prefork_workers_ready 3.0" in lines


def test_missing_prometheus_client_is_named_before_any_fork() -> None:
    kind, message = serving.refused(APP, hide=("prometheus_client",), port=0, metrics_port=0)
    assert (kind, message) == (
        "StartupError",
        "metrics_port needs prometheus_client: pip install 'tornado-prefork[metrics]'",
    )


def test_missing_prometheus_client_on_the_command_line(tmp_path: Path) -> None:
    argv = procs.scenario("command", "--hide", "prometheus_client", "--")
    argv += [APP, "--port", "0", "--metrics-port", "0"]
    result = procs.run(argv, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "tornado-prefork: error: metrics_port needs prometheus_client: "
        "pip install 'tornado-prefork[metrics]'"
    ]
    # The directory made for the values was removed again.
    assert list(tmp_path.iterdir()) == []


def test_metrics_port_in_use_is_named() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        kind, message = serving.refused(APP, port=0, address="127.0.0.1", metrics_port=port)
    assert kind == "StartupError"
    assert message == (
        f"metrics endpoint (metrics_port): cannot listen on 127.0.0.1:{port}: "
        "address already in use"
    )


def test_metrics_port_must_be_a_port() -> None:
    assert serving.refused(APP, port=0, metrics_port=70000) == (
        "ValueError",
        "serve() argument metrics_port must be from 0 to 65535, not 70000",
    )


def test_the_merging_collector_says_what_prometheus_client_says() -> None:
    result = procs.run(procs.scenario("metrics_merge"))
    assert result.returncode == 0, result.stderr
    first, second = (int(line.split()[1]) for line in result.stdout.splitlines())
    assert first > 50 and second > first


def test_a_file_still_being_created_is_skipped(tmp_path: Path) -> None:
    # A new process opens its file, then sizes it, then writes how much is used.
    (tmp_path / "counter_101.db").write_bytes(b"")
    (tmp_path / "counter_102.db").write_bytes(bytes(4096))
    collector = MergingCollector(str(tmp_path))
    assert list(collector.collect()) == []
    assert list(collector.collect()) == []


def test_a_parent_that_reexecutes_itself_keeps_its_metrics() -> None:
    # A parent that re-executes itself in place hands its metrics over: the new
    # image writes the memory and the directory that the running endpoint reads.
    result = procs.run(procs.scenario("metrics_reexec"), timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "first 200 ok",
        "adopted 200 ok",
        "crashed 2.0",
        "ready 1.0",
        "stopping 503 stopping",
        "removed True",
    ]


def test_the_directory_is_in_memory_unless_tmpdir_says_otherwise(tmp_path: Path) -> None:
    code = procs.scenario("metrics_dir")
    env = {k: v for k, v in os.environ.items() if k != "TMPDIR"}
    in_memory = procs.run(code, env=env)
    assert in_memory.stdout.startswith("/dev/shm/tornado-prefork-metrics-"), in_memory.stderr
    chosen = procs.run(code, env={**env, "TMPDIR": str(tmp_path)})
    assert chosen.stdout.startswith(f"{tmp_path}/tornado-prefork-metrics-"), chosen.stderr
    assert list(tmp_path.iterdir()) == []
