"""The broadcast hub as a supervised sidecar: a hub that is alive but deaf
(stopped, its loop wedged) is noticed by the workers through its missing
tick, killed by the parent on their word, and restarted with a new epoch;
subscribers are told of a gap, and publishing works again."""

from __future__ import annotations

import os
import re
import signal
import threading
import time

import pytest

from tests import procs, serving
from tests.test_broadcast_examples import example, post, xsrf

HUB_LINE = re.compile(r"broadcast hub \(pid (\d+)\) serving, epoch (\w+)")


def hub_of(s: procs.Scenario, count: int) -> tuple[int, str]:
    """The pid and epoch of the ``count``-th hub the server started."""
    line = s.wait_line(") serving, epoch ", count=count)[count - 1]
    match = HUB_LINE.search(line)
    assert match is not None, line
    return int(match.group(1)), match.group(2)


def test_a_deaf_hub_is_replaced_and_its_subscribers_told_of_a_gap() -> None:
    with serving.running(argv=example("chat", "chatdemo:make_app")) as s:
        base = serving.url(s)
        token = xsrf(base)
        first = post(base, "/a/message/new", token, body="before")["id"]
        hub, epoch = hub_of(s, 1)
        assert first.startswith(epoch + "-")
        answers: list[tuple[float, object]] = []

        def poll() -> None:
            # Waits: nothing follows "before" yet.
            body = post(base, "/a/message/updates", token, timeout=30, cursor=first)
            answers.append((time.monotonic(), body))

        waiting = threading.Thread(target=poll)
        waiting.start()
        time.sleep(0.3)
        stopped = time.monotonic()
        # Alive but deaf: its socket still accepts, nothing answers.
        os.kill(hub, signal.SIGSTOP)
        served = 0
        while not s.matching("heard nothing from the broadcast hub"):
            # What needs no message is served throughout (the page needs the
            # history: it fails until the hub is back).
            conn = serving.connect(base)
            conn.request("GET", "/static/chat.css", headers={"Connection": "close"})
            assert conn.getresponse().status == 200
            conn.close()
            served += 1
            assert time.monotonic() - stopped < 10, s.output
            time.sleep(0.1)
        new_hub, new_epoch = hub_of(s, 2)
        assert new_hub != hub and new_epoch != epoch
        waiting.join(10)
        # The waiting poll ended with the gap (the demo answers it with no message).
        assert answers and answers[0][1] == {"messages": []}
        assert answers[0][0] - stopped < 3.5 + 1 + 2
        # Publishing works again, in the new epoch; the old cursor resumes there.
        after = post(base, "/a/message/new", token, body="after")["id"]
        assert after == f"{new_epoch}-1"
        resumed = post(base, "/a/message/updates", token, cursor=first)["messages"]
        assert [m["body"] for m in resumed] == ["after"]
        assert served > 10
        assert procs.state(hub) is None or procs.state(hub) == "Z"


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_workers_that_drop_root_reach_the_hub() -> None:
    argv = [*example("chat", "chatdemo:make_app"), "--user", "nobody", "--group", "nogroup"]
    with serving.running(argv=argv) as s:
        base = serving.url(s)
        token = xsrf(base)
        first = post(base, "/a/message/new", token, body="as nobody")["id"]
        post(base, "/a/message/new", token, body="again")
        resumed = post(base, "/a/message/updates", token, cursor=first)["messages"]
        assert [m["body"] for m in resumed] == ["again"]
        assert not s.matching("refused a connection")
