"""The PNG charts of ``docs/benchmarks.md``, from one run's data."""

from __future__ import annotations

import math
from typing import Any

import memory
import split
from harness import ACCEPT_PATTERNS, LABELS, PATTERNS
from report import CASE_LABELS, DOCS, MODES, cpu_per_request, requests_per_second


def draw(data: dict[str, Any]) -> bool:
    """The PNG charts beside ``docs/benchmarks.md``; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no charts", flush=True)
        return False
    DOCS.mkdir(exist_ok=True)
    counts = list(data["cpus"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    groups = [(n, mode) for n in counts for mode in MODES]
    width = 0.8 / len(PATTERNS)
    for i, pattern in enumerate(PATTERNS):
        where = [g + i * width for g in range(len(groups))]
        axes[0].bar(
            where,
            [requests_per_second(data, pattern, n, m) for n, m in groups],
            width,
            label=LABELS[pattern],
        )
        axes[1].bar(where, [cpu_per_request(data, pattern, n, m) for n, m in groups], width)
    for ax, title in zip(
        axes, ("requests/s (median)", "worker CPU µs per request (lowest)"), strict=True
    ):
        ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))])
        ax.set_xticklabels([f"N={n}\n{m}" for n, m in groups])
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(DOCS / "benchmarks-throughput.png", dpi=100)
    plt.close(fig)
    _split_chart(plt, data)
    _memory_chart(plt, data)
    return True


def _split_chart(plt: Any, data: dict[str, Any]) -> None:
    cap = 20.0
    fig, ax = plt.subplots(figsize=(8, 3.8))
    width = 0.8 / len(ACCEPT_PATTERNS)
    for i, pattern in enumerate(ACCEPT_PATTERNS):
        values = [split.median_ratio(data["split"][pattern][c]) for c in split.CASES]
        where = [g + i * width for g in range(len(split.CASES))]
        ax.bar(where, [min(v, cap) for v in values], width, label=LABELS[pattern])
        for x, v in zip(where, values, strict=True):
            if v > cap:
                ax.text(
                    x,
                    cap,
                    "inf" if math.isinf(v) else f"{v:.0f}",
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
    ax.axhline(1.5, linestyle="--", color="grey")
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(split.CASES))])
    ax.set_xticklabels([CASE_LABELS[c] for c in split.CASES])
    ax.set_ylabel(f"connections max/min (capped at {cap:.0f})")
    highest = max(
        split.median_ratio(data["split"][p][c]) for p in ACCEPT_PATTERNS for c in split.CASES
    )
    ax.set_ylim(0, max(3.0, min(highest, cap)) * 1.15)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(DOCS / "benchmarks-split.png", dpi=100)
    plt.close(fig)


def _memory_chart(plt: Any, data: dict[str, Any]) -> None:
    sizes = data["memory"]["sizes"]
    ways = list(memory.WAYS)
    fig, ax = plt.subplots(figsize=(8, 3.8))
    parent = [sizes[w]["parent"] for w in ways]
    workers = [sizes[w]["total"] - sizes[w]["parent"] for w in ways]
    ax.barh(ways, parent, label="parent")
    ax.barh(ways, workers, left=parent, label="workers")
    ax.invert_yaxis()
    ax.set_xlabel("total PSS, MiB (4 workers after load with full collections)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(DOCS / "benchmarks-memory.png", dpi=100)
    plt.close(fig)
