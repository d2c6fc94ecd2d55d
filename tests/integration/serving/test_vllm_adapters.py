"""Adapters loaded into and unloaded from the real vLLM, only from the adapters directory; a rollback by hand
to a loaded adapter reaches the gateway as a route event."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from schemas.errors import ServingError
from serving.deployer.vllm_adapters import VllmAdapters
from serving.vllm.launcher import VllmServer
from tests.integration.conftest import Worker, to_env, wait_until
from tests.integration.serving.conftest import ADMIN_KEY, Gateway
from tests.integration.test_cli import llmwatch

pytestmark = pytest.mark.integration


def test_load_unload_and_roll_back_by_hand(vllm: VllmServer, tiny_adapter: Path, worker: Worker,
                                           make_gateway: Callable[..., Gateway], tmp_path: Path) -> None:
    adapters_dir = tmp_path / "adapters"
    shutil.copytree(tiny_adapter, adapters_dir / "cand-1")
    adapters = VllmAdapters(vllm.url, adapters_dir)
    with pytest.raises(ServingError, match="outside the adapters directory"):
        adapters.load("elsewhere", tiny_adapter)
    adapters.load("cand-1", adapters_dir / "cand-1")
    adapters.load("cand-1", adapters_dir / "cand-1")  # again: already there, no error
    assert "cand-1" in adapters.served()

    gateway = make_gateway(worker.settings).start()
    env = to_env(worker.settings) | {"LLMWATCH_SERVING__VLLM_URL": vllm.url}
    done = llmwatch("deploy", "rollback", "--route", "canary-test", "--to", "cand-1", env=env)
    assert done.returncode == 0, done.stderr + done.stdout
    wait_until(lambda: gateway.request("GET", "/admin/routes", key=ADMIN_KEY).json()["routes"].get("canary-test")
               == {"cand-1": 100.0}, 60, "the gateway to apply the rollback")

    adapters.unload("cand-1")
    adapters.unload("cand-1")
    assert "cand-1" not in adapters.served()
    refused = llmwatch("deploy", "rollback", "--route", "canary-test", "--to", "cand-1", env=env)
    assert refused.returncode == 1 and "does not serve 'cand-1'" in refused.stderr + refused.stdout
