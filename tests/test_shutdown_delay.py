"""shutdown_delay: after SIGTERM the server keeps accepting while /healthz
says 503, then drains, so that a load balancer stops sending first; on a
fresh server and on one older than its timeouts."""

from __future__ import annotations

import signal
import time

import pytest

from tests import serving
from tests.test_metrics_serve import fetch, metrics_url

DELAY = 1.5


@pytest.mark.parametrize("aged", [0.0, 3.0], ids=["fresh", "aged"])
def test_after_sigterm_it_accepts_for_the_delay_saying_503_then_drains(aged: float) -> None:
    with serving.running(metrics_port=0, shutdown_delay=DELAY, timeout=2) as s:
        base, metrics = serving.url(s), metrics_url(s)
        time.sleep(aged)
        assert fetch(metrics, "/healthz") == (200, "ok\n")
        s.signal(signal.SIGTERM)
        told = time.monotonic()
        while fetch(metrics, "/healthz") != (503, "stopping\n"):
            assert time.monotonic() - told < 0.5, "still healthy after SIGTERM"
            time.sleep(0.01)
        # New connections are still accepted and answered until the delay is over.
        served = 0
        while time.monotonic() - told < DELAY - 0.3:
            assert serving.get(base, "/")[0] == 200
            served += 1
            time.sleep(0.05)
        assert served >= 10
        assert s.finish(timeout=10) == 0
        ended = time.monotonic()
        assert ended - told >= DELAY, "drained before the shutdown delay was over"
        assert s.matching(f"stopping in {DELAY:.1f} s (shutdown_delay)")


def test_a_second_sigterm_during_the_delay_drains_at_once() -> None:
    with serving.running(shutdown_delay=30.0) as s:
        serving.url(s)
        s.signal(signal.SIGTERM)
        s.wait_line("stopping in 30.0 s")
        s.signal(signal.SIGTERM)
        assert s.finish(timeout=10) == 0
