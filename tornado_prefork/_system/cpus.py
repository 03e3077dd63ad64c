"""How many CPUs this process may really use: affinity and cgroup CPU quota.

``os.cpu_count()`` counts the host. In a container limited to two CPUs on a
64-core host that forks 64 workers which then fight for two CPUs' worth of
time slices, so the count here is the smallest of the affinity mask and every
cgroup quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us``)
on the path from this process's cgroup up to the root.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

CGROUP_ROOT = "/sys/fs/cgroup"
PROC_CGROUP = "/proc/self/cgroup"


def affinity_cpus() -> int | None:
    """The number of CPUs in this process's affinity mask, or None if unknown."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def quota_cpus(cgroup_root: str = CGROUP_ROOT, proc_cgroup: str = PROC_CGROUP) -> float | None:
    """The tightest CPU quota (in CPUs) of this process's cgroups, or None if unlimited.

    ``cgroup_root`` and ``proc_cgroup`` are parameters so that a test can point
    them at a fake tree.
    """
    try:
        lines = Path(proc_cgroup).read_text().splitlines()
    except OSError:
        return None
    limits: list[float] = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            limits.extend(_v2_limits(Path(cgroup_root), path))
        elif "cpu" in controllers.split(","):
            limits.extend(_v1_limits(Path(cgroup_root), controllers, path))
    return min(limits, default=None)


def usable_cpus(cgroup_root: str = CGROUP_ROOT, proc_cgroup: str = PROC_CGROUP) -> int | None:
    """Affinity capped by the cgroup quota rounded up; None if neither is known."""
    count = affinity_cpus()
    quota = quota_cpus(cgroup_root, proc_cgroup)
    if quota is not None:
        # A quota of 1.5 CPUs keeps two workers busy; rounding down would idle half a CPU.
        ceiling = max(1, math.ceil(quota))
        count = ceiling if count is None else min(count, ceiling)
    return count


def _ancestors(mount: Path, path: str) -> Iterator[Path]:
    """``mount/path`` and each of its parents up to ``mount`` itself."""
    parts = [p for p in path.split("/") if p]
    for depth in range(len(parts), -1, -1):
        yield mount.joinpath(*parts[:depth])


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _v2_limits(root: Path, path: str) -> Iterator[float]:
    # A limit set on any ancestor applies too, so every level counts.
    for directory in _ancestors(root, path):
        text = _read(directory / "cpu.max")
        if text is None:
            continue
        quota, _, period = text.partition(" ")
        if quota != "max" and period:
            try:
                yield int(quota) / int(period)
            except (ValueError, ZeroDivisionError):
                continue


def _v1_limits(root: Path, controllers: str, path: str) -> Iterator[float]:
    # Where the cpu controller is mounted depends on the distribution ("cpu",
    # "cpu,cpuacct", ...). Inside a container without a cgroup namespace the
    # path names the host's hierarchy while the mount shows the container's
    # own cgroup at its root, which _ancestors() reaches last.
    mounts = [root / controllers, root / "cpu", root / "cpu,cpuacct", root / "cpuacct,cpu"]
    for mount in dict.fromkeys(mounts):
        for directory in _ancestors(mount, path):
            quota = _read(directory / "cpu.cfs_quota_us")
            period = _read(directory / "cpu.cfs_period_us")
            if quota is None or period is None:
                continue
            try:
                q, p = int(quota), int(period)
            except ValueError:
                continue
            if q > 0 and p > 0:
                yield q / p
