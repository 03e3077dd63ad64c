"""serve(metrics_port=...) on real processes: one scrape for the whole server."""

from __future__ import annotations

import http.client
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import tornado_prefork
from tests import procs, serving

METRICS_ON = re.compile(r"Metrics on (\S+)/metrics")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def metrics_url(s: procs.Scenario, timeout: float = 15) -> str:
    match = METRICS_ON.search(s.wait_line("Metrics on ", timeout=timeout)[0])
    assert match is not None, s.output
    return match.group(1)


def fetch(base: str, path: str) -> tuple[int, str]:
    conn = serving.connect(base, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def scrape(base: str) -> Samples:
    status, text = fetch(base, "/metrics")
    assert status == 200, text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def scrape_until(base: str, done: Callable[[Samples], bool], timeout: float = 10) -> Samples:
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(base)
        if done(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


def send(base: str, path: str, count: int, connections: int = 8) -> list[int]:
    """``count`` GETs over ``connections`` keep-alive connections at once; who answered."""
    pids: list[int] = []
    failures: list[str] = []

    def client(n: int) -> None:
        conn = serving.connect(base)
        try:
            for _ in range(n):
                conn.request("GET", path)
                response = conn.getresponse()
                body = response.read()
                if response.status != 200:
                    failures.append(f"{response.status} {body!r}")
                else:
                    pids.append(int(body.split(b'"pid": ')[1].split(b",")[0].rstrip(b"}")))
        except (OSError, http.client.HTTPException) as e:
            failures.append(repr(e))
        finally:
            conn.close()

    threads = [
        threading.Thread(target=client, args=(count // connections + (i < count % connections),))
        for i in range(connections)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures[:5]
    assert len(pids) == count
    return pids


@pytest.mark.tornado_api
def test_a_thousand_requests_over_two_workers_count_a_thousand(tmp_path: Path) -> None:
    env = {"TMPDIR": str(tmp_path)}
    with serving.running(metrics_port=0, env=env) as s:
        base, metrics = serving.url(s), metrics_url(s)
        pids = send(base, "/", 1000)
        assert len(set(pids)) == 2, "both workers answered"
        samples = scrape_until(
            metrics, lambda m: total(m, "tornado_prefork_requests_total") >= 1000
        )
        assert total(samples, "tornado_prefork_requests_total") == 1000
        assert (
            total(samples, "tornado_prefork_requests_total", method="GET", status_class="2xx")
            == 1000
        )
        assert total(samples, "tornado_prefork_request_duration_seconds_count") == 1000
        by_worker = {
            dict(labels)["worker"]: value
            for (name, labels), value in samples.items()
            if name == "tornado_prefork_worker_requests_total"
        }
        assert set(by_worker) == {"0", "1"} and sum(by_worker.values()) == 1000
        assert sorted(by_worker.values()) == sorted(map(pids.count, set(pids)))
        idle = scrape_until(
            metrics,
            lambda m: (
                total(m, "tornado_prefork_open_connections") == 0
                and total(m, "tornado_prefork_requests_in_flight") == 0
            ),
        )
        assert total(idle, "tornado_prefork_open_connections") == 0
        assert total(idle, "tornado_prefork_requests_in_flight") == 0
        assert total(idle, "tornado_prefork_workers") == 2
        assert total(idle, "tornado_prefork_info", version=tornado_prefork.__version__) == 1
        assert (directory := _metrics_directory(tmp_path)) is not None
    assert not directory.exists(), "the directory is removed at exit"


def _metrics_directory(tmp: Path) -> Path | None:
    return next(iter(tmp.glob("tornado-prefork-metrics-*")), None)


@pytest.mark.parametrize(
    "string",
    [
        # Imported by the parent before serve(): the metric exists before the directory.
        False,
        # Imported by each worker.
        True,
    ],
)
def test_an_application_counter_adds_up_over_the_workers(string: bool) -> None:
    with serving.running("tests.metricsapp:app", string=string, metrics_port=0) as s:
        base, metrics = serving.url(s), metrics_url(s)
        pids = send(base, "/hit", 200)
        assert len(set(pids)) == 2
        samples = scrape_until(metrics, lambda m: total(m, "app_hits_total") >= 200)
        assert total(samples, "app_hits_total", path="/hit") == 200


class Scraper:
    """Scrapes in a loop in a thread, keeping every scrape."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.scrapes: list[Samples] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + 60
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                self.scrapes.append(scrape(self.base))
            except (OSError, http.client.HTTPException, AssertionError) as e:
                self.failures.append(repr(e))
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


@pytest.mark.parametrize(
    ("string", "preload"),
    [
        # The code is in the parent: a reload re-executes the parent in place.
        (False, None),
        # Imported by each worker: a reload forks new workers.
        (True, False),
    ],
)
def test_counters_never_go_backwards_across_a_kill_and_a_reload(
    string: bool, preload: bool | None
) -> None:
    app = "tests.webapp:make_app"
    with serving.running(app, string=string, preload=preload, metrics_port=0) as s:
        base, metrics = serving.url(s), metrics_url(s)
        scraper = Scraper(metrics)
        with serving.Load(base) as load:
            while len(set(load.pids)) < 2:
                time.sleep(0.02)
            os.kill(load.pids[-1], signal.SIGKILL)
            s.wait_line("killed by signal 9")
            # Its successor is ready: the reload then replaces two live workers.
            s.wait_line("factory", count=3)
            ready = scrape_until(metrics, lambda m: total(m, "tornado_prefork_workers_ready") == 2)
            assert total(ready, "tornado_prefork_workers_ready") == 2
            s.signal(signal.SIGHUP)
            s.wait_line("reload finished")
            time.sleep(0.3)
        scraper.stop()
        # The last old worker may still be draining when the reload is reported finished.
        final = scrape_until(
            metrics,
            lambda m: (
                total(m, "tornado_prefork_worker_exits_total", reason="reloaded") == 2
                and total(m, "tornado_prefork_requests_in_flight") == 0
            ),
        )
        assert not scraper.failures, scraper.failures[:3]
        series = [total(m, "tornado_prefork_requests_total") for m in scraper.scrapes]
        assert len(series) > 20 and series[-1] > series[0]
        assert all(a <= b for a, b in pairwise(series)), series
        for worker in ("0", "1"):
            mine = [
                total(m, "tornado_prefork_worker_requests_total", worker=worker)
                for m in scraper.scrapes
            ]
            assert all(a <= b for a, b in pairwise(mine)), (worker, mine)
        # The killed worker may have sent its last response and died before counting it.
        assert total(final, "tornado_prefork_requests_total") >= len(load.pids) - 1
        assert total(final, "tornado_prefork_worker_exits_total", reason="crashed") == 1
        assert total(final, "tornado_prefork_worker_exits_total", reason="reloaded") == 2
        assert total(final, "tornado_prefork_reloads_total", result="ok") == 1
        assert total(final, "tornado_prefork_workers") == 2


@pytest.mark.tornado_api
def test_healthz_says_503_from_sigterm_while_the_drain_answers() -> None:
    with serving.running(metrics_port=0, graceful_timeout=10) as s:
        base, metrics = serving.url(s), metrics_url(s)
        assert fetch(metrics, "/healthz") == (200, "ok\n")
        answered: list[tuple[float, int]] = []

        def slow() -> None:
            status, _ = serving.get(base, "/slow?seconds=1.5")
            answered.append((time.monotonic(), status))

        client = threading.Thread(target=slow)
        client.start()
        s.wait_line("slow-start")
        s.signal(signal.SIGTERM)
        deadline = time.monotonic() + 1
        while fetch(metrics, "/healthz") != (503, "stopping\n"):
            assert time.monotonic() < deadline, "still healthy after SIGTERM"
            time.sleep(0.01)
        turned = time.monotonic()
        client.join(timeout=10)
        assert answered and answered[0][1] == 200
        assert turned < answered[0][0], "503 while the slow request was still being answered"
        assert s.finish(timeout=15) == 0


def test_the_endpoint_process_is_no_worker_and_holds_no_server_socket() -> None:
    with serving.running(metrics_port=0) as s:
        base, metrics = serving.url(s), metrics_url(s)
        server, endpoint = serving.port_of(base), serving.port_of(metrics)
        children = procs.children_of(s.pid)
        assert len(children) == 3
        workers = [pid for pid in children if procs.listening_inodes(pid, server)]
        sidecars = [pid for pid in children if procs.listening_inodes(pid, endpoint)]
        assert len(workers) == 2 and len(sidecars) == 1
        assert not set(workers) & set(sidecars)
        # The parent forks: it runs no thread, even with prometheus_client loaded.
        assert len(list(Path(f"/proc/{s.pid}/task").iterdir())) == 1
        assert total(scrape(metrics), "tornado_prefork_workers") == 2


def test_a_killed_endpoint_comes_back_with_the_same_totals() -> None:
    with serving.running(metrics_port=0) as s:
        base, metrics = serving.url(s), metrics_url(s)
        send(base, "/", 100)
        before = scrape_until(metrics, lambda m: total(m, "tornado_prefork_requests_total") == 100)
        assert total(before, "tornado_prefork_requests_total") == 100
        port = serving.port_of(metrics)
        endpoint = [pid for pid in procs.children_of(s.pid) if procs.listening_inodes(pid, port)]
        assert len(endpoint) == 1
        os.kill(endpoint[0], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while True:
            try:
                after = scrape(metrics)
                break
            except (OSError, http.client.HTTPException):
                assert time.monotonic() < deadline, "the endpoint did not come back"
                time.sleep(0.05)
        assert total(after, "tornado_prefork_requests_total") == 100
        assert total(after, "tornado_prefork_workers") == 2
        # It is no worker: its death is not counted as one.
        assert total(after, "tornado_prefork_worker_exits_total") == 0


def test_the_endpoint_leaves_a_unix_socket_in_place(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    with serving.running(processes=1, unix_socket=str(path), metrics_port=0) as s:
        assert serving.url(s) == f"unix:{path}"
        metrics = metrics_url(s)
        assert fetch(metrics, "/healthz") == (200, "ok\n")
        # The endpoint closed its copy of the listening socket without removing the file.
        assert path.exists()
        assert serving.get(f"unix:{path}")[0] == 200
        samples = scrape_until(metrics, lambda m: total(m, "tornado_prefork_requests_total") == 1)
        assert total(samples, "tornado_prefork_requests_total") == 1
    assert not path.exists()


def test_the_workers_published_are_the_fleets_across_a_kill_and_a_reload_in_place() -> None:
    # The parent's records are the one count of its workers: the metrics and
    # /healthz say what they hold after a worker is replaced, and after the
    # parent re-executed itself with the workers of the image before.
    ready, alive = "tornado_prefork_workers_ready", "tornado_prefork_workers"
    with serving.running("tests.webapp:make_app", metrics_port=0) as s:
        base, metrics = serving.url(s), metrics_url(s)
        port, parent = serving.port_of(base), s.pid

        def listening(pid: int) -> bool:
            try:
                return bool(procs.listening_inodes(pid, port))
            except FileNotFoundError:
                return False  # it ended meanwhile

        def published(count: int) -> list[int]:
            """The workers once the parent has ``count`` and says so: ready and alive."""
            deadline = time.monotonic() + 15
            while True:
                workers = [pid for pid in procs.children_of(parent) if listening(pid)]
                samples = scrape(metrics)
                if len(workers) == total(samples, ready) == total(samples, alive) == count:
                    return workers
                assert time.monotonic() < deadline, (workers, total(samples, ready), samples)
                time.sleep(0.05)

        first = published(2)
        os.kill(first[0], signal.SIGKILL)
        s.wait_line("killed by signal 9")
        replaced = published(2)
        assert first[0] not in replaced and first[1] in replaced
        assert fetch(metrics, "/healthz") == (200, "ok\n")
        scraper = Scraper(metrics)
        s.signal(signal.SIGHUP)
        s.wait_line("reloaded in place")
        s.wait_line("reload finished: 2 workers", timeout=20)
        reloaded = published(2)
        scraper.stop()
        assert s.pid == parent and not set(reloaded) & set(replaced)
        assert fetch(metrics, "/healthz") == (200, "ok\n")
        assert not scraper.failures, scraper.failures[:3]
        # The old workers count as ready until reaped, each after its successor is ready.
        during = [total(m, ready) for m in scraper.scrapes]
        assert len(during) > 5 and min(during) == 2, during
