"""The serve() settings a user sets from outside, in one table.

The command line (``--graceful-timeout``) and the `tornado.options` helpers
(``--graceful_timeout``) are both built from it, so every knob has the same
name, default and meaning in all three places.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from tornado_prefork._loop import LOOPS


@dataclasses.dataclass(frozen=True)
class Knob:
    """One setting: ``name`` is serve()'s keyword."""

    name: str
    kind: type
    default: object
    help: str
    low: float | None = None
    high: float | None = None
    metavar: str = "X"
    # Turns the text of the flag into the value serve() takes.
    parse: Callable[[str], object] | None = None
    # The only values the flag takes.
    choices: tuple[str, ...] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def octal(text: str) -> int:
    """``660`` or ``0o660``: a file mode."""
    return int(text.removeprefix("0o"), 8)


KNOBS = [
    Knob("processes", int, 0, "worker processes; 0 means one per usable CPU", 0, metavar="N"),
    Knob("port", int, 8888, "TCP port", 0, 65535, metavar="P"),
    Knob("address", str, "127.0.0.1", "address to bind", metavar="A"),
    Knob("unix_socket", str, None, "listen on this unix socket instead of TCP", metavar="PATH"),
    Knob(
        "unix_socket_mode",
        int,
        0o600,
        "file mode of the unix socket, in octal",
        metavar="MODE",
        parse=octal,
    ),
    Knob("reuse_port", bool, False, "each worker binds its own socket with SO_REUSEPORT"),
    Knob("backlog", int, 128, "listen backlog", 1, metavar="N"),
    Knob("xheaders", bool, False, "trust X-Real-Ip/X-Forwarded-For and X-Scheme/X-Forwarded-Proto"),
    Knob(
        "graceful_timeout",
        float,
        30.0,
        "seconds a worker gets to finish its requests after SIGTERM",
        0,
        metavar="S",
    ),
    Knob(
        "max_restarts",
        int,
        100,
        "restarts of failed workers before the server gives up",
        0,
        metavar="N",
    ),
    Knob(
        "min_uptime",
        float,
        1.0,
        "a worker that dies younger than this is restarted after a growing delay",
        0,
        metavar="S",
    ),
    Knob(
        "backoff_cap",
        float,
        5.0,
        "the longest delay before restarting a failing worker",
        0,
        metavar="S",
    ),
    Knob(
        "ready_timeout",
        float,
        60.0,
        "seconds a new worker has to get ready before it is killed; 0: no limit",
        0,
        metavar="S",
    ),
    Knob(
        "timeout",
        float,
        30.0,
        "a worker whose event loop is silent this long is aborted and replaced; 0: off",
        0,
        metavar="S",
    ),
    Knob(
        "max_requests",
        int,
        0,
        "replace a worker after this many requests; 0: never",
        0,
        metavar="N",
    ),
    Knob(
        "max_requests_jitter",
        int,
        0,
        "add 0 to this many to max_requests, per worker",
        0,
        metavar="N",
    ),
    Knob(
        "max_worker_age",
        float,
        0.0,
        "replace a worker after this many seconds; 0: never",
        0,
        metavar="S",
    ),
    Knob("pid_file", str, None, "write the parent's pid here; removed on exit", metavar="PATH"),
    Knob("user", str, None, "started as root: the user the workers run as", metavar="USER"),
    Knob("group", str, None, "started as root: the group the workers run as", metavar="GROUP"),
    Knob(
        "forwarded_allow_ips",
        str,
        "127.0.0.1",
        "with --xheaders, the proxies (comma-separated, * for any) whose "
        "X-Forwarded-For/X-Real-Ip are trusted",
        metavar="IPS",
    ),
    Knob(
        "preload",
        bool,
        None,
        "import the app's module in the parent before forking (--preload also calls a "
        "factory there), so that workers share its memory; --no-preload imports it in "
        "each worker; default: import in the parent, call a factory in each worker",
    ),
    Knob(
        "loop",
        str,
        "auto",
        "each worker's event loop: auto (uvloop if installed), asyncio, uvloop",
        metavar="LOOP",
        choices=LOOPS,
    ),
]
