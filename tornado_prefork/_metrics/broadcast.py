"""A worker's broadcast counts (`tornado_prefork.broadcast`) as metrics.

The backend of the worker counts in plain numbers (its fanout's `Stats`);
these instruments read them at each sample of the other instruments and
write what changed, so a message costs nothing more on its way. Every
series has the ``worker`` label (the task id, kept by a replacement) and
no topic: topics are the application's, unbounded, and each would be a new
series. A worker whose broadcast is off has no backend, and no series; the
backend is never made here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge

if TYPE_CHECKING:
    from tornado_prefork._broadcast.backend import Backend
    from tornado_prefork._broadcast.subscription import Stats


class BroadcastMetrics:
    """The broadcast instruments of the worker with task id ``worker``.

    Created in the worker, after the fork; `sample` writes the backend's
    counts. The series are made at the first sample that finds a backend,
    every one at 0, so that a rate over them exists before the first message.
    """

    def __init__(self, worker: int) -> None:
        # Not at import: loading the metrics modules loads nothing of broadcast.
        from tornado_prefork._broadcast import current as _current

        self._worker = str(worker)
        self._existing: Callable[[], Backend | None] = _current.existing
        self._series: _Series | None = None
        # The Stats last read, and what it said then.
        self._stats: Stats | None = None
        self._seen: dict[str, int] = {}
        self._seen_dropped: dict[str, int] = {}

    def sample(self) -> None:
        """Writes what the backend counted since the last sample."""
        backend = self._existing()
        if backend is None:
            return
        series = self._series
        if series is None:
            series = self._series = _Series(self._worker)
        stats = backend.fanout.stats
        if stats is not self._stats:
            # Another backend counts from 0.
            self._stats, self._seen, self._seen_dropped = stats, {}, {}
        for field, counter in series.counters.items():
            value = getattr(stats, field)
            grown = value - self._seen.get(field, 0)
            if grown > 0:
                counter.inc(grown)
                self._seen[field] = value
        for reason, value in stats.dropped.items():
            grown = value - self._seen_dropped.get(reason, 0)
            if grown > 0:
                by_reason = series.dropped(reason)
                if by_reason is not None:
                    by_reason.inc(grown)
                self._seen_dropped[reason] = value
        series.high_water.set(stats.queue_high_water)
        series.subscribers.set(stats.subscribers)


class _Series:
    """The series of one worker, made when its backend is first found."""

    def __init__(self, worker: str) -> None:
        from tornado_prefork._broadcast.events import GapReason

        self.worker = worker
        self.counters = {
            field: Counter(
                f"tornado_prefork_broadcast_{field}", what, ["worker"], registry=None
            ).labels(worker)
            for field, what in (
                ("published", "Broadcast messages this worker published (numbered by the hub)"),
                ("delivered", "Broadcast messages handed to subscribers, one per subscriber"),
                ("gaps", "Gaps told to subscribers of this worker: messages they missed"),
            )
        }
        self._dropped_by_reason = Counter(
            "tornado_prefork_broadcast_dropped",
            "Broadcast messages dropped in this worker, by reason",
            ["worker", "reason"],
            registry=None,
        )
        # Reasons are GapReason values, a bounded set: anything else is not a series.
        self._reasons = frozenset(reason.value for reason in GapReason)
        overflow = GapReason.OVERFLOW.value
        self._dropped = {overflow: self._dropped_by_reason.labels(worker, overflow)}
        self.high_water = Gauge(
            "tornado_prefork_broadcast_queue_high_water",
            "The most messages a subscriber's queue of this worker held at once",
            ["worker"],
            multiprocess_mode="livemax",
            registry=None,
        ).labels(worker)
        self.subscribers = Gauge(
            "tornado_prefork_broadcast_subscribers",
            "Broadcast subscriptions open in this worker",
            ["worker"],
            multiprocess_mode="livesum",
            registry=None,
        ).labels(worker)

    def dropped(self, reason: str) -> Counter | None:
        counter = self._dropped.get(reason)
        if counter is None and reason in self._reasons:
            counter = self._dropped[reason] = self._dropped_by_reason.labels(self.worker, reason)
        return counter
