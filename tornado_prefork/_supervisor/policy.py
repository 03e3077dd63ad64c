"""The restart policy: when a process that ended may start again, and when to give up.

Pure bookkeeping with an injectable clock, no processes and no signals, so
each rule is tested on its own (tests/test_policy.py) beside the real-process
tests.

Rules:

- A *fast failure* is a process that ended before it was ready, or within
  ``min_uptime`` seconds of its start. Only fast failures count, per key (a
  worker slot, a sidecar), in a row; a process that lived past ``min_uptime``
  resets its key, so rare crashes of healthy workers never add up.
- After the n-th fast failure in a row the next start waits
  ``first_backoff * 2 ** (n - 1)`` seconds, at most ``backoff_cap``.
- More than ``max_restarts`` fast failures in a row of one key: give up.
- No process was ever ready and every worker slot has failed before it was:
  the application cannot boot; give up at once instead of a restart storm.
- A process that could not even be created (``fork``/``socketpair`` failed:
  file descriptors, memory), or a replacement that failed while the process it
  was to replace still serves, backs off the same way but never counts
  towards giving up: the processes that exist keep serving.
"""

from __future__ import annotations

import dataclasses
import enum
import time
from collections.abc import Callable, Collection, Hashable

FIRST_BACKOFF = 0.1
# 0.1 s doubled 60 times is ~3.7e16 years: far past any backoff_cap.
_MAX_DOUBLINGS = 60


class Verdict(enum.Enum):
    """What follows the end of a process."""

    #: Start again when `RestartPolicy.start_at` says.
    RESTART = "restart"
    #: Too many fast failures in a row: stop the server.
    GIVE_UP = "give up"
    #: No worker could ever start: stop the server.
    BOOT_FAILED = "boot failed"


@dataclasses.dataclass
class _Record:
    fast_failures: int = 0
    spawn_failures: int = 0
    start_at: float = 0.0


class RestartPolicy:
    """Fast-failure streaks, backoff and give-up, per key.

    ``clock`` returns seconds (default `time.monotonic`); tests pass their own.
    """

    def __init__(
        self,
        *,
        min_uptime: float,
        backoff_cap: float,
        max_restarts: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.min_uptime = min_uptime
        self.backoff_cap = backoff_cap
        self.max_restarts = max_restarts
        self.clock = clock
        self._records: dict[Hashable, _Record] = {}
        self._ever_ready = False
        self._boot_failed: set[Hashable] = set()

    def _record(self, key: Hashable) -> _Record:
        return self._records.setdefault(key, _Record())

    def start_at(self, key: Hashable) -> float:
        """The earliest moment (on ``clock``) a process for ``key`` may start."""
        record = self._records.get(key)
        return 0.0 if record is None else record.start_at

    def streak(self, key: Hashable) -> int:
        """Fast failures of ``key`` in a row so far."""
        record = self._records.get(key)
        return 0 if record is None else record.fast_failures

    def is_fast(self, started_at: float, was_ready: bool) -> bool:
        """Whether a process started at ``started_at`` that ends now failed fast."""
        return not was_ready or self.clock() - started_at < self.min_uptime

    def ended(
        self, key: Hashable, started_at: float, was_ready: bool, slots: Collection[Hashable] = ()
    ) -> Verdict:
        """A process of ``key`` ended unexpectedly; decides what follows.

        ``slots`` are the worker keys wanted now; when ``key`` is one of them it
        takes part in the boot-failure rule.
        """
        record = self._record(key)
        if not was_ready and not self._ever_ready and key in slots:
            self._boot_failed.add(key)
            if self._boot_failed >= set(slots):
                return Verdict.BOOT_FAILED
        if not self.is_fast(started_at, was_ready):
            record.fast_failures = 0
            record.start_at = 0.0
            return Verdict.RESTART
        record.fast_failures += 1
        if record.fast_failures > self.max_restarts:
            return Verdict.GIVE_UP
        record.start_at = self.clock() + self._delay(record.fast_failures)
        return Verdict.RESTART

    def retry_later(self, key: Hashable) -> float:
        """A process of ``key`` could not be created, or a replacement failed while
        the old process still serves: returns the delay before the next try."""
        record = self._record(key)
        record.spawn_failures += 1
        delay = self._delay(record.spawn_failures)
        record.start_at = self.clock() + delay
        return delay

    def replaced(self, key: Hashable) -> None:
        """A process of ``key`` became ready: failed creations and replacements are
        forgiven (fast failures are not: see `ended`)."""
        record = self._records.get(key)
        if record is not None:
            record.spawn_failures = 0

    def ready(self) -> None:
        """A worker became ready: the application can boot."""
        self._ever_ready = True

    def forget(self, key: Hashable) -> None:
        """``key`` is gone (a slot removed by scaling down)."""
        self._records.pop(key, None)

    def _delay(self, count: int) -> float:
        # The exponent is bounded before the power: 2.0 ** 1024 overflows, and a
        # slot may fail for hours (a database outage) before it boots again.
        doublings = min(count - 1, _MAX_DOUBLINGS)
        return min(FIRST_BACKOFF * 2.0**doublings, self.backoff_cap)
