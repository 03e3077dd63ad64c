"""The ``loop`` setting: each worker's event loop, chosen in the parent (real processes).

The uvloop cases need the ``uvloop`` extra; ``make test-uvloop`` runs them (and
the whole suite on uvloop). A missing uvloop is made by ``sys.modules["uvloop"]
= None``, with which ``import uvloop`` raises ImportError as when it is absent.
"""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests import procs, serving
from tests.test_serve_errors import attempt

HIDE_UVLOOP = "sys.modules['uvloop'] = None"
HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None
needs_uvloop = pytest.mark.skipif(not HAS_UVLOOP, reason="needs uvloop: make test-uvloop")

# Each worker says which loop it runs, once it serves.
REPORT = """
import asyncio
from tornado.ioloop import IOLoop
def report():
    loop = asyncio.get_running_loop()
    os.write(1, f"loop {os.getpid()} {type(loop).__module__}.{type(loop).__name__}\\n".encode())
async def factory():
    report()
    return webapp.make_app()
"""


def loops_of_workers(kwargs: str, before: str = "", n: int = 2) -> set[str]:
    with serving.start(app="factory", n=n, kwargs=kwargs, before=before + REPORT) as s:
        base = serving.url(s)
        assert serving.get(base)[0] == 200
        lines = s.wait_for_lines("loop ", n, timeout=10)
        s.signal(signal.SIGTERM)
        assert s.finish(timeout=10) == 0
    return {line.split()[2] for line in lines}


def test_asyncio_is_asyncio_whatever_is_installed() -> None:
    assert loops_of_workers("loop='asyncio'") == {"asyncio.unix_events._UnixSelectorEventLoop"}


def test_auto_without_uvloop_is_asyncio() -> None:
    found = loops_of_workers("loop='auto'", before=HIDE_UVLOOP)
    assert found == {"asyncio.unix_events._UnixSelectorEventLoop"}


@needs_uvloop
@pytest.mark.parametrize("loop", ["auto", "uvloop"])
def test_uvloop_when_installed(loop: str) -> None:
    assert loops_of_workers(f"loop={loop!r}") == {"uvloop.Loop"}


def test_uvloop_asked_for_and_missing_fails_before_any_fork(tmp_path: Path) -> None:
    kind, text = attempt("webapp.app, loop='uvloop'", tmp_path, before=HIDE_UVLOOP)
    assert kind == "StartupError"
    assert text.startswith("loop='uvloop' needs uvloop (")
    assert text.endswith("): pip install 'tornado-prefork[uvloop]'")


def test_unknown_loop(tmp_path: Path) -> None:
    kind, text = attempt("webapp.app, loop='trio'", tmp_path)
    assert (kind, text) == (
        "ValueError",
        "serve() argument loop must be one of auto, asyncio, uvloop, not 'trio'",
    )


def test_command_line_loop_flag() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tornado_prefork", "tests.webapp:app", "--loop", "trio"],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=procs.ROOT,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(
        "tornado-prefork: error: --loop must be one of auto, asyncio, uvloop, not 'trio'"
    )


@needs_uvloop
def test_drain_on_uvloop_finishes_the_request_in_flight() -> None:
    with serving.start(n=1, kwargs="loop='uvloop', graceful_timeout=10") as s:
        base = serving.url(s)
        conn = serving.connect(base)
        conn.request("GET", "/slow?seconds=1")
        s.wait_for_lines("slow-start", 1, timeout=10)
        s.signal(signal.SIGTERM)
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("Connection") == "close"
        assert s.finish(timeout=10) == 0
