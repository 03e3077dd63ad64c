"""Tornado's own multi-process scenario, with only the import changed
(tests/scenarios/tornado_compat.py)."""

from __future__ import annotations

import pytest

from tests import procs

pytestmark = pytest.mark.tornado_api


def test_tornado_multi_process_scenario() -> None:
    result = procs.run(procs.scenario("tornado_compat"), timeout=30)
    assert result.returncode == 0, result.stderr
    assert "driver done" in result.stdout
    assert "parent exits 0" in result.stdout
    err = result.stderr
    assert "Starting 3 processes" in err
    assert "exited with status 2, restarting" in err
    assert "exited with status 3, restarting" in err
    assert "exited with status 4, restarting" in err
    assert err.count("exited normally") == 3
    assert "Too many child restarts" not in err


def test_task_id_is_none_outside_children() -> None:
    result = procs.run(procs.python("from tornado_prefork import task_id; print(task_id())"))
    assert result.stdout.strip() == "None"
