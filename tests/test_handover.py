"""The handover of a reload in place: one record per process on both sides of
the exec, a schema version, and the previous schema still read (a reload in
place that upgrades tornado-prefork itself)."""

from __future__ import annotations

import json

import pytest

from tornado_prefork._settings import Settings
from tornado_prefork._supervisor.fleet import Fleet
from tornado_prefork._supervisor.handover import SCHEMA, Handover
from tornado_prefork._supervisor.hooks import SupervisorHooks
from tornado_prefork._supervisor.record import Action, ExitReason, Process, State, System

CONFIG = Settings(
    max_restarts=5,
    graceful_timeout=5,
    min_uptime=1,
    backoff_cap=1,
    ready_timeout=10,
    timeout=30,
    max_worker_age=0,
)


class Clock(System):
    def __init__(self, now: float) -> None:
        self.now = now

    def clock(self) -> float:
        return self.now


# What the first release wrote: no version, the process fields copied one by one.
SCHEMA_1 = {
    "processes": [
        {
            "name": "worker 0",
            "slot": 0,
            "seat": 0,
            "pid": 4242,
            "channel_fd": None,
            "generation": 3,
            "state": "ready",
            "started_at": 100.0,
            "kill_at": None,
            "reason": None,
        },
        {
            "name": "worker 1",
            "slot": 1,
            "seat": 1,
            "pid": 4243,
            "channel_fd": None,
            "generation": 2,
            "state": "draining",
            "started_at": 90.0,
            "kill_at": 1010.0,
            "reason": "reloaded",
        },
    ],
    "generation": 3,
    "count": 2,
    "listen_fds": [],
    "board_fd": None,
    "extra_fds": [],
    "extras": {"backlog": "128"},
}


def test_a_handover_of_the_previous_schema_is_adopted() -> None:
    # A server up for hours (started at 100, now 5000): its workers are not
    # declared silent since their start by the image that reads this.
    clock = Clock(5000.0)
    handover = Handover.decode(json.dumps(SCHEMA_1), system=clock)
    ready, draining = handover.processes
    assert (ready.pid, ready.state, ready.ever_ready, ready.last_heard) == (
        4242,
        State.READY,
        True,
        5000.0,
    )
    assert (draining.state, draining.reason, draining.kill_at) == (
        State.DRAINING,
        ExitReason.RELOADED,
        1010.0,
    )
    fleet = Fleet(
        2, CONFIG, SupervisorHooks(), [], keep_running=True, give_up_message="", system=clock
    )
    fleet.adopt(handover)
    assert fleet.desired.generation == 4
    assert fleet.due(fleet.processes[4242]) == (5000.0 + CONFIG.timeout, Action.HUNG)
    assert handover.extras == {"backlog": "128"}


def test_a_round_trip_keeps_every_field_of_the_record() -> None:
    clock = Clock(50.0)
    process = Process.start("worker 1", 1, 2, 777, None, 5, system=clock)
    clock.now = 60.0
    process.became_ready()
    process.heard()
    process.recycle = True
    process.boot_error = "a traceback"
    process.terminate(3.0, ExitReason.RECYCLED, signum=0)
    text = Handover([process], 5, 2, extras={"urls": "[]"}, config={"timeout": 30}).encode()
    assert json.loads(text)["version"] == SCHEMA
    again = Handover.decode(text, system=clock)
    assert [p.record() for p in again.processes] == [process.record()]
    assert again.processes[0].last_heard == 60.0
    assert again.config == {"timeout": 30}
    assert again.encode() == text


def test_fields_it_does_not_know_are_ignored() -> None:
    # A handover from a newer release, on a downgrade by reload.
    data = json.loads(Handover([], 1, 1).encode())
    data["version"] = SCHEMA + 1
    data["brand_new"] = [1, 2]
    data["processes"] = [
        {**Process.start("worker 0", 0, 0, 9, None, 1, ready=True).record(), "cpu": 3}
    ]
    handover = Handover.decode(json.dumps(data))
    assert [p.pid for p in handover.processes] == [9]


@pytest.mark.parametrize("text", ["", "[]", '{"processes": [{"state": "gone"}]}'])
def test_text_that_is_not_a_handover_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="malformed TORNADO_PREFORK_HANDOVER"):
        Handover.decode(text)
