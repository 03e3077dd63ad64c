"""``docs/benchmarks.md``, its charts and the README's summary, from one run's data."""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import math
import platform
import statistics
import subprocess
from typing import Any

import burst
import memory
import reload
import split
from harness import ACCEPT_PATTERNS, ALL_CPUS, LABELS, PATTERNS, ROOT, SERVERS, cpu_list

DOCS = ROOT / "docs"
SUMMARY_START = "<!-- bench-summary:start -->"
SUMMARY_END = "<!-- bench-summary:end -->"
MODES = ("keep-alive", "close")
CASE_LABELS = {
    "staggered": "wrk's staggered connects",
    "burst": "a burst of connects",
    "busy": "new connections while busy",
}


METHOD = (
    "**How throughput is measured.** A client and a server on the same CPUs fight for "
    "them, and requests/s then says more about the scheduler than about the server. So "
    "the N workers (and their parent) are pinned to N CPUs with `taskset` and wrk, one "
    "thread per CPU, to the others; beside requests/s each run reports the workers' CPU "
    "time per request (user + system, from `/proc`), which depends far less on how much "
    "CPU the client and the other work on the machine leave the server."
)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def requests_per_second(
    data: dict[str, Any], pattern: str, n: int, mode: str = "keep-alive"
) -> float:
    return median([x["rps"] for x in data["throughput"]["runs"][(pattern, n, mode)]])


def cpu_per_request(data: dict[str, Any], pattern: str, n: int, mode: str = "keep-alive") -> float:
    """Worker CPU µs per request: the lowest of the repetitions, because other work on
    the machine (its caches, its share of the CPU) only ever adds to it."""
    return min(x["cpu_us"] for x in data["throughput"]["runs"][(pattern, n, mode)])


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _split_text(ratio: float) -> str:
    return "inf (all on one)" if math.isinf(ratio) else f"{ratio:.2f}"


def summary(data: dict[str, Any]) -> str:
    """The table of targets, as the README and the top of the document show it."""
    rows = ["| target | measured | met |", "| --- | --- | --- |"]
    rows += _cost_rows(data)
    rows += _restart_rows(data)
    rows += _split_rows(data)
    rows += _behaviour_rows(data)
    rows += _context_rows(data)
    return "\n".join(rows)


def _cost_rows(data: dict[str, Any]) -> list[str]:
    sizes = data["memory"]["sizes"]
    pss = sizes["cli-default"]["total"] / sizes["tornado"]["total"]
    rows = [
        f"| CLI default total PSS <= 0.5x Tornado's pattern (4 workers, ~1M-object app) | "
        f"{pss:.2f}x ({sizes['cli-default']['total']:.0f} vs "
        f"{sizes['tornado']['total']:.0f} MiB) | {_met(pss <= 0.5)} |"
    ]
    for n in data["cpus"]:
        for pattern, limit in (("prefork", 1.03), ("prefork-uvloop", 0.95)):
            ours, theirs = cpu_per_request(data, pattern, n), cpu_per_request(data, "tornado", n)
            rows.append(
                f"| worker CPU per request <= {limit:.2f}x Tornado's, {LABELS[pattern]}, N={n}, "
                f"keep-alive, pinned | {ours / theirs:.2f}x ({ours:.0f} vs {theirs:.0f} µs) | "
                f"{_met(ours / theirs <= limit)} |"
            )
    return rows


def _restart_rows(data: dict[str, Any]) -> list[str]:
    heavy = data["memory"]["restart"]
    rows = []
    for what, times in (
        ("hello app", {p: data["restart"][p]["answered"] for p in ("prefork", "tornado")}),
        (
            "~1M-object app, preloaded (the CLI default)",
            {"prefork": heavy["cli-default"], "tornado": heavy["tornado"]},
        ),
    ):
        ours, theirs = median(times["prefork"]), median(times["tornado"])
        rows.append(
            f"| restart latency <= 1.0x Tornado's, {what} | {ours / theirs:.2f}x "
            f"({ours * 1000:.0f} vs {theirs * 1000:.0f} ms) | {_met(ours <= theirs)} |"
        )
    return rows


def _split_rows(data: dict[str, Any]) -> list[str]:
    rows = []
    for case in ("burst", "busy"):
        ours = split.median_ratio(data["split"]["prefork"][case])
        theirs = split.median_ratio(data["split"]["tornado"][case])
        rows.append(
            f"| connection split max/min <= 1.5, 2 workers, {CASE_LABELS[case]} | "
            f"{_split_text(ours)} (Tornado: {_split_text(theirs)}) | {_met(ours <= 1.5)} |"
        )
    return rows


