"""Ctrl-C on `llmwatch up` with serving enabled: the worker drains, the gateway flushes, vLLM (its API server
and its engine process) and the broker stop, all within seconds, and no process is left behind.

This one starts a vLLM of its own (through `llmwatch up`, as a user does), not the session's."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from serving.vllm.model_files import ensure_model
from tests.integration.conftest import free_port
from tests.integration.serving.conftest import model_cache
from tests.integration.test_guarantees import ctrl_c_and_check

pytestmark = pytest.mark.integration


def test_ctrl_c_stops_up_with_serving_within_seconds_and_leaves_no_child(tmp_path: Path) -> None:
    kafka_port, gateway_port, vllm_port = free_port(), free_port(), free_port()
    env = os.environ | {
        "LLMWATCH_DATA_DIR": str(tmp_path), "LLMWATCH_EMBEDDED_KAFKA_PORT": str(kafka_port),
        "LLMWATCH_WEB_PORT": str(free_port()), "LLMWATCH_KAFKA_BOOTSTRAP_SERVERS": "",
        "LLMWATCH_DASHBOARD__PORT": str(free_port()),
        "LLMWATCH_SERVING__ENABLED": "true", "LLMWATCH_SERVING__PORT": str(gateway_port),
        "LLMWATCH_SERVING__VLLM_PORT": str(vllm_port), "LLMWATCH_SERVING__MODEL": str(ensure_model(model_cache())),
        "LLMWATCH_SERVING__VLLM_URL": "",
    }

    def ready() -> bool:
        if not (tmp_path / "worker.json").exists():
            return False
        try:
            return httpx.get(f"http://127.0.0.1:{gateway_port}/health", timeout=5).json().get("vllm") == "ready"
        except (httpx.HTTPError, ValueError):
            return False

    took = ctrl_c_and_check(tmp_path, env, ready, ports=[kafka_port, gateway_port, vllm_port], start_timeout=400)
    print(f"llmwatch up (with vLLM and the gateway) stopped {took:.1f} s after Ctrl-C")
