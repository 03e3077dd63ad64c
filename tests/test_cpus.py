"""cpu_count(): affinity and cgroup quotas, against fake cgroup trees."""

from __future__ import annotations

import os
from pathlib import Path

from tests import procs
from tornado_prefork import cpu_count
from tornado_prefork._system import cpus as _cpus


def tree(tmp_path: Path, proc_cgroup: str, files: dict[str, str]) -> tuple[str, str]:
    root = tmp_path / "cgroup"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(proc_cgroup)
    return str(root), str(proc)


def test_v2_quota_rounds_up(tmp_path: Path) -> None:
    root, proc = tree(tmp_path, "0::/app\n", {"app/cpu.max": "150000 100000\n"})
    assert _cpus.quota_cpus(root, proc) == 1.5
    assert _cpus.usable_cpus(root, proc) == min(2, _cpus.affinity_cpus() or 2)


def test_v2_unlimited(tmp_path: Path) -> None:
    root, proc = tree(tmp_path, "0::/app\n", {"app/cpu.max": "max 100000\n"})
    assert _cpus.quota_cpus(root, proc) is None
    assert _cpus.usable_cpus(root, proc) == _cpus.affinity_cpus()


def test_v2_limit_on_an_ancestor_applies(tmp_path: Path) -> None:
    root, proc = tree(
        tmp_path,
        "0::/kubepods/pod1/ctr\n",
        {
            "kubepods/pod1/ctr/cpu.max": "max 100000\n",
            "kubepods/pod1/cpu.max": "50000 100000\n",
            "kubepods/cpu.max": "400000 100000\n",
        },
    )
    assert _cpus.quota_cpus(root, proc) == 0.5
    # Half a CPU still runs one worker.
    assert _cpus.usable_cpus(root, proc) == 1


def test_v1_container_view(tmp_path: Path) -> None:
    # Without a cgroup namespace the path names the host's hierarchy, but the
    # container sees its own cgroup at the mount's root.
    root, proc = tree(
        tmp_path,
        "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n",
        {"cpu,cpuacct/cpu.cfs_quota_us": "300000\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"},
    )
    assert _cpus.quota_cpus(root, proc) == 3.0


def test_v1_no_quota(tmp_path: Path) -> None:
    root, proc = tree(
        tmp_path,
        "2:cpu:/\n",
        {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"},
    )
    assert _cpus.quota_cpus(root, proc) is None


def test_missing_or_garbled_files_mean_no_limit(tmp_path: Path) -> None:
    root, proc = tree(tmp_path, "0::/x\n", {"x/cpu.max": "garbage\n"})
    assert _cpus.quota_cpus(root, proc) is None
    assert _cpus.quota_cpus(root, str(tmp_path / "absent")) is None


def test_cpu_count_follows_affinity() -> None:
    result = procs.run(
        procs.python(
            "import os\nos.sched_setaffinity(0, {0})\n"
            "from tornado_prefork import cpu_count\nprint(cpu_count())"
        )
    )
    assert result.stdout.strip() == "1", result.stderr


def test_cpu_count_never_exceeds_affinity() -> None:
    assert 1 <= cpu_count() <= len(os.sched_getaffinity(0))