def _behaviour_rows(data: dict[str, Any]) -> list[str]:
    hup = data["hup"]
    failed = sum(data["reload"][p]["errors"] for p in data["reload"])
    lost = data["sigterm"]["prefork"]["lost"]
    cpu = data["idle"]["prefork"]["cpu_ms"]
    return [
        f'| (report) SIGHUP of {data["hup_workers"]} workers until "reload finished" | '
        f"rolling {median(hup['rolling']):.2f} s, in place {median(hup['in-place']):.2f} s | - |",
        f"| zero failed requests in reloads under load | {failed:.0f} | {_met(failed == 0)} |",
        f"| zero in-flight requests lost on SIGTERM | {lost} (Tornado: "
        f"{data['sigterm']['tornado']['lost']}) | {_met(lost == 0)} |",
        f"| idle parent uses no measurable CPU | {cpu:.0f} ms in "
        f"{data['idle_seconds']:.0f} s | {_met(cpu <= 20)} |",
    ]


def _context_rows(data: dict[str, Any]) -> list[str]:
    rows = []
    for n in data["cpus"]:
        cpu = cpu_per_request(data, "tornado-uvloop", n) / cpu_per_request(data, "tornado", n)
        rows.append(
            f"| (also) worker CPU per request vs Tornado, {LABELS['tornado-uvloop']}, N={n}, "
            f"keep-alive, pinned | {cpu:.2f}x | - |"
        )
        for pattern in ("prefork", "prefork-uvloop", "tornado-uvloop"):
            r = requests_per_second(data, pattern, n) / requests_per_second(data, "tornado", n)
            rows.append(
                f"| (also) requests/s vs Tornado, {LABELS[pattern]}, N={n}, keep-alive, pinned | "
                f"{r:.2f}x | - |"
            )
    return rows


def document(data: dict[str, Any], args: argparse.Namespace, elapsed: float) -> str:
    lines = _header(data, args, elapsed)
    lines += ["## Summary against the targets", "", SUMMARY_START, summary(data), SUMMARY_END, ""]
    lines += _throughput(data, args)
    lines += _restart(data, args)
    lines += _memory(data, args)
    lines += _hup(data, args)
    lines += _split(data, args)
    lines += [*burst.section(data["burst"]), ""]
    lines += _failures(data, args)
    return "\n".join(lines)


def _header(data: dict[str, Any], args: argparse.Namespace, elapsed: float) -> list[str]:
    plan = data["cpus"]
    measured = ", ".join(f"N={n}" for n in plan)
    skipped = [n for n in args.counts if n not in plan]
    lines = [
        "# Benchmarks",
        "",
        f"Measured {datetime.date.today().isoformat()} by `make bench` "
        f"(`python benchmarks/run.py`); this run took {elapsed / 60:.1f} minutes. "
        "Every number here is written by the runner, never by hand.",
        "",
        "To run it: `apt-get install -y wrk` (Debian/Ubuntu; `taskset` comes with "
        "util-linux), then `make bench`, which installs the `bench` extra "
        "(matplotlib, uvloop) into `.venv`.",
        "",
        f"- Machine: {platform.machine()}, {len(ALL_CPUS)} CPUs, "
        f"{platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}, Tornado {_version('tornado')}, "
        f"uvloop {_version('uvloop')}, tornado-prefork {_version('tornado-prefork')}, "
        f"{_wrk_version()}",
        f"- Load average (1 min) {data['load'][0]:.1f} at the start and "
        f"{data['load'][1]:.1f} at the end: other work shares these CPUs.",
        f"- The app: `benchmarks/hello.py` (hello world) unless said otherwise; "
        f"patterns run interleaved, {args.reps} repetitions, medians.",
        "",
        "Patterns: " + "; ".join(f"**{LABELS[p]}** (`{p}`)" for p in PATTERNS) + ". "
        "`serve()`'s default loop is `auto`, which picks uvloop when it is installed: "
        "the first two `serve` patterns ask for asyncio so that they compare with Tornado's.",
        "",
        METHOD,
        "",
    ]
    if skipped:
        lines += [
            f"This machine has {len(ALL_CPUS)} CPUs: throughput was measured for {measured} "
            f"only. {', '.join(f'N={n}' for n in skipped)} would leave wrk no CPU of its "
            "own, or oversubscribe the workers, which measures the scheduler rather than "
            "the server.",
            "",
        ]
    return lines


