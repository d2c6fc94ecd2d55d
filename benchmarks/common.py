"""How the benchmarks measure, the same way for every arm of every benchmark.

One CPU account for the worker (its threads and its child processes: the embedder is part of its cost),
one record of the machine's contention per arm (other processes' CPU, from /proc/stat minus our own
process tree, and the load average), the wait for a quiet machine before an arm, and one way to write a
section of RESULTS.md. What is measured (producers, the worker process) is in benchmarks/stack.py. Not run
on its own; the benchmarks that use it:

    python benchmarks/ingest.py --out benchmarks/RESULTS.md
    python benchmarks/processors.py --out benchmarks/RESULTS.md
    python benchmarks/gateway.py --out benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams.settings import Settings

REPO = Path(__file__).resolve().parent.parent
RESULTS_HEADER = ("# Benchmarks\n\nBenchmarks: each section names the command and machine; "
                  "ratios are against a baseline measured in the same run.\n")
DEFAULTS = Settings.model_construct()
CLK_TCK = os.sysconf("SC_CLK_TCK")
RESULT_PREFIX = "RESULT "
CONTENDED_CORES = 0.3
"""Other processes using more than this much of a core during an arm make its rate suspect."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def child_result(stdout: bytes) -> Any:
    """What a child process of a benchmark printed as its result (other output is ignored)."""
    lines = [line for line in stdout.decode().splitlines() if line.startswith(RESULT_PREFIX)]
    if not lines:
        raise RuntimeError("the child process printed no result")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# /proc: processes, memory, CPU ----------------------------------------------------------------------------

def children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(child) for child in (task / "children").read_text().split()]
    except OSError:
        pass
    return found


def descendants(pid: int) -> list[int]:
    found, todo = [], children(pid)
    while todo:
        child = todo.pop()
        found.append(child)
        todo += children(child)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def vm_rss_kib(pid: int) -> int:
    return _status_kib(pid, "VmRSS:")


def peak_rss_kib(pid: int) -> int:
    return _status_kib(pid, "VmHWM:")


def process_cpu_seconds(pid: int, *, reaped_children: bool = False) -> float:
    """utime + stime, and with reaped_children the CPU of the children it has waited for."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = [int(f) for f in stat[stat.rindex(")") + 2:].split()[11:15]]
    return sum(fields if reaped_children else fields[:2]) / CLK_TCK


def embedder_pid(worker_pid: int) -> int | None:
    """The embedder is the worker's spawned ProcessPoolExecutor child (the resource tracker is another)."""
    for pid in descendants(worker_pid):
        line = cmdline(pid)
        if "spawn_main" in line and "resource_tracker" not in line:
            return pid
    return None


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread group: the event loop (the main thread), other Python threads (they keep
    the name the process had when they started: the interpreter's, or Faust's process title) and
    ClickHouse's own threads (chdb names them)."""
    groups = {"event loop": 0.0, "other python threads": 0.0, "clickhouse threads": 0.0}
    try:
        python_names = {Path(f"/proc/{pid}/comm").read_text().strip(), Path(sys.executable).name[:15]}
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return groups
    for task in tasks:
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1: stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        seconds = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
        if int(task.name) == pid:
            groups["event loop"] += seconds
        elif comm in python_names:
            groups["other python threads"] += seconds
        else:
            groups["clickhouse threads"] += seconds
    return groups


def worker_cpu(pid: int) -> dict[str, float]:
    """The worker's CPU seconds: its thread groups, its embedder process, and any other child (the
    multiprocessing resource tracker). All of it is the worker's cost per event."""
    groups = thread_cpu(pid)
    embedder = embedder_pid(pid)
    groups["embedder process"] = process_cpu_seconds(embedder, reaped_children=True) if embedder else 0.0
    groups["other child processes"] = sum(process_cpu_seconds(p, reaped_children=True)
                                          for p in descendants(pid) if p != embedder)
    return groups


@dataclass(frozen=True)
class CpuSample:
    wall: float
    seconds: dict[str, float]

    @classmethod
    def of_worker(cls, pid: int) -> CpuSample:
        return cls(time.monotonic(), worker_cpu(pid))


def cpu_share(first: CpuSample, last: CpuSample) -> dict[str, float]:
    """Percent of one core per group (and in total) between two samples."""
    wall = max(last.wall - first.wall, 1e-3)
    share = {name: 100 * (last.seconds[name] - first.seconds.get(name, 0.0)) / wall for name in last.seconds}
    share["total"] = sum(share.values())
    return share


def cpu_text(cpu: dict[str, float]) -> str:
    parts = [f"{cpu['total']:.0f}% total"]
    parts += [f"{name} {share:.0f}%" for name, share in cpu.items() if name != "total" and round(share)]
    return ", ".join(parts)


# the machine: what else ran during an arm ----------------------------------------------------------------

def load_average() -> tuple[float, float, float]:
    one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    return float(one), float(five), float(fifteen)


