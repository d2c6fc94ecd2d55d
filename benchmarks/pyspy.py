"""py-spy on a worker and its embedder, and what its raw output says about where the time goes.

Why it exists: a rate says how fast, not why. Profiling slows the process it samples, so the benchmarks
attach it to a worker of its own (never to a measured arm) and report its rate only as context. Used by

    python benchmarks/ingest.py --py-spy PATH/TO/py-spy ...
    python benchmarks/processors.py --py-spy PATH/TO/py-spy ...
"""

from __future__ import annotations

import re
import signal
import subprocess
from collections import Counter
from pathlib import Path

PROFILE_HZ = 100
_PROCESS = re.compile(r'process (\d+):".*?";')
_THREAD = re.compile(r"thread \((?:0x)?[0-9a-fA-F]+\): ([^;]*)")


class Profiler:
    """py-spy on a process and its children (--subprocesses), non-blocking, for a fixed time or until stopped."""

    def __init__(self, exe: str, pid: int, output: Path, seconds: float | None = None) -> None:
        self.output = output
        self.seconds = seconds
        duration = ["--duration", str(round(seconds))] if seconds else []
        self.process = subprocess.Popen(
            [exe, "record", "--pid", str(pid), "--rate", str(PROFILE_HZ), "--subprocesses", "--threads",
             "--nonblocking", "--format", "raw", *duration, "--output", str(output)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def finish(self) -> None:
        """Wait out the duration (or stop now, if none): py-spy writes what it sampled, then exits."""
        if self.seconds is None:
            self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait((self.seconds or 0) + 60)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(60)


def event_loop_work(frames: list[str]) -> list[str]:
    """The frames below the asyncio callback being run: what the event loop spends its time on."""
    for marker in ("Handle._run (asyncio/events.py)", "BaseEventLoop._run_once (asyncio/base_events.py)"):
        if marker in frames:
            return frames[len(frames) - frames[::-1].index(marker):]
    return frames


def summarize_profile(raw: Path, seconds: float, worker: int, embedder: int | None, top: int = 15) -> list[str]:
    """Markdown: % of a core per process and thread (samples on CPU), then the event loop's heaviest frames."""
    per_thread: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    others: dict[str, Counter[str]] = {}
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        pids = [int(p) for p in _PROCESS.findall(stack)]
        stack = _PROCESS.sub("", stack)
        match = _THREAD.match(stack)
        if not match or not count_text.isdigit():
            continue
        count = int(count_text)
        pid = pids[-1] if pids else worker
        process = "worker" if pid == worker else "embedder" if pid == embedder else f"pid {pid}"
        thread = match[1].strip() or "?"
        per_thread[f"{process} {thread}"] += count
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack[match.end():].lstrip(";").split(";") if f]
        if process == "worker" and thread == "MainThread" and frames:
            work = event_loop_work(frames)
            for function in set(work):
                inclusive[function] += count
            own[work[-1] if work else "(BaseEventLoop._run_once itself)"] += count
        elif frames:
            ours = [f for f in frames if re.search(r"\((processors|streams|schemas)/", f)]
            label = f"{ours[-1]} ... {frames[-1]}" if ours and ours[-1] != frames[-1] else frames[-1]
            others.setdefault(f"{process} {thread}", Counter())[label] += count
    core = PROFILE_HZ * seconds
    main = per_thread["worker MainThread"] or 1
    lines = ["Threads, % of one core that py-spy found not idle (waiting for the GIL, or for a CPU on a busy "
             "machine, counts as busy; /proc's CPU shares are in the throughput table): " + ", ".join(
        f"{name} {100 * n / core:.0f}%" for name, n in per_thread.most_common() if 100 * n / core >= 1) + ".", "",
        "Worker event loop (MainThread), frames below `Handle._run` (or `_run_once` where no callback ran), "
        "as a share of its samples on CPU:", "",
        "| worker event-loop frame (py-spy, not idle) | inclusive | self |", "|---|---:|---:|"]
    shown = inclusive.most_common(top)
    lines += [f"| `{f}` | {100 * n / main:.0f}% | {100 * own[f] / main:.0f}% |" for f, n in shown]
    lines += ["", "Other threads' heaviest stacks (innermost llmwatch frame ... innermost frame):", ""]
    for name, n in per_thread.most_common():
        if name == "worker MainThread" or 100 * n / core < 5:
            continue
        heaviest = "; ".join(f"`{stack}` {100 * k / n:.0f}%" for stack, k in others.get(name, Counter()).most_common(2))
        lines.append(f"- {name} ({100 * n / core:.0f}% of a core): {heaviest}")
    return lines
