"""Each private name of Python and of prometheus_client that the package
relies on exists and behaves as used, on the versions installed; and no
module but the three that claim them uses a private name that is not ours.

The Tornado ones are in ``tests/test_tornado_private.py``.
"""

from __future__ import annotations

import ast
import logging
import os
import pathlib
import struct
import subprocess
import sys
import textwrap

import pytest
from tornado.log import LogFormatter

import tornado_prefork
from tornado_prefork._system import python_names as _python_names

PACKAGE = pathlib.Path(tornado_prefork.__file__).parent
# The modules that hold every use of a foreign private name.
CLAIMING = {
    "_system/tornado_names.py",
    "_system/python_names.py",
    "_system/redis_names.py",
    "_metrics/prometheus_names.py",
}
# Our own private attributes read on objects other than ``self`` or ``cls``:
# (module, attribute), each an object of that same module or a close partner.
OURS = {
    # The module's functions work on its own ValueFile objects.
    ("_metrics/directory.py", "_relink"),
    ("_metrics/directory.py", "_to_memory"),
    # _Tracked tells its PreforkHTTPServer.
    ("_worker/httpserver.py", "_request_started"),
    ("_worker/httpserver.py", "_request_ended"),
    # The module's fork hook resets its own NonBlockingStreamHandler objects.
    ("logs.py", "_forget"),
}
# Underscored but documented: the underscore says what it skips, not that it is private.
DOCUMENTED = {("os", "_exit")}
_BY_STRING = {"getattr", "hasattr", "setattr", "delattr"}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def foreign_private_names(source: str, module: str) -> list[str]:
    """Each use of a private name that is not ours in ``source``, as ``line: name``."""
    tree = ast.parse(source)
    # Names bound to our own modules (``from tornado_prefork._x import y as _y``).
    own: set[str] = {"self", "cls"}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tornado_prefork"):
            own.update(alias.asname or alias.name for alias in node.names)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            base = node.value
            if isinstance(base, ast.Name) and (
                base.id in own or (base.id, node.attr) in DOCUMENTED
            ):
                continue
            if (module, node.attr) in OURS:
                continue
            found.append(f"{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.ImportFrom) and not (node.module or "").startswith(
            "tornado_prefork"
        ):
            found.extend(
                f"{node.lineno}: from {node.module} import {alias.name}"
                for alias in node.names
                if _private(alias.name)
            )
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _BY_STRING
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _private(node.args[1].value)
            and (module, node.args[1].value) not in OURS
        ):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_foreign_private_name_outside_the_modules_that_claim_them() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.relative_to(PACKAGE).as_posix()
        if module not in CLAIMING:
            found.extend(
                f"{module}:{use}" for use in foreign_private_names(path.read_text(), module)
            )
    assert found == []


def test_the_scan_finds_each_kind_of_use() -> None:
    source = textwrap.dedent(
        """
        import atexit, os
        from tornado.httpserver import _ProxyAdapter
        from tornado_prefork._supervisor import children as _children
        atexit._run_exitfuncs()
        server._handle_connection(sock, address)
        getattr(REGISTRY, "_collector_to_names", {})
        self.server._request_started(self)
        self._fine = _children._open_event_loops()
        os._exit(0)
        """
    )
    assert sorted(foreign_private_names(source, "_worker/life.py")) == [
        "3: from tornado.httpserver import _ProxyAdapter",
        "5: atexit._run_exitfuncs",
        "6: server._handle_connection",
        "7: getattr(REGISTRY, '_collector_to_names', {})",
        "8: self.server._request_started",
    ]
    # The same line in the module it is allowed in.
    assert (
        foreign_private_names("self.server._request_started(self)", "_worker/httpserver.py") == []
    )


def test_every_allowed_attribute_is_still_used() -> None:
    # An entry left behind would allow a foreign name of the same spelling.
    for module, attribute in OURS:
        assert f"._{attribute[1:]}" in (PACKAGE / module).read_text(), (module, attribute)


# Python