@dataclass(frozen=True)
class MachineCpu:
    """Busy CPU seconds of the whole machine, and of this benchmark's own process tree, at one moment."""

    wall: float
    busy: float
    ours: float

    @classmethod
    def now(cls) -> MachineCpu:
        """Ours: this process and the children it has reaped (whose own reaped children are included), plus
        every live descendant (broker, worker, embedder, baseline, gateway, vLLM) and what it has reaped."""
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = values[3] + values[4]  # idle, iowait
        times = os.times()
        ours = times.user + times.system + times.children_user + times.children_system
        ours += sum(process_cpu_seconds(pid, reaped_children=True) for pid in descendants(os.getpid()))
        return cls(time.monotonic(), (sum(values[:8]) - idle) / CLK_TCK, ours)


@dataclass(frozen=True)
class Contention:
    """What else ran on the machine during an arm: cores busy in all, and how many of them were not ours."""

    load: tuple[float, float, float]
    busy_cores: float
    other_cores: float
    seconds: float = 0.0

    @classmethod
    def between(cls, first: MachineCpu, last: MachineCpu) -> Contention:
        wall = max(last.wall - first.wall, 1e-3)
        busy = last.busy - first.busy
        return cls(load_average(), busy / wall, max(busy - (last.ours - first.ours), 0.0) / wall, wall)

    @property
    def contended(self) -> bool:
        return self.other_cores > CONTENDED_CORES

    def cell(self) -> str:
        """Short, for a table column: cores used by others, the 1-min load average at the end."""
        return f"{self.other_cores:.2f} (load {self.load[0]:.1f})" + (" **contended**" if self.contended else "")

    def text(self) -> str:
        flag = (f" (**contended**: more than {CONTENDED_CORES} of a core went to others, so rates here are low)"
                if self.contended else "")
        return (f"load average {self.load[0]:.1f}/{self.load[1]:.1f}/{self.load[2]:.1f} at the end; "
                f"{self.busy_cores:.2f} of {os.cpu_count()} cores busy, {self.other_cores:.2f} of them by "
                f"processes outside this benchmark{flag}")


CONTENTION_NOTE = ("*Others* is the cores that processes outside this benchmark kept busy during the arm "
                   "(/proc/stat's busy time minus this benchmark's own process tree: broker, worker with its "
                   "embedder, baseline, producer), then the 1-minute load average at the arm's end; above "
                   f"{CONTENDED_CORES} of a core the arm is marked **contended** and its rate is not comparable.")


async def wait_for_quiet(max_other_cores: float, max_wait: float, sample_seconds: float = 5.0) -> Contention | None:
    """Before an arm: wait until other processes use less than `max_other_cores` over a sample, at most
    `max_wait` s (0: do not wait). Returns the last sample (None when not waited)."""
    if max_wait <= 0:
        return None
    deadline = time.monotonic() + max_wait
    while True:
        first = MachineCpu.now()
        await asyncio.sleep(sample_seconds)
        found = Contention.between(first, MachineCpu.now())
        if found.other_cores < max_other_cores:
            return found
        if time.monotonic() > deadline:
            log(f"  the machine stayed busy ({found.other_cores:.2f} cores used by others); starting anyway")
            return found
        log(f"  waiting for a quiet machine: {found.other_cores:.2f} cores used by others")


def add_quiet_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet-cores", type=float, default=CONTENDED_CORES,
                        help="before each arm, wait until other processes use less than this many cores "
                        "(default %(default)s)")
    parser.add_argument("--quiet-wait", type=float, default=300,
                        help="... but at most this many seconds per arm; 0: do not wait (default %(default)s)")


# the report ----------------------------------------------------------------------------------------------

def machine() -> str:
    mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:"))
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown CPU")
    return (f"{os.cpu_count()} cores ({cpu}), {mem_kib / 1024**2:.1f} GiB RAM, Python {platform.python_version()}, "
            f"Linux {platform.release()}")


def code_state() -> str:
    """The commit measured, and how many files differed from it (others may be editing the tree)."""
    def git(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=REPO, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = len(git("status", "--porcelain", "--untracked-files=all", "--", ".", ":!benchmarks").splitlines())
    return f"commit {commit}" + (f" with {changed} changed or new files outside benchmarks/" if changed else "")


def mib(kib: int) -> str:
    return f"{kib / 1024:.0f} MiB"


def ms(value: float) -> str:
    if math.isinf(value):
        return "∞"
    return "n/a" if math.isnan(value) else f"{value:,.0f}"


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, q in 0-100 (with few values, p99 is the largest); NaN for none."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)] if ordered else math.nan


def verdict(ok: bool, miss: str) -> str:
    return "**met**" if ok else f"**missed**: {miss}"


def write_section(path: Path, section: str) -> None:
    """Replace the section with this section's title (its first line) in the results file, or append it."""
    title = section.split("\n", 1)[0]
    text = path.read_text() if path.exists() else RESULTS_HEADER
    start = text.find(title + "\n")
    if start >= 0:
        end = text.find("\n## ", start + len(title))
        text = text[:start] + section + ("\n" + text[end + 1:] if end >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)
