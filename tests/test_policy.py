"""The restart policy on its own, with a clock the test moves."""

from __future__ import annotations

import pytest

from tornado_prefork._supervisor.policy import RestartPolicy, Verdict


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def policy(clock: Clock, max_restarts: int = 3) -> RestartPolicy:
    return RestartPolicy(min_uptime=1.0, backoff_cap=0.5, max_restarts=max_restarts, clock=clock)


def test_fast_failures_back_off_doubling_up_to_the_cap(clock: Clock) -> None:
    rules = policy(clock, max_restarts=10)
    rules.ready()
    delays = []
    for _ in range(5):
        assert rules.ended(0, started_at=clock.now - 0.1, was_ready=True) is Verdict.RESTART
        delays.append(round(rules.start_at(0) - clock.now, 3))
    assert delays == [0.1, 0.2, 0.4, 0.5, 0.5]
    assert rules.streak(0) == 5


def test_a_worker_that_lived_past_min_uptime_resets_its_slot(clock: Clock) -> None:
    rules = policy(clock)
    rules.ready()
    rules.ended(0, started_at=clock.now - 0.1, was_ready=True)
    rules.ended(0, started_at=clock.now - 0.1, was_ready=True)
    assert rules.streak(0) == 2
    assert rules.ended(0, started_at=clock.now - 5, was_ready=True) is Verdict.RESTART
    assert rules.streak(0) == 0
    assert rules.start_at(0) == 0.0


def test_rare_crashes_of_healthy_workers_never_give_up(clock: Clock) -> None:
    rules = policy(clock, max_restarts=3)
    rules.ready()
    for _ in range(1000):
        clock.now += 3600
        verdict = rules.ended(0, started_at=clock.now - 1.5, was_ready=True)
        assert verdict is Verdict.RESTART


def test_give_up_after_max_restarts_fast_failures_in_a_row_of_one_slot(clock: Clock) -> None:
    rules = policy(clock, max_restarts=3)
    rules.ready()
    verdicts = [rules.ended(1, clock.now, was_ready=False, slots=[0, 1]) for _ in range(4)]
    assert verdicts == [Verdict.RESTART] * 3 + [Verdict.GIVE_UP]
    # Other slots have their own streak.
    assert rules.streak(0) == 0


def test_streaks_are_per_slot(clock: Clock) -> None:
    rules = policy(clock, max_restarts=3)
    rules.ready()
    for _ in range(3):
        for slot in (0, 1, 2):
            assert rules.ended(slot, clock.now, was_ready=True) is Verdict.RESTART
    assert [rules.streak(slot) for slot in (0, 1, 2)] == [3, 3, 3]


def test_boot_failure_in_every_slot_stops_at_once(clock: Clock) -> None:
    rules = policy(clock, max_restarts=100)
    assert rules.ended(0, clock.now, was_ready=False, slots=[0, 1]) is Verdict.RESTART
    assert rules.ended(1, clock.now, was_ready=False, slots=[0, 1]) is Verdict.BOOT_FAILED


def test_no_boot_failure_once_any_worker_was_ready(clock: Clock) -> None:
    rules = policy(clock, max_restarts=100)
    rules.ready()
    assert rules.ended(0, clock.now, was_ready=False, slots=[0, 1]) is Verdict.RESTART
    assert rules.ended(1, clock.now, was_ready=False, slots=[0, 1]) is Verdict.RESTART


def test_sidecars_take_no_part_in_boot_failure(clock: Clock) -> None:
    rules = policy(clock, max_restarts=100)
    assert rules.ended("metrics", clock.now, was_ready=True, slots=[0]) is Verdict.RESTART
    assert rules.ended(0, clock.now, was_ready=False, slots=[0]) is Verdict.BOOT_FAILED


def test_failed_creations_back_off_but_never_give_up(clock: Clock) -> None:
    rules = policy(clock, max_restarts=1)
    delays = [rules.retry_later(0) for _ in range(50)]
    assert delays[:3] == [0.1, 0.2, 0.4]
    assert max(delays) == 0.5
    assert rules.streak(0) == 0
    assert rules.start_at(0) == clock.now + 0.5
    rules.replaced(0)
    assert rules.retry_later(0) == 0.1


def test_forget_clears_a_removed_slot(clock: Clock) -> None:
    rules = policy(clock)
    rules.ready()
    rules.ended(3, clock.now, was_ready=True)
    rules.forget(3)
    assert rules.streak(3) == 0
    assert rules.start_at(3) == 0.0


@pytest.mark.parametrize("failures", [1_024, 1_025, 100_000])
def test_backoff_stays_bounded_for_any_count_of_failures(clock: Clock, failures: int) -> None:
    # A slot whose replacement cannot boot for hours (a database outage with
    # max_requests set) or fork failures under a low fd limit: 2 ** 1024 overflowed.
    rules = policy(clock, max_restarts=10**9)
    rules.ready()
    delays = [rules.retry_later(0) for _ in range(failures)]
    assert delays[:3] == [0.1, 0.2, 0.4] and set(delays[3:]) == {0.5}
    for _ in range(failures):
        rules.ended(1, started_at=clock.now - 0.1, was_ready=True)
    assert rules.start_at(1) - clock.now == 0.5
    assert rules.streak(1) == failures
