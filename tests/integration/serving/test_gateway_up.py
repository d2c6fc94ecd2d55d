"""`llmwatch up` with serving enabled runs the gateway next to the broker and worker, and stops it cleanly.

vLLM here is the session's (LLMWATCH_SERVING__VLLM_URL), so this checks the wiring, not a second
4.5 GB model server; `serving.vllm.launcher` is what the session fixture itself uses to start vLLM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from serving.vllm.launcher import VllmServer
from streams.kafka.broker import port_open
from tests.integration.conftest import free_port, wait_until
from tests.integration.serving.conftest import BASE_MODEL

pytestmark = pytest.mark.integration


def gateway_pids(port: int) -> set[int]:
    """The pids of the processes that answered /health, each on a fresh connection."""
    return {httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).json()["process"]["pid"] for _ in range(20)}


@pytest.mark.parametrize("processes", [1, 2])
def test_up_with_serving_answers_chat_and_stores_the_event(vllm: VllmServer, tmp_path: Path, processes: int) -> None:
    gateway_port = free_port()
    env = os.environ | {
        "LLMWATCH_DATA_DIR": str(tmp_path), "LLMWATCH_EMBEDDED_KAFKA_PORT": str(free_port()),
        "LLMWATCH_WEB_PORT": str(free_port()), "LLMWATCH_KAFKA_BOOTSTRAP_SERVERS": "",
        "LLMWATCH_DASHBOARD__PORT": str(free_port()),
        "LLMWATCH_SERVING__ENABLED": "true", "LLMWATCH_SERVING__VLLM_URL": vllm.url,
        "LLMWATCH_SERVING__PORT": str(gateway_port), "LLMWATCH_SERVING__GATEWAY_PROCESSES": str(processes),
    }
    log = (tmp_path / "up.log").open("wb")
    up = subprocess.Popen([sys.executable, "-m", "llmwatch", "up"], stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_until(lambda: (tmp_path / "worker.json").exists() and port_open("127.0.0.1", gateway_port), 90,
                   "llmwatch up to run the worker and the gateway")
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{gateway_port}/v1", api_key="unused", max_retries=0)
        answer = client.chat.completions.create(model=BASE_MODEL, messages=[{"role": "user", "content": "Hi"}],
                                                max_tokens=4)

        def landed() -> bool:
            result = subprocess.run(
                [sys.executable, "-m", "llmwatch", "sql", "--format", "csv",
                 f"SELECT count() FROM inference_events WHERE request_id = '{answer.id}'"],
                capture_output=True, text=True, env=env, timeout=60)
            return result.returncode == 0 and result.stdout.splitlines()[1] == "1"

        wait_until(landed, 60, "the event in the store")
        assert httpx.get(f"http://127.0.0.1:{gateway_port}/health", timeout=10).json()["vllm"] == "ready"
        pids = wait_until(lambda: found if len(found := gateway_pids(gateway_port)) == processes else None, 60,
                          f"{processes} gateway processes to answer")
        up.send_signal(signal.SIGINT)
        assert up.wait(90) == 0, (tmp_path / "up.log").read_text()[-3000:]
    finally:
        if up.poll() is None:
            up.kill()
    assert not port_open("127.0.0.1", gateway_port), "the gateway outlived llmwatch up"
    assert not [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