def test_run_atexit_handlers_runs_each_once_now() -> None:
    script = textwrap.dedent(
        """
        import atexit
        from tornado_prefork._system import python_names

        atexit.register(print, "second")
        atexit.register(print, "first")
        python_names.run_atexit_handlers()
        print("after")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    # Last registered first, and unregistered: the interpreter's exit runs none again.
    assert result.stdout.split() == ["first", "second", "after"]


def test_formatter_format_is_the_format_string() -> None:
    assert _python_names.formatter_format(logging.Formatter("%(name)s %(message)s")) == (
        "%(name)s %(message)s"
    )
    assert _python_names.formatter_format(LogFormatter()) == LogFormatter.DEFAULT_FORMAT
    assert _python_names.formatter_format(LogFormatter(fmt="%(message)s")) == "%(message)s"


# prometheus_client

prometheus_client = pytest.importorskip("prometheus_client")

from prometheus_client.mmap_dict import MmapedDict  # noqa: E402

from tornado_prefork._metrics import prometheus_names as _names  # noqa: E402


def _read_file(path: pathlib.Path) -> bytes | None:
    fd = os.open(path, os.O_RDONLY)
    try:
        return _names.read(fd)
    finally:
        os.close(fd)


def test_a_file_prometheus_client_writes_reads_back(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "counter_1.db"
    written = MmapedDict(str(path))
    written.write_value("a", 1.5, 2.0)
    written.write_value('["metric", "sample", {"l": "é"}, "help"]', 3.0, 0.0)
    written.close()
    assert path.stat().st_size == _names.INITIAL_SIZE
    data = _read_file(path)
    assert data is not None and _names.used(data) == len(data)
    found = list(_names.entries(data))
    assert [(key, value, stamp) for key, value, stamp, _ in found] == [
        (b"a", 1.5, 2.0),
        ('["metric", "sample", {"l": "é"}, "help"]'.encode(), 3.0, 0.0),
    ]
    position = _names.HEADER
    for key, value, stamp, value_at in found:
        assert _names.entry_at(data, position, len(data)) == (key, value_at)
        assert _names.value_of(data, value_at) == (value, stamp)
        position = value_at + _names.VALUE_SIZE
    assert position == len(data)
    # One struct over the file, gaps and values, as the scrape reads it.
    gaps, position = [], _names.HEADER
    for *_, value_at in found:
        gaps.append(f"{value_at - position}x{_names.VALUE_CODE}")
        position = value_at + _names.VALUE_SIZE
    unpacked = _names.values_struct("".join(gaps)).unpack_from(data, _names.HEADER)
    assert unpacked == (1.5, 2.0, 3.0, 0.0)


def test_a_file_written_here_reads_in_prometheus_client(tmp_path: pathlib.Path) -> None:
    encoded = tmp_path / "counter_2.db"
    encoded.write_bytes(_names.encode({b"a": (1.0, 5.0), b"bcdefghijk": (2.5, 0.0)}))
    reader = MmapedDict(str(encoded))
    try:
        assert list(reader.read_all_values()) == [("a", 1.0, 5.0), ("bcdefghijk", 2.5, 0.0)]
    finally:
        reader.close()
    # Appended as a value file does: the entry, then the count, then the value.
    memory = bytearray(_names.INITIAL_SIZE)
    _names.set_used(memory, _names.HEADER)
    entry = _names.entry(b"key", 0.0, 0.0)
    end = _names.HEADER + len(entry)
    memory[_names.HEADER : end] = entry
    _names.set_used(memory, end)
    _names.set_value(memory, end - _names.VALUE_SIZE, 7.0, 8.0)
    appended = tmp_path / "gauge_all_3.db"
    appended.write_bytes(bytes(memory))
    reader = MmapedDict(str(appended))
    try:
        assert list(reader.read_all_values()) == [("key", 7.0, 8.0)]
    finally:
        reader.close()


def test_an_entry_past_the_end_is_an_error() -> None:
    data = bytearray(_names.encode({b"abc": (1.0, 0.0)}))
    struct.pack_into("i", data, _names.HEADER, 1000)
    with pytest.raises(RuntimeError, match="corrupted"):
        list(_names.entries(bytes(data)))


def test_a_file_being_created_reads_as_none(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "counter_4.db"
    path.write_bytes(b"")
    assert _read_file(path) is None
    path.write_bytes(bytes(_names.INITIAL_SIZE))
    assert _read_file(path) is None


def test_values_are_stored_through_the_class_given(tmp_path: pathlib.Path) -> None:
    script = textwrap.dedent(
        """
        import os, sys
        from tornado_prefork._metrics import prometheus_names as names

        assert names.switch_to_multiprocess() is False
        import prometheus_client
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[1]
        assert names.switch_to_multiprocess() is True
        prometheus_client.Counter("first", "h").inc()
        opened = []

        class Recording:
            def __init__(self, path):
                opened.append(os.path.basename(path))
                self.values = {}
            def read_value(self, key):
                return self.values.get(key, (0.0, 0.0))
            def write_value(self, key, value, timestamp):
                self.values[key] = (value, timestamp)
            def close(self):
                pass

        names.store_values_with(Recording)
        prometheus_client.Gauge("second", "h", multiprocess_mode="livesum").set(2)
        print(sorted(os.listdir(sys.argv[1])), opened)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
    )
    pid = result.stdout.split("'counter_")[1].split(".db")[0]
    assert result.stdout.strip() == f"['counter_{pid}.db'] ['gauge_livesum_{pid}.db']"


def test_registered_collectors_and_their_types() -> None:
    counter = prometheus_client.Counter("tornado_prefork_private_test", "h")
    try:
        collectors = dict((id(c), names) for c, names in _names.registered_collectors())
        assert "tornado_prefork_private_test_total" in collectors[id(counter)]
    finally:
        prometheus_client.REGISTRY.unregister(counter)
    assert _names.metric_type(counter) == "counter"
    assert _names.metric_type(prometheus_client.Gauge("g", "h", registry=None)) == "gauge"
    assert _names.metric_type(prometheus_client.Info("i", "h", registry=None)) == "info"
    assert _names.metric_type(object()) is None


def test_make_values_again_starts_each_value_anew() -> None:
    registry = prometheus_client.CollectorRegistry()
    plain = prometheus_client.Counter("plain", "h", registry=registry)
    labelled = prometheus_client.Counter("labelled", "h", ["l"], registry=registry)
    plain.inc(3)
    labelled.labels("x").inc(4)
    _names.make_values_again(plain)
    _names.make_values_again(labelled)
    assert registry.get_sample_value("plain_total") == 0.0
    assert registry.get_sample_value("labelled_total", {"l": "x"}) == 0.0
    labelled.labels("x").inc()
    assert registry.get_sample_value("labelled_total", {"l": "x"}) == 1.0
    with pytest.raises(AttributeError):
        _names.make_values_again(object())
