"""The parent's model through simulated weeks: the real supervisor, fleet and
restart policy on a virtual clock (`tests.sim`), through random schedules of
signals, crashes, hangs, fork failures, broken code and re-executions in place.

A failure names its seed; ``TORNADO_PREFORK_SIM_SEED=N`` runs that seed alone,
the same way.
"""

from __future__ import annotations

import os

import pytest

from tests.sim import WEEK, Violation, World

_ONE = os.environ.get("TORNADO_PREFORK_SIM_SEED")
SEEDS = [int(_ONE)] if _ONE else list(range(48))
# Each seed: a few hours of schedule, then calm to converge.
HOURS = 4.0


def _run(seed: int) -> World:
    world = World(seed, duration=HOURS * 3600)
    try:
        world.run()
    except Violation as e:
        raise AssertionError(
            f"seed {seed}: {e}\nrerun it alone: TORNADO_PREFORK_SIM_SEED={seed} "
            "python -m pytest tests/test_simulation.py"
        ) from e
    except Exception as e:
        raise AssertionError(f"seed {seed}: an exception left the loop: {e!r}") from e
    return world


def test_a_simulated_week_keeps_every_invariant() -> None:
    simulated = sum(world.now - world.started for world in map(_run, SEEDS))
    if _ONE is None:
        assert simulated >= WEEK


@pytest.mark.parametrize("seed", [3, 17])
def test_a_seed_replays_identically(seed: int) -> None:
    def trace(world: World) -> list[tuple[int, int, int | None]]:
        return [(p.pid, p.generation, p.status) for p in world.procs.values()]

    assert trace(_run(seed)) == trace(_run(seed))
