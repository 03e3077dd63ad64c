"""Three children and their parent each draw a number from one generator.

argv: ``random`` (the stdlib's) or ``numpy`` (numpy's legacy global one).
Prints ``child <n>`` in each child and ``parent <n>`` in the parent, whose
generators are as they were at fork time: an un-reseeded child would draw
exactly what the parent draws.
"""

from __future__ import annotations

import random
import sys

from tests.scenarios import say
from tornado_prefork import fork_processes

if sys.argv[1] == "numpy":
    import numpy

    def draw() -> int | float:
        return int(numpy.random.randint(1 << 30))
else:

    def draw() -> int | float:
        return random.random()


try:
    fork_processes(3)
except SystemExit:
    say("parent", draw())
    raise
say("child", draw())
