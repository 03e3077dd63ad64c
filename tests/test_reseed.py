"""Sibling children and the parent never share random streams."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests import procs

DRAW = """
import os, random, sys
sys.path.insert(0, {path!r})
{imports}
from tornado_prefork import fork_processes
def draw():
    return " ".join(str(x) for x in ({draws}))
try:
    i = fork_processes(3)
except SystemExit:
    # The parent's generators are as they were at fork time: an un-reseeded
    # child would draw exactly this.
    os.write(1, ("parent " + draw() + "\\n").encode())
    raise
os.write(1, ("child " + draw() + "\\n").encode())
"""

# A stand-in for numpy's legacy global generator: deterministic from a fixed
# seed at import, like numpy's, and reseeded only through numpy.random.seed().
FAKE_NUMPY_RANDOM = """
import random as _stdlib_random
_generator = _stdlib_random.Random(1234)
def seed(value):
    _generator.seed(value)
def random():
    return _generator.random()
"""


def draws(code: str) -> list[str]:
    result = procs.run(code, timeout=20)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert sorted(line.split()[0] for line in lines) == ["child", "child", "child", "parent"]
    return [line.split(" ", 1)[1] for line in lines]


def test_stdlib_random_differs_across_children_and_parent(tmp_path: Path) -> None:
    values = draws(DRAW.format(path=str(tmp_path), imports="", draws="random.random(),"))
    assert len(set(values)) == 4, values


def test_numpy_global_generator_is_reseeded(tmp_path: Path) -> None:
    package = tmp_path / "numpy"
    package.mkdir()
    (package / "__init__.py").write_text("from numpy import random\n")
    (package / "random.py").write_text(FAKE_NUMPY_RANDOM)
    code = DRAW.format(path=str(tmp_path), imports="import numpy", draws="numpy.random.random(),")
    values = draws(code)
    assert len(set(values)) == 4, values


@pytest.mark.skipif(importlib.util.find_spec("numpy") is None, reason="numpy is not installed")
def test_real_numpy_is_reseeded(tmp_path: Path) -> None:
    code = DRAW.format(
        path=str(tmp_path), imports="import numpy", draws="numpy.random.randint(1 << 30),"
    )
    values = draws(code)
    assert len(set(values)) == 4, values
