"""`llmwatch` commands as a user runs them."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import jsonschema
import pytest

from llmwatch.traffic import feedback_for, inference_event
from schemas import EVENT_KINDS
from streams.kafka.broker import port_open
from tests.integration.conftest import free_port, wait_until

pytestmark = pytest.mark.integration


def llmwatch(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llmwatch", *args], capture_output=True, text=True,
                          env=os.environ | (env or {}), timeout=timeout)


def test_exported_schemas_validate_what_producers_send(tmp_path: Path) -> None:
    result = llmwatch("schemas", "export", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{kind}.schema.json" for kind in EVENT_KINDS)
    rng = random.Random(4)
    event = inference_event(rng)
    samples = {"inference": event, "feedback": feedback_for(event, rng)}
    for kind, sample in samples.items():
        schema = json.loads((tmp_path / f"{kind}.schema.json").read_text())
        jsonschema.validate(json.loads(sample.model_dump_json()), schema)
    inference_schema = json.loads((tmp_path / "inference.schema.json").read_text())
    bad = json.loads(event.model_dump_json()) | {"latency_ms": "fast"}
    try:
        jsonschema.validate(bad, inference_schema)
    except jsonschema.ValidationError as exc:
        assert "latency_ms" in str(exc.path) or "fast" in exc.message
    else:
        raise AssertionError("a string latency passed the exported schema")


def test_up_runs_broker_store_worker_and_dashboard_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    kafka_port, web_port, dashboard_port = free_port(), free_port(), free_port()
    env = os.environ | {"LLMWATCH_DATA_DIR": str(tmp_path), "LLMWATCH_EMBEDDED_KAFKA_PORT": str(kafka_port),
                        "LLMWATCH_WEB_PORT": str(web_port), "LLMWATCH_KAFKA_BOOTSTRAP_SERVERS": "",
                        "LLMWATCH_DASHBOARD__PORT": str(dashboard_port)}
    log = (tmp_path / "up.log").open("wb")
    up = subprocess.Popen([sys.executable, "-m", "llmwatch", "up"], stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_until(lambda: (tmp_path / "worker.json").exists(), 90, "llmwatch up to be ready")
        assert port_open("127.0.0.1", kafka_port)
        url = f"http://127.0.0.1:{dashboard_port}/"
        assert f"dashboard on {url}" in (tmp_path / "up.log").read_text()
        overview = wait_until(lambda: _get(url), 60, "the dashboard to answer")
        assert "Firing now" in overview  # it read the store through the worker
        tables = llmwatch("sql", "SHOW TABLES", "--format", "csv", env=env)
        assert tables.returncode == 0, tables.stderr
        assert {"inference_events", "dead_letters", "schema_migrations"} <= set(tables.stdout.split())
        up.send_signal(signal.SIGINT)
        assert up.wait(60) == 0, (tmp_path / "up.log").read_text()[-3000:]
    finally:
        if up.poll() is None:
            up.kill()
    assert not port_open("127.0.0.1", kafka_port), "the embedded broker outlived llmwatch up"
    assert not port_open("127.0.0.1", dashboard_port), "the dashboard outlived llmwatch up"
    assert not (tmp_path / "worker.json").exists()
    again = llmwatch("sql", "SELECT count() FROM inference_events", "--format", "csv", env=env)
    assert again.returncode == 0 and again.stdout.splitlines()[1] == "0", again.stderr


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.read().decode()
    except OSError:
        return None


def test_a_bad_setting_is_explained_not_traced(tmp_path: Path) -> None:
    result = llmwatch("sql", "SELECT 1", env={"LLMWATCH_CLICKHOUSE_DSN": "mysql://nope"})
    assert result.returncode == 1
    assert "LLMWATCH_CLICKHOUSE_DSN" in result.stderr and "Traceback" not in result.stderr


def test_the_demo_reconciles_and_shows_an_alert_fire_and_resolve(tmp_path: Path) -> None:
    """`make demo`'s own command, on a stack of its own: every event lands, and the incident pages once."""
    env = {"LLMWATCH_DATA_DIR": str(tmp_path), "LLMWATCH_EMBEDDED_KAFKA_PORT": str(free_port()),
           "LLMWATCH_WEB_PORT": str(free_port()), "LLMWATCH_KAFKA_BOOTSTRAP_SERVERS": "", "COLUMNS": "200"}
    demo = llmwatch("demo", "--events", "600", "--rate", "300", env=env, timeout=600)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "reconciled" in demo.stdout and "NOT reconciled" not in demo.stdout
    incident = demo.stdout.split("a latency incident")[1]
    states = [state for line in incident.splitlines() if "critical" in line
              for state in ("firing", "resolved") if f" {state} " in line]
    assert states == ["firing", "resolved"], incident[-2000:]
