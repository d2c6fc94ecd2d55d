"""Child processes that llmwatch starts (broker, vLLM, gateway, embedder): none may outlive its parent."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import subprocess


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
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