def _throughput(data: dict[str, Any], args: argparse.Namespace) -> list[str]:
    runs = data["throughput"]["runs"]
    lines = [
        "## Throughput, latency and CPU per request (pinned)",
        "",
        f"`wrk -c64 -d{args.seconds:g}s --latency`, keep-alive and `Connection: close`. "
        "The spread of requests/s is the lowest to the highest of the repetitions; a ratio "
        "inside it is not a difference. The targets use the lowest CPU per request of the "
        "repetitions (what `timeit` recommends too: interference only ever adds to it).",
        "",
        "| N | CPUs (server / wrk) | connections | pattern | requests/s | spread | p50 ms "
        "| p99 ms | errors | worker CPU µs/request, lowest | median | highest |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for n, (server_cpus, client_cpus) in data["cpus"].items():
        where = f"{cpu_list(server_cpus)} / {cpu_list(client_cpus)}"
        for mode in MODES:
            for pattern in PATTERNS:
                r = runs[(pattern, n, mode)]
                rps, cpu = [x["rps"] for x in r], [x["cpu_us"] for x in r]
                lines.append(
                    f"| {n} | {where} | {mode} | {LABELS[pattern]} | {median(rps):.0f} | "
                    f"{min(rps):.0f}-{max(rps):.0f} | {median([x['p50'] for x in r]):.2f} | "
                    f"{median([x['p99'] for x in r]):.2f} | "
                    f"{sum(x['errors'] for x in r):.0f} | {min(cpu):.0f} | "
                    f"{median(cpu):.0f} | {max(cpu):.0f} |"
                )
    launch = data["throughput"]["launch"]
    lines += [
        "",
        "![requests per second and CPU per request](benchmarks-throughput.png)",
        "",
        "Launch until every worker answers (s, median): "
        + "; ".join(
            f"{LABELS[p]} {median(launch[(p, n)]):.3f} (N={n})"
            for n in data["cpus"]
            for p in PATTERNS
        )
        + ".",
        "",
    ]
    return lines


def _restart(data: dict[str, Any], args: argparse.Namespace) -> list[str]:
    restart = data["restart"]
    lines = [
        f"## Restart latency (N=1, pinned, SIGKILL the worker, {args.restarts} times)",
        "",
        "Milliseconds from the SIGKILL until the new worker process is seen in `/proc` "
        "(the parent has reaped the old one and forked) and until it answers; the hello "
        "app. The client polls from the other CPU.",
        "",
        "| pattern | forked, median ms | answered, median ms | answered, max ms |",
        "| --- | ---: | ---: | ---: |",
    ]
    for pattern in SERVERS:
        forked, answered = restart[pattern]["forked"], restart[pattern]["answered"]
        lines.append(
            f"| {LABELS[pattern]} | {median(forked) * 1000:.1f} | "
            f"{median(answered) * 1000:.1f} | {max(answered) * 1000:.1f} |"
        )
    return [*lines, ""]


def _memory(data: dict[str, Any], args: argparse.Namespace) -> list[str]:
    sizes, latency = data["memory"]["sizes"], data["memory"]["restart"]
    base = sizes["tornado"]["total"]
    lines = [
        f"## Memory ({args.memory_workers} workers of a ~1M-object app)",
        "",
        "`benchmarks/memory.py` with `benchmarks/heavy.py` (1.5 million small objects built "
        "at import; a worker runs a full `gc.collect()` after its first answer and "
        "every 500th). The server "
        f"is pinned to CPU 0, wrk to CPU 1 (`Connection: close`, {args.memory_seconds} s). "
        "Then the proportional set size (PSS: each shared page divided among the processes "
        "that map it) of the parent and the workers is added up from "
        "`/proc/PID/smaps_rollup`. `docs/memory.md` explains why the rows differ.",
        "",
        "| how it runs | total PSS | parent PSS | private per worker | requests/s |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for way, (label, _) in memory.WAYS.items():
        m = sizes[way]
        lines.append(
            f"| {label} | {m['total']:.0f} MiB ({m['total'] / base:.2f}x) | "
            f"{m['parent']:.0f} MiB | {m['worker_private']:.1f} MiB | {m['rps']:.0f} |"
        )
    lines += [
        "",
        "The requests/s column shows how much CPU the run had, not a property of the way "
        "the app was started.",
        "",
        "![total PSS](benchmarks-memory.png)",
        "",
        f"Restart latency of the same app, 1 worker, {args.memory_restarts} SIGKILLs each:",
        "",
        "| how it runs | median | max |",
        "| --- | ---: | ---: |",
    ]
    for way in memory.RESTARTS:
        times = latency[way]
        lines.append(
            f"| {memory.WAYS[way][0]} | {median(times) * 1000:.0f} ms | "
            f"{max(times) * 1000:.0f} ms |"
        )
    return [*lines, ""]


def _hup(data: dict[str, Any], args: argparse.Namespace) -> list[str]:
    lines = [
        f"## Reload of {args.hup_workers} workers",
        "",
        f"`tornado-prefork hello:make_app --processes {args.hup_workers}`, idle; seconds from "
        'the SIGHUP until the parent logs "reload finished" (every slot has a ready worker '
        "of the new code and every old worker has gone), "
        f"{args.hup_times} reloads each. {args.hup_workers} workers on {len(ALL_CPUS)} CPUs, "
        "unpinned. After the first new worker proves the code, a quarter of the slots are "
        "replaced at a time.",
        "",
        "| reload | median s | max s |",
        "| --- | ---: | ---: |",
    ]
    for mode, (label, _) in reload.MODES.items():
        times = data["hup"][mode]
        lines.append(f"| {label} | {median(times):.2f} | {max(times):.2f} |")
    return [*lines, ""]


def _split(data: dict[str, Any], args: argparse.Namespace) -> list[str]:
    splits = data["split"]
    lines = [
        "## How 2 workers split 64 keep-alive connections",
        "",
        "Two workers, neither they nor the client pinned (on 2 CPUs that is the setting "
        "this question is about). Three ways the connections arrive: wrk's own, which it "
        "opens one after another; a burst opened at once on an idle server (a client pool "
        "or a proxy starting up); and new connections, one every 10 ms, while wrk keeps "
        "both workers busy. max/min of the connections each worker got, median of "
        f"{args.split_reps} runs (inf: one worker got them all), and every run's split.",
        "",
        "| pattern | " + " | ".join(CASE_LABELS[c] for c in split.CASES) + " |",
        "| --- |" + " --- |" * len(split.CASES),
    ]
    for pattern in ACCEPT_PATTERNS:
        cells = []
        for case in split.CASES:
            runs = splits[pattern][case]
            seen = ", ".join("/".join(map(str, counts)) for counts in runs)
            cells.append(f"{_split_text(split.median_ratio(runs))} ({seen})")
        lines.append(f"| {LABELS[pattern]} | " + " | ".join(cells) + " |")
    lines += ["", "![split](benchmarks-split.png)", ""]
    return lines


def _failures(data: dict[str, Any], args: argparse.Namespace) -> list[str]:
    kills, reloads, term, idle = data["kill"], data["reload"], data["sigterm"], data["idle"]
    lines = [
        "## Failures and the idle parent (N=2, unpinned)",
        "",
        "| pattern | failed requests, a worker SIGKILLed under load | failed requests, "
        f"{args.reloads} HUP reloads under load | slow requests lost, SIGTERM with "
        f"{args.inflight} in flight | workers alive 1 s after SIGTERM to the parent "
        f"| parent CPU over {args.idle:.0f} idle s, ms | parent RSS MiB "
        "| worker private MiB |",
        "| --- | --- | --- | --- | --- | ---: | ---: | ---: |",
    ]
    for pattern in SERVERS:
        reloaded = (
            f"{reloads[pattern]['errors']:.0f} of {reloads[pattern]['requests']:.0f}"
            if pattern in reloads
            else "no reload"
        )
        i = idle[pattern]
        lines.append(
            f"| {LABELS[pattern]} | {kills[pattern]['errors']:.0f} of "
            f"{kills[pattern]['requests']:.0f} | {reloaded} | {term[pattern]['lost']} of "
            f"{args.inflight} | {term[pattern]['orphans']} | {i['cpu_ms']:.0f} | "
            f"{i['parent_rss'] / 1024:.1f} | {i['worker_private'] / 1024:.1f} |"
        )
    return [*lines, ""]


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def _wrk_version() -> str:
    out = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout
    return out.split(" [")[0].strip() or "wrk"


def update_readme(table: str) -> None:
    """Puts ``table`` between the summary markers of README.md."""
    readme = ROOT / "README.md"
    text = readme.read_text()
    if SUMMARY_START in text and SUMMARY_END in text:
        head, rest = text.split(SUMMARY_START, 1)
        _, tail = rest.split(SUMMARY_END, 1)
        readme.write_text(f"{head}{SUMMARY_START}\n{table}\n{SUMMARY_END}{tail}")
