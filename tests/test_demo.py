"""The demo end to end: python demo/app.py --processes 2."""

from __future__ import annotations

import collections
import signal
import sys

from tests import procs, serving


def test_demo_two_workers() -> None:
    argv = [sys.executable, "demo/app.py", "--processes", "2", "--port", "0"]
    argv += ["--address", "127.0.0.1"]  # as make demo; tornado.options binds all, as serve()
    with serving.running(argv=argv) as s:
        base = serving.url(s)
        assert base.startswith("http://127.0.0.1:")
        workers = collections.Counter(serving.burst(base, 16))
        assert len(workers) == 2, workers
        task_ids = set()
        for _ in range(20):
            status, body = serving.get(base)
            assert status == 200
            task_ids.add(body["task_id"])
        assert task_ids <= {0, 1}
        status, body = serving.get(base, "/slow?seconds=0.2")
        assert (status, body["slept"]) == (200, 0.2)
        s.stop(signal.SIGINT)
        assert procs.wait_dead(list(workers), timeout=1) == []
