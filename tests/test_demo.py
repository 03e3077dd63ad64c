"""The demo end to end: python demo/app.py --processes 2."""

from __future__ import annotations

import collections
import signal
import sys

import pytest

from tests import procs, serving

pytestmark = pytest.mark.tornado_api


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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "70000"], "option --port must be from 0 to 65535, not '70000'"),
        (["--processes", "four"], "option --processes must be an int, not 'four'"),
        (["--address"], "Option 'address' requires a value"),
        (["--bogus"], "Unrecognized command line option: 'bogus'"),
    ],
)
def test_demo_bad_values_exit_2_with_one_line_as_the_command_line(
    args: list[str], message: str
) -> None:
    result = procs.run([sys.executable, "demo/app.py", *args], timeout=20)
    assert result.returncode == 2, result.stderr
    # Refused before anything starts: no log line of the server, no traceback.
    assert (result.stdout, result.stderr) == ("", f"app.py: error: {message} (see app.py --help)\n")


def test_demo_address_none_is_every_interface() -> None:
    argv = [sys.executable, "demo/app.py", "--processes", "1", "--port", "0", "--address", "None"]
    with serving.running(argv=argv) as s:
        base = serving.url(s)
        assert base.startswith("http://0.0.0.0:"), s.output
        status, body = serving.get(f"http://127.0.0.1:{serving.port_of(base)}")
        assert (status, body["task_id"]) == (200, 0)
