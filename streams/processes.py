"""Child processes that llmwatch starts (broker, vLLM, gateway, embedder): none may outlive its parent."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)


def die_with_parent() -> None:
    """Linux: this process gets SIGTERM when its parent dies, even by SIGKILL, so none is orphaned."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def detach_from_terminal() -> None:
    """For a child the parent stops in order (its `on_process_start` / `preexec_fn`): Ctrl-C in a terminal
    signals the whole process group, and a child gone at once leaves the parent draining without it (the
    worker, without its broker, waited a minute to leave the consumer group). It still dies with its parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()


def stop_process(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited after `timeout` seconds."""
    stop_all([process], timeout)


def stop_all(processes: list[subprocess.Popen[bytes]], timeout: float) -> None:
    """SIGTERM to every process at once (one signal each: a second one would cut uvicorn's graceful stop
    short), then SIGKILL to any still running after `timeout` seconds."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("process %d did not stop within %g s: killed", process.pid, timeout)
            process.kill()
            process.wait()


class ChildCommand:
    """An `llmwatch` subcommand as a child of `llmwatch up`, logging to data_dir/logs/NAME.log, in a process
    group of its own (Ctrl-C reaches only `up`, which stops its children in order)."""

    def __init__(self, subcommand: str, log_dir: Path, stop_timeout: float) -> None:
        self.subcommand = subcommand
        self.log_file = log_dir / f"{subcommand}.log"
        self.stop_timeout = stop_timeout
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as output:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "llmwatch", self.subcommand], stdout=output, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=os.environ.copy(), preexec_fn=die_with_parent, start_new_session=True)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            stop_process(process, self.stop_timeout)
