"""Every use of prometheus_client's private names and of its file format, in one place.

prometheus_client documents its multiprocess mode but not how it stores the
values, nor a way to choose that store or to move metrics made before the
directory was set. Each accessor says what it relies on, and
``tests/test_private_names.py`` checks each against the installed
prometheus_client, so an upgrade means reading this file and running that test.

The files are in the format of prometheus_client's ``MmapedDict``: a
used-bytes count (4 bytes, then 4 of padding), then entries of a length (4
bytes), a JSON key padded with spaces so that the two make a multiple of 8, a
value and a timestamp (8 bytes each), in native byte order. Entries are only
ever appended, and the used-bytes count is written after the entry it covers.
"""

from __future__ import annotations

import importlib
import mmap
import os
import struct
import sys
from collections.abc import Iterator
from typing import Any

# Where the first entry starts: the used-bytes count and its padding.
HEADER = 8
# The size prometheus_client gives a new file.
INITIAL_SIZE = 1 << 16
# The bytes of one value and its timestamp, which end each entry.
VALUE_SIZE = 16
# The struct code of one value and its timestamp.
VALUE_CODE = "dd"
# Bytes read at first: the used-bytes count and, for most files, everything.
_FIRST_READ = 4096
_INT = struct.Struct("i")
_VALUE = struct.Struct(VALUE_CODE)

Buffer = bytes | bytearray | mmap.mmap


def used(data: Buffer) -> int:
    """The used-bytes count at the start of a file's ``data``."""
    end: int = _INT.unpack_from(data, 0)[0]
    return end


def set_used(memory: bytearray | mmap.mmap, end: int) -> None:
    """Writes the used-bytes count: written after an entry, it makes the entry seen."""
    memory[0:4] = _INT.pack(end)


def read(fd: int) -> bytes | None:
    """The used part of the file open as ``fd``; None for a file its process
    is still creating."""
    data = os.pread(fd, _FIRST_READ, 0)
    # A file just created is empty, then sized, then given its used-bytes count.
    end = used(data) if len(data) >= HEADER else 0
    if end < HEADER:
        return None
    while len(data) < end:
        more = os.pread(fd, end - len(data), len(data))
        if not more:
            break
        data += more
    return data[:end]


def entry_at(data: Buffer, position: int, end: int) -> tuple[bytes, int]:
    """The key of the entry at ``position`` and where its value is; raises
    `RuntimeError` for an entry that runs past ``end``."""
    length = _INT.unpack_from(data, position)[0]
    start = position + 4
    if start + length > end:
        raise RuntimeError("a metrics file is corrupted: an entry runs past its end")
    # The key and its length field together are padded to a multiple of 8.
    return bytes(data[start : start + length]), start + length + (8 - (length + 4) % 8)


def entries(data: Buffer) -> Iterator[tuple[bytes, float, float, int]]:
    """The entries of a file's used part: key, value, timestamp, and where the value is."""
    end = used(data)
    position = HEADER
    while position < end:
        key, value_at = entry_at(data, position, end)
        value, timestamp = value_of(data, value_at)
        yield key, value, timestamp, value_at
        position = value_at + VALUE_SIZE


def value_of(data: Buffer, position: int) -> tuple[float, float]:
    """The value and timestamp at ``position``."""
    value, timestamp = _VALUE.unpack_from(data, position)
    return value, timestamp


def set_value(memory: bytearray | mmap.mmap, position: int, value: float, timestamp: float) -> None:
    """Writes a value and its timestamp at ``position``, in one slice assignment
    as prometheus_client does."""
    memory[position : position + VALUE_SIZE] = _VALUE.pack(value, timestamp)


def entry(key: bytes, value: float, timestamp: float) -> bytes:
    """One entry, ready to append."""
    padded = key + b" " * (8 - (len(key) + 4) % 8)
    return struct.pack(f"i{len(padded)}s{VALUE_CODE}", len(key), padded, value, timestamp)


def encode(values: dict[bytes, tuple[float, float]]) -> bytes:
    """A whole file holding ``values`` (key: value and timestamp)."""
    body = b"".join(entry(key, *pair) for key, pair in values.items())
    return _INT.pack(HEADER + len(body)) + bytes(HEADER - 4) + body


def values_struct(layout: str) -> struct.Struct:
    """The struct that unpacks a file's values at once, from the struct codes
    of ``layout`` (gaps as ``x``, each value as `VALUE_CODE`)."""
    # Native byte order as the writer's, no alignment: the gaps say where.
    return struct.Struct("=" + layout)


def switch_to_multiprocess() -> bool:
    """Makes every value made from now on a multiprocess one (it reads
    ``PROMETHEUS_MULTIPROC_DIR`` now); False, doing nothing, when
    ``prometheus_client.values`` is not imported yet (it then reads the
    variable when it is).

    Relies on ``prometheus_client.values.ValueClass``, the class each metric
    makes its values of, chosen once, when the module is imported, by
    ``MultiProcessValue()`` or not.
    """
    values = sys.modules.get("prometheus_client.values")
    if values is None:
        return False
    values.ValueClass = values.MultiProcessValue()  # type: ignore[attr-defined]
    return True


def store_values_with(value_file: type) -> None:
    """Makes multiprocess values open their files as ``value_file(path)``,
    in this process and in those it forks, from the next file opened.

    Relies on ``prometheus_client.values.MmapedDict``, which its multiprocess
    value looks up in its module's globals each time it opens a file, and
    calls with the path, then ``read_value``, ``write_value`` and ``close``.
    """
    values = importlib.import_module("prometheus_client.values")
    values.MmapedDict = value_file  # type: ignore[attr-defined]


def registered_collectors() -> list[tuple[object, list[str]]]:
    """The collectors of prometheus_client's default registry, each with the
    names it registered.

    Relies on ``CollectorRegistry._collector_to_names``; empty when it is not there.
    """
    from prometheus_client import REGISTRY

    found = getattr(REGISTRY, "_collector_to_names", {})
    return [(collector, list(names)) for collector, names in list(found.items())]


def metric_type(collector: object) -> str | None:
    """The type of a metric (``counter``, ``gauge``, ...); None for another collector.

    Relies on ``MetricWrapperBase._type``.
    """
    kind = getattr(collector, "_type", None)
    return kind if isinstance(kind, str) else None


def make_values_again(metric: Any) -> None:
    """Makes the values of ``metric`` and of each of its labelled children
    again, with the value class in force now (what they counted is lost).
    Raises `AttributeError` for a metric not laid out as relied on.

    Relies on ``MetricWrapperBase._is_parent`` (a metric with labels holds no
    value itself), ``._metrics`` (its children, by label values) and
    ``._metric_init`` (which makes a metric's values).
    """
    children = metric._metrics.values() if metric._is_parent() else []
    for each in [metric, *children]:
        if not each._is_parent():
            each._metric_init()
