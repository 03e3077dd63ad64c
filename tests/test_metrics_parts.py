"""The metrics pieces on their own: the directory, the endpoint, the refusals before any fork."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

from tornado.testing import AsyncHTTPTestCase
from tornado.web import Application

from tests import procs
from tests.test_serve_errors import attempt
from tornado_prefork._metrics_endpoint import application, registry
from tornado_prefork._metrics_health import Health, Phase
from tornado_prefork._metrics_merge import MergingCollector

# Forks two children that each count once on a counter the module defined
# before the directory was set up, and prints what a scrape adds up.
EARLY_METRIC = """
import os, threading
import prometheus_client
early = prometheus_client.Counter("early_things", "made at import", ["kind"])
plain = prometheus_client.Counter("plain_things", "made at import")
early.labels("a")  # a child made before the switch must move too
from tornado_prefork._metrics_dir import MetricsDirectory
from tornado_prefork._metrics_instruments import SupervisorMetrics
directory = MetricsDirectory()
from tornado_prefork._processes import ExitReason
SupervisorMetrics().worker_exited(ExitReason.CRASHED)
print("threads", threading.active_count())
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        early.labels("a").inc()
        plain.inc(2)
        os._exit(0)
    os.waitpid(pid, 0)
registry = prometheus_client.CollectorRegistry()
from prometheus_client.multiprocess import MultiProcessCollector
MultiProcessCollector(registry, directory.path)
print("early", registry.get_sample_value("early_things_total", {"kind": "a"}))
print("plain", registry.get_sample_value("plain_things_total"))
exits = "tornado_prefork_worker_exits_total"
print("exits", registry.get_sample_value(exits, {"reason": "crashed"}))
print("dir", directory.path, os.environ["PROMETHEUS_MULTIPROC_DIR"] == directory.path)
directory.remove()
print("removed", not os.path.exists(directory.path))
"""


def test_metrics_made_before_the_directory_count_across_processes(tmp_path: Path) -> None:
    stale = tmp_path / "stale"
    stale.mkdir()
    # What an earlier run left: never read.
    (stale / "counter_1.db").write_bytes(b"garbage")
    result = procs.run(
        EARLY_METRIC,
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


class EndpointTest(AsyncHTTPTestCase):
    def setUp(self) -> None:
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        self.directory = directory.name
        self.health = Health()
        super().setUp()

    def get_app(self) -> Application:
        return application(registry(self.directory, self.health, "9.9.9"), self.health)

    def test_healthz_follows_the_parent(self) -> None:
        def check(code: int, body: bytes) -> None:
            response = self.fetch("/healthz")
            assert (response.code, response.body) == (code, body)

        check(503, b"starting\n")
        self.health.publish(Phase.SERVING, ready=1, alive=2)
        check(200, b"ok\n")
        self.health.publish(Phase.SERVING, ready=0, alive=1)
        check(503, b"no worker is ready\n")
        self.health.publish(Phase.STOPPING, ready=2, alive=2)
        check(503, b"stopping\n")

    def test_metrics_show_the_version_and_the_workers(self) -> None:
        self.health.publish(Phase.SERVING, ready=3, alive=4)
        response = self.fetch("/metrics")
        assert response.code == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        lines = response.body.decode().splitlines()
        assert 'tornado_prefork_info{version="9.9.9"} 1.0' in lines
        assert "tornado_prefork_workers 4.0" in lines
        assert "tornado_prefork_workers_ready 3.0" in lines


def test_missing_prometheus_client_is_named_before_any_fork(tmp_path: Path) -> None:
    hide = "sys.modules['prometheus_client'] = None"
    kind, message = attempt("webapp.app, 0, metrics_port=0", tmp_path, before=hide)
    assert (kind, message) == (
        "StartupError",
        "metrics_port needs prometheus_client: pip install 'tornado-prefork[metrics]'",
    )


def test_missing_prometheus_client_on_the_command_line(tmp_path: Path) -> None:
    code = """
    import sys
    sys.modules['prometheus_client'] = None
    from tornado_prefork.cli import main
    sys.exit(main(["tests.webapp:app", "--port", "0", "--metrics-port", "0"]))
    """
    result = procs.run(code, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "tornado-prefork: error: metrics_port needs prometheus_client: "
        "pip install 'tornado-prefork[metrics]'"
    ]
    # The directory made for the values was removed again.
    assert list(tmp_path.iterdir()) == []


def test_metrics_port_in_use_is_named(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        kind, message = attempt(f"webapp.app, 0, '127.0.0.1', metrics_port={port}", tmp_path)
    assert kind == "StartupError"
    assert message == (
        f"metrics endpoint (metrics_port): cannot listen on 127.0.0.1:{port}: "
        "address already in use"
    )


def test_metrics_port_must_be_a_port(tmp_path: Path) -> None:
    assert attempt("webapp.app, 0, metrics_port=70000", tmp_path) == (
        "ValueError",
        "serve() argument metrics_port must be from 0 to 65535, not 70000",
    )


# Three processes write every kind of metric and every gauge mode; the merging
# collector must say what prometheus_client's own says, before and after one
# process is marked dead and the others add new series and values.
SAME_AS_PROMETHEUS = """
import os, sys, time
from tornado_prefork._metrics_dir import MetricsDirectory
directory = MetricsDirectory()
import prometheus_client as p
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from tornado_prefork._metrics_merge import MergingCollector
counter = p.Counter("c", "a counter", ["kind"], registry=None)
histogram = p.Histogram("h", "a histogram", ["kind"], registry=None)
summary = p.Summary("s", "a summary", registry=None)
modes = ["all", "liveall", "min", "livemin", "max", "livemax", "sum", "livesum",
         "mostrecent", "livemostrecent"]
