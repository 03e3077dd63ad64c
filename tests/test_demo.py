"""The demo end to end: two workers answer, SIGINT ends everything cleanly."""

from __future__ import annotations

import json
import signal
import urllib.request

from tests import procs


def test_demo_two_workers() -> None:
    from tornado.testing import bind_unused_port

    sock, port = bind_unused_port()
    sock.close()
    code = f"""
import runpy, sys
sys.argv = ["demo/app.py", "--processes", "2", "--port", "{port}", "--address", "127.0.0.1"]
runpy.run_path("demo/app.py", run_name="__main__")
"""
    with procs.Scenario(code) as s:
        seen = {}
        for _ in range(200):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                    body = json.load(r)
            except OSError:
                s.readline(0.05)
                continue
            seen[body["pid"]] = body["task_id"]
            if len(seen) == 2:
                break
        assert sorted(seen.values()) == [0, 1], (seen, s.stderr)
        assert all(procs.state(pid) for pid in seen)
        s.signal(signal.SIGINT)
        assert s.finish(timeout=10) == 0, s.stderr
        assert procs.wait_dead(list(seen), timeout=1) == []
