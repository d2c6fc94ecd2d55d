"""Routes are events: gateways apply route changes from llm.deployments, and a gateway that starts rebuilds
them from the deployments table (or, without a store to ask, from the topic), so every gateway agrees.

Route reads and deletions need no model, so these gateways front a vLLM address where nothing listens.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from schemas.events import DeploymentEvent
from streams.kafka.topics import ensure_topics
from streams.settings import Serving, Settings, Topics
from tests.integration.conftest import Worker, free_port, to_env, wait_until
from tests.integration.serving.conftest import ADMIN_KEY, Gateway
from tests.integration.test_cli import llmwatch

pytestmark = pytest.mark.integration
BASE = "smollm2-135m"


def gateway(worker: Worker, data_dir: Path, topics: Topics | None = None) -> Gateway:
    serving = Serving(vllm_url=f"http://127.0.0.1:{free_port()}", port=free_port(), admin_api_keys=[ADMIN_KEY],
                      api_keys=["sk-unused"], publish_timeout_seconds=2.0, replay_max_backoff_seconds=1.0)
    settings = Settings(data_dir=data_dir, kafka_bootstrap_servers=worker.settings.bootstrap_servers,
                        topics=topics or worker.settings.topics, serving=serving, _env_file=None)
    return Gateway(settings, data_dir / f"gateway-{serving.port}.log")


def routes(gw: Gateway) -> dict[str, Any]:
    return gw.request("GET", "/admin/routes", key=ADMIN_KEY).json()["routes"]


def change(route: str, weights: dict[str, float]) -> DeploymentEvent:
    """A route change a millisecond after the one before: the table orders changes by time (as the deployer
    spaces its own), and two made in the same millisecond would be ordered by their random ids."""
    time.sleep(0.002)
    return DeploymentEvent(deployment_id="dep-1", base_model=BASE, adapter_name="cand", action="canary",
                           status="succeeded", route=route, weights=weights, actor="deployer")


def test_gateways_agree_on_routes_from_the_topic_and_the_table(
        make_worker: Callable[..., Worker], tmp_path: Path) -> None:
    worker = make_worker().start()
    first = gateway(worker, worker.settings.data_dir).start()
    with worker.publisher() as publisher:
        publisher.publish(change("support", {BASE: 90, "cand": 10}))
        publisher.publish(change("support", {BASE: 50, "cand": 50}))
        publisher.publish(change("keep", {BASE: 1}))
        publisher.flush()
    expected = {"support": {BASE: 50.0, "cand": 50.0}, "keep": {BASE: 1.0}}
    wait_until(lambda: routes(first) == expected, 60, "the first gateway to apply the published changes")

    # Removed on the admin endpoint: applied here at once, and published for the others.
    assert first.request("DELETE", "/admin/routes/keep", key=ADMIN_KEY).status_code == 200
    assert routes(first) == {"support": expected["support"]}
    wait_until(lambda: worker.count("SELECT count() FROM deployments WHERE route != ''") == 4, 60,
               "the four route changes to be stored")
    assert worker.sql("SELECT actor FROM deployments WHERE route = 'keep' ORDER BY timestamp") == [["deployer"],
                                                                                                    ["admin"]]

    # Restarted, from the table alone: its deployments topic is now an empty one.
    first.stop()
    empty = worker.settings.topics.model_copy(update={"deployments": f"{worker.settings.topics.deployments}.empty"})
    ensure_topics(worker.settings.bootstrap_servers, empty)
    from_table = gateway(worker, worker.settings.data_dir, empty).start()
    assert routes(from_table) == {"support": expected["support"]}

    # From the topic alone: no worker owns a store in its data dir.
    from_topic = gateway(worker, tmp_path).start()
    wait_until(lambda: routes(from_topic) == {"support": expected["support"]}, 60,
               "a gateway without a store to rebuild the routes from the topic")

    # For people: the history with who changed what, and a rollback that will not point at a model it cannot see.
    env = to_env(worker.settings) | {"LLMWATCH_SERVING__VLLM_URL": from_topic.settings.serving.vllm_url,
                                     "COLUMNS": "250"}
    listed = llmwatch("deployments", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "cand 50" in listed.stdout and listed.stdout.count(" admin ") == 1 and listed.stdout.count(" deployer ") == 3
    refused = llmwatch("deploy", "rollback", "--route", "support", "--to", "cand", env=env)
    assert refused.returncode == 1 and "cannot ask vLLM" in refused.stderr + refused.stdout
