"""health_port: /healthz alone, with no extra installed (prometheus_client
hidden here), through the server's life: starting, serving, a reload in
place, a stop with a shutdown delay, the drain."""

from __future__ import annotations

import re
import signal
import threading
import time
from pathlib import Path

from tests import procs, serving
from tests.test_metrics_serve import fetch

HEALTH_ON = re.compile(r"Health on (\S+)/healthz")


def health_url(s: procs.Scenario) -> str:
    match = HEALTH_ON.search(s.wait_line("Health on ")[0])
    assert match is not None, s.output
    return match.group(1)


def test_healthz_alone_needs_no_extra_and_says_503_from_sigterm_through_the_drain() -> None:
    settings = {"health_port": 0, "shutdown_delay": 0.5, "graceful_timeout": 10}
    with serving.running(hide=("prometheus_client",), **settings) as s:
        base, health = serving.url(s), health_url(s)
        assert fetch(health, "/healthz") == (200, "ok\n")
        assert fetch(health, "/metrics")[0] == 404
        answered: list[int] = []

        def slow() -> None:
            answered.append(serving.get(base, "/slow?seconds=1.5")[0])

        client = threading.Thread(target=slow)
        client.start()
        s.wait_line("slow-start")
        s.signal(signal.SIGTERM)
        told = time.monotonic()
        while fetch(health, "/healthz") != (503, "stopping\n"):
            assert time.monotonic() - told < 0.5, "still healthy after SIGTERM"
            time.sleep(0.01)
        # Through the delay and the drain that follows it, the probe says 503.
        while client.is_alive():
            assert fetch(health, "/healthz") == (503, "stopping\n")
            time.sleep(0.05)
        assert answered == [200]
        assert s.finish(timeout=15) == 0
    assert not s.matching("prometheus")


def test_the_health_endpoint_lives_across_a_reload_in_place(tmp_path: Path) -> None:
    (tmp_path / "hotapp.py").write_text(serving.HOT_APP.format(version="one", extra=""))
    with serving.hot_server(tmp_path, preload=None, health_port=0) as s:
        base, health = serving.url(s), health_url(s)
        before = procs.every_child(s.pid)
        s.signal(signal.SIGHUP)
        s.wait_line("reloaded in place")
        s.wait_line("reload finished: 2 workers")
        assert fetch(health, "/healthz") == (200, "ok\n")
        assert serving.get(base, "/")[0] == 200
        # The endpoint process is the same one: taken over, not restarted.
        assert set(procs.every_child(s.pid)) & set(before)
