"""The README's tables that describe the code are checked against it."""

from __future__ import annotations

import re
import signal

from tests import procs

README = (procs.ROOT / "README.md").read_text()
PACKAGE = procs.ROOT / "tornado_prefork"


def _block(name: str) -> str:
    match = re.search(rf"<!-- {name}:start -->\n(.*?)<!-- {name}:end -->", README, re.S)
    assert match is not None, f"README.md needs <!-- {name}:start --> ... <!-- {name}:end -->"
    return match.group(1)


def test_the_module_map_names_every_module_once() -> None:
    named = re.findall(r"`(\w+\.py)`", _block("modules"))
    assert sorted(named) == sorted(path.name for path in PACKAGE.glob("*.py"))


def test_the_channel_table_names_every_message() -> None:
    from tornado_prefork import _channel

    table = README[README.index("### The channel") : README.index("### The accept board")]
    documented = set(re.findall(r"^\| `(\w+)", table, re.M))
    messages = {_channel.READY, _channel.HEARTBEAT, _channel.RECYCLE, _channel.ERROR}
    assert documented == {m.decode() for m in messages}


def test_the_signal_table_names_every_signal_the_parent_handles() -> None:
    from tornado_prefork import _spawn

    table = README[README.index("### Signals to the parent") :]
    table = table[: table.index("\n\n", table.index("| signal |"))]
    documented = {
        f"SIG{name.strip()}"
        for row in re.findall(r"^\| ([A-Z0-9, /]+) \|", table, re.M)
        for name in re.split(r"[,/]", row)
    }
    handled = {signal.Signals(s).name for s in _spawn.HANDLED} - {"SIGCHLD"}
    assert documented == handled
