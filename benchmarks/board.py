"""The cost of one balanced-accept check, per worker count.

    python benchmarks/board.py

Each accept in a worker sharing the listening socket asks the board first
(`tornado_prefork._worker.board.Board.should_accept`). The board has room for
1024 seats but a check scans only the seats in use; this prints the median
time of one check over several repetitions, for boards with 2 to 256 workers,
beside a full scan of every seat for comparison.
"""

from __future__ import annotations

import functools
import statistics
import timeit
from collections.abc import Callable

from tornado_prefork._worker.board import Board

REPEATS = 7
CALLS = 20_000


def per_call(statement: Callable[[], object]) -> float:
    """Median seconds per call of ``statement`` over `REPEATS` runs."""
    runs = timeit.repeat(statement, number=CALLS, repeat=REPEATS)
    return statistics.median(runs) / CALLS


def main() -> None:
    print(f"{'workers':>8} {'check (ns)':>11} {'all 1024 seats (ns)':>20}")
    for workers in (2, 8, 32, 256):
        board = Board()
        for seat in range(workers):
            board.publish(seat, 10 + seat % 3)
        used = per_call(functools.partial(board.should_accept, 1))
        full = Board()
        for seat in range(workers):
            full.publish(seat, 10 + seat % 3)
        # What a check costs if it had to look at every seat of the board.
        full.publish(full.seats - 1, 10)
        every = per_call(functools.partial(full.should_accept, 1))
        print(f"{workers:>8} {used * 1e9:>11.0f} {every * 1e9:>20.0f}")


if __name__ == "__main__":
    main()
