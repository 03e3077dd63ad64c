"""The ``loop`` setting: each worker's event loop, chosen in the parent (real processes).

The uvloop cases need the ``uvloop`` extra: ``make test`` runs the whole suite
once in a virtualenv that has it (``make test-uvloop``). A missing uvloop is
made by ``sys.modules["uvloop"] = None``, with which ``import uvloop`` raises
ImportError as when it is absent.
"""

from __future__ import annotations

import importlib.util
import signal

import pytest

from tests import procs, serving
from tests.serving import MODULE

pytestmark = pytest.mark.tornado_api

HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None
needs_uvloop = pytest.mark.skipif(
    not HAS_UVLOOP, reason="needs uvloop: make test-uvloop runs the suite where it is installed"
)


def loops_of_workers(loop: str, hide: tuple[str, ...] = (), processes: int = 2) -> set[str]:
    with serving.running(
        "tests.webapp:loop_reporting_factory", processes, hide=hide, loop=loop
    ) as s:
        base = serving.url(s)
        assert serving.get(base)[0] == 200
        lines = s.wait_line("loop ", processes, at_start=True)
    return {line.split()[2] for line in lines}


def test_asyncio_is_asyncio_whatever_is_installed() -> None:
    assert loops_of_workers("asyncio") == {"asyncio.unix_events._UnixSelectorEventLoop"}


def test_auto_without_uvloop_is_asyncio() -> None:
    found = loops_of_workers("auto", hide=("uvloop",))
    assert found == {"asyncio.unix_events._UnixSelectorEventLoop"}


@needs_uvloop
@pytest.mark.parametrize("loop", ["auto", "uvloop"])
def test_uvloop_when_installed(loop: str) -> None:
    assert loops_of_workers(loop) == {"uvloop.Loop"}


def test_uvloop_asked_for_and_missing_fails_before_any_fork() -> None:
    kind, text = serving.refused("tests.webapp:app", hide=("uvloop",), loop="uvloop")
    assert kind == "StartupError"
    assert text.startswith("loop='uvloop' needs uvloop (")
    assert text.endswith("): pip install 'tornado-prefork[uvloop]'")


def test_unknown_loop() -> None:
    kind, text = serving.refused("tests.webapp:app", loop="trio")
    assert (kind, text) == (
        "ValueError",
        "serve() argument loop must be one of auto, asyncio, uvloop, not 'trio'",
    )


def test_command_line_loop_flag() -> None:
    result = procs.run([*MODULE, "tests.webapp:app", "--loop", "trio"], timeout=20)
    assert result.returncode == 2
    assert result.stderr.startswith(
        "tornado-prefork: error: --loop must be one of auto, asyncio, uvloop, not 'trio'"
    )


@needs_uvloop
def test_drain_on_uvloop_finishes_the_request_in_flight() -> None:
    with serving.running(processes=1, loop="uvloop", graceful_timeout=10) as s:
        base = serving.url(s)
        conn = serving.connect(base)
        conn.request("GET", "/slow?seconds=1")
        s.wait_line("slow-start", 1, timeout=10)
        s.signal(signal.SIGTERM)
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("Connection") == "close"
        assert s.finish(timeout=10) == 0