gauges = {m: p.Gauge("g_" + m, "gauge " + m, multiprocess_mode=m, registry=None) for m in modes}
def work(n, extra):
    for i in range(n):
        counter.labels("a" if i % 2 else "b").inc(i + 1)
        histogram.labels(extra).observe(0.003 * i)
        summary.observe(i)
    for k, m in enumerate(modes):
        gauges[m].set(n * 10 + k)
        time.sleep(0.001)
def run(n, extra):
    pid = os.fork()
    if pid == 0:
        work(n, extra)
        os._exit(0)
    os.waitpid(pid, 0)
    return pid
ours = p.CollectorRegistry(); ours.register(MergingCollector(directory.path))
theirs = p.CollectorRegistry(); MultiProcessCollector(theirs, directory.path)
def same():
    a = sorted(p.generate_latest(ours).decode().splitlines())
    b = sorted(p.generate_latest(theirs).decode().splitlines())
    assert a == b, "\\n".join(sorted(set(a) ^ set(b)))
    return len(a)
pids = [run(n, "x") for n in (3, 5, 7)]
work(2, "p")
print("first", same())
mark_process_dead(pids[0], directory.path)
run(4, "y")
work(3, "q")  # new series appended to files already read
print("second", same())
directory.remove()
"""


def test_the_merging_collector_says_what_prometheus_client_says() -> None:
    result = procs.run(SAME_AS_PROMETHEUS)
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


# A parent that re-executes itself in place hands its metrics over: the new
# image writes the memory and the directory that the running endpoint reads.
REEXEC = """
import json, os, signal, sys, time, types, urllib.request
from urllib.error import HTTPError
from tornado_prefork._processes import ExitReason
from tornado_prefork._metrics import ServerMetrics
from tornado_prefork import _fork
from tornado_prefork._handover import Adopted, Handover

def get(url, path):
    try:
        with urllib.request.urlopen(url.removesuffix("/metrics") + path, timeout=5) as r:
            return r.status, r.read().decode().strip()
    except HTTPError as e:
        return e.code, e.read().decode().strip()

def wait_up(url):
    for _ in range(200):
        try:
            return get(url, "/healthz")
        except OSError:
            time.sleep(0.02)

worker = types.SimpleNamespace(pid=424242, slot=0, seat=0)
if len(sys.argv) == 1:
    metrics = ServerMetrics.start(0, "127.0.0.1")
    url = metrics.urls[0]
    parent = os.getpid()
    endpoint = os.fork()
    if endpoint == 0:
        _fork.child_init(parent)(None)
        metrics.endpoint().run()
        os._exit(0)
    metrics.worker_started(worker)
    metrics.worker_ready(worker)
    metrics.worker_exited(types.SimpleNamespace(pid=1, slot=1, seat=1), ExitReason.CRASHED)
    print("first", *wait_up(url), flush=True)
    handover = Handover([], 0, 1)
    metrics.hand_over(handover)
    state = json.dumps({"extras": handover.extras, "endpoint": endpoint, "url": url})
    os.execv(sys.executable, [sys.executable, "-c", CODE, state])
else:
    state = json.loads(sys.argv[1])
    adopted = [Adopted("worker 0", 0, 0, worker.pid, None, 0, "ready", 0.0)]
    metrics = ServerMetrics.adopt(state["extras"], adopted)
    url = state["url"]
    print("adopted", *get(url, "/healthz"), flush=True)
    metrics.worker_exited(types.SimpleNamespace(pid=2, slot=1, seat=1), ExitReason.CRASHED)
    text = get(url, "/metrics")[1]
    crashed = [l for l in text.splitlines() if 'reason="crashed"' in l]
    print("crashed", crashed[0].split()[-1], flush=True)
    workers = [l for l in text.splitlines() if l.startswith("tornado_prefork_workers_ready ")]
    print("ready", workers[0].split()[-1], flush=True)
    metrics.stopping()
    print("stopping", *get(url, "/healthz"), flush=True)
    os.kill(state["endpoint"], signal.SIGTERM)
    os.waitpid(state["endpoint"], 0)
    metrics.close()
    print("removed", not os.path.exists(state["extras"]["metrics_dir"]))
"""


def test_a_parent_that_reexecutes_itself_keeps_its_metrics() -> None:
    # The image after the exec runs the same code, given as CODE.
    code = "CODE = " + repr(REEXEC) + "\n" + REEXEC
    result = procs.run(code, timeout=30)
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
    code = """
    from tornado_prefork._metrics_dir import MetricsDirectory
    directory = MetricsDirectory()
    print(directory.path)
    directory.remove()
    """
    env = {k: v for k, v in os.environ.items() if k != "TMPDIR"}
    in_memory = procs.run(code, env=env)
    assert in_memory.stdout.startswith("/dev/shm/tornado-prefork-metrics-"), in_memory.stderr
    chosen = procs.run(code, env={**env, "TMPDIR": str(tmp_path)})
    assert chosen.stdout.startswith(f"{tmp_path}/tornado-prefork-metrics-"), chosen.stderr
    assert list(tmp_path.iterdir()) == []
