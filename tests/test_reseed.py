"""Sibling children and the parent never share random streams (tests/scenarios/draw.py)."""

from __future__ import annotations

import pytest

from tests import procs


@pytest.mark.parametrize("generator", ["random", "numpy"])
def test_every_child_and_the_parent_draw_differently(generator: str) -> None:
    # numpy's legacy global generator is seeded once, at import, in the parent;
    # numpy is in the test extra so that its reseeding is proven here.
    result = procs.run(procs.scenario("draw", generator), timeout=20)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert sorted(line.split()[0] for line in lines) == ["child", "child", "child", "parent"]
    values = [line.split(" ", 1)[1] for line in lines]
    assert len(set(values)) == 4, values
