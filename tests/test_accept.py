"""The workers' accept path under faults: out of file descriptors, scaled up past the start."""

from __future__ import annotations

import collections
import os
import signal
import socket
import time

import pytest

from tests import procs, serving
from tornado_prefork._worker.board import Board

pytestmark = pytest.mark.tornado_api

# The worker's open file limit in the scenario: a few dozen connections reach it.
FD_LIMIT = 64
PAUSED = "cannot accept on"


def flood(port: int, count: int) -> list[socket.socket]:
    """``count`` open connections; those past the worker's limit wait in the backlog."""
    return [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(count)]


def test_out_of_file_descriptors_pauses_accepting_and_logs_once_per_episode() -> None:
    with serving.running(processes=1, rlimit=f"nofile={FD_LIMIT}", backlog=512) as s:
        base = serving.url(s)
        (worker,) = serving.live_workers(s, 1)
        for episode in (1, 2):
            clients = flood(serving.port_of(base), 3 * FD_LIMIT)
            s.wait_line(PAUSED, timeout=5, count=episode)
            used = procs.cpu_seconds(worker)
            # Long enough for a retry after the one-second pause.
            time.sleep(1.5)
            # Paused, not spinning: a worker that retried at once would use
            # the whole 1.5 s of a CPU and log thousands of lines.
            assert procs.cpu_seconds(worker) - used < 0.5
            assert len(s.matching(PAUSED)) == episode, s.lines[-5:]
            for client in clients:
                client.close()
            # Once descriptors are free it serves again: the backlog first,
            # then this request.
            status, body = serving.get(base, timeout=10)
            assert (status, body["pid"]) == (200, worker)
        line = s.matching(PAUSED)[0]
        assert f"worker 0 (pid {worker})" in line
        assert f"Too many open files (open file limit {FD_LIMIT})" in line


@pytest.mark.alone
@pytest.mark.parametrize(
    ("workers", "connections", "most"),
    # 8 workers, 64 connections: none holds more than twice its share. 24 is
    # past what a board sized for one worker at start (4 x 1 + 16 seats) held,
    # which gave one worker 88 of 96; 24 workers share 2 CPUs here (12 to a
    # CPU), so one may get three times its share before its siblings run.
    [(8, 64, 2), (24, 96, 3)],
)
def test_balanced_accept_holds_after_scaling_up(workers: int, connections: int, most: int) -> None:
    with serving.running(processes=1) as s:
        base = serving.url(s)
        serving.live_workers(s, 1)
        for count in range(2, workers + 1):
            # One at a time: signals of one kind sent at once may merge into one.
            s.signal(signal.SIGTTIN)
            s.wait_line(f"SIGTTIN: {count} workers")
        pids = serving.live_workers(s, workers, timeout=15)
        # Each worker says "factory <pid>" as it builds its app, moments
        # before it starts accepting.
        s.wait_line("factory ", timeout=15, count=workers, at_start=True)
        time.sleep(0.2)
        # Not counted: the first burst after an idle period wakes every worker
        # at once, and with many more workers than CPUs (8 or 24 on 2 here) the
        # first to run may take up to 3x its share before its siblings are
        # scheduled within HOLD. What is asserted is the balance under bursts
        # that follow one another, as under load.
        serving.burst(base, connections)
        held: set[int] = set()
        for _ in range(3):
            shares = collections.Counter(serving.burst(base, connections))
            # None holds more than ``most`` times its fair share.
            assert max(shares.values()) <= most * connections // workers, shares
            # A worker not scheduled within HOLD of a burst (24 workers share
            # 2 CPUs here) misses it; over three bursts every one holds some.
            assert len(shares) >= workers * 3 // 4, shares
            held |= set(shares)
        assert held == set(pids), (held, pids)


def test_board_counts_only_the_seats_in_use() -> None:
    board = Board()
    assert board.seats >= 1000 and board.in_use == 0
    board.publish(0, 3)
    board.publish(5, 3)
    assert board.in_use == 6
    assert board.should_accept(0) and board.should_accept(5)
    board.publish(900, 0)
    assert board.in_use == 901
    # Seat 900 has fewer: the others leave new connections to it.
    assert not board.should_accept(0) and board.should_accept(900)
    board.vacate(900)
    assert board.in_use == 6 and board.should_accept(0)
    board.vacate(0)
    assert board.in_use == 6
    board.vacate(5)
    assert board.in_use == 0
    # A seat past the board always accepts; seat -1 (a sidecar's) is no seat.
    assert board.should_accept(board.seats)
    board.publish(2, 1)
    board.vacate(-1)
    assert board.in_use == 3


def test_a_board_handed_over_by_its_descriptor_is_the_same_board() -> None:
    board = Board()
    board.publish(0, 4)
    board.publish(3, 1)
    # As a re-executed parent would: a new mapping of the same memory.
    adopted = Board.adopt(os.dup(board.fd))
    assert (adopted.seats, adopted.in_use) == (board.seats, 4)
    assert not adopted.should_accept(0)
    adopted.vacate(3)
    assert board.in_use == 1 and board.should_accept(0)
    # A worker closes its copy of the descriptor; the memory stays shared.
    fd = adopted.fd
    adopted.close_fd()
    with pytest.raises(OSError):
        os.fstat(fd)
    adopted.publish(2, 0)
    assert board.in_use == 3 and not board.should_accept(0)
