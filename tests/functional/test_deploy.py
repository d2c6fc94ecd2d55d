"""The docker-compose production path, checked offline: Grafana's provisioning and dashboard, Prometheus's
scrape targets, and the panels' SQL run against a real store with Grafana's macros filled in."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.store.runner import StoreRunner
from streams.store.sql import run_query

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "llmwatch-overview.json"
MACROS = {
    "$__timeInterval(window_start)": "toStartOfInterval(window_start, INTERVAL 60 second)",
    "$__timeFilter(window_start)": "window_start >= now64(3) - INTERVAL 6 HOUR",
    "${window}": "60", "$__interval_s": "60",
    "${__to:date:seconds}": "1764000000", "${__from:date:seconds}": "1763978400",
}


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def panels() -> list[dict[str, Any]]:
    return json.loads(DASHBOARD.read_text())["panels"]


def test_the_dashboard_file_is_what_its_builder_makes_from_the_dashboards_own_sql() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_dashboard", DEPLOY / "grafana" / "build_dashboard.py")
    assert spec is not None and spec.loader is not None
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    assert DASHBOARD.read_text() == builder.render(), "run python deploy/grafana/build_dashboard.py"


def test_every_panel_uses_a_provisioned_data_source_and_the_overview_is_all_there() -> None:
    provisioned = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/llmwatch.yaml").read_text())
    sources = {s["uid"]: s["type"] for s in provisioned["datasources"]}
    assert sources == {"llmwatch-clickhouse": "grafana-clickhouse-datasource", "llmwatch-prometheus": "prometheus"}
    titles = " | ".join(p["title"] for p in panels())
    for overview in ("Firing now", "Requests per second", "Latency", "Time to first token", "Error rate", "Toxic rate",
                     "Thumbs-down", "ROUGE-L", "Drift", "bias gap", "consumer lag"):
        assert overview in titles
    for panel in panels():
        for target in panel["targets"]:
            assert sources[target["datasource"]["uid"]] == target["datasource"]["type"] == panel["datasource"]["type"]
            assert ("rawSql" in target) == (target["datasource"]["type"] == "grafana-clickhouse-datasource")
    assert len({p["id"] for p in panels()}) == len(panels())


def test_grafana_and_prometheus_find_their_files_and_targets_in_compose() -> None:
    services = compose()["services"]
    grafana = services["grafana"]
    assert "grafana-clickhouse-datasource" in grafana["environment"]["GF_INSTALL_PLUGINS"]
    mounts = {m.split(":")[1]: ROOT / m.split(":")[0] for m in grafana["volumes"] if m.startswith("./")}
    assert mounts["/etc/grafana/provisioning"].joinpath("dashboards/llmwatch.yaml").exists()
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/llmwatch.yaml").read_text())
    assert (mounts[provider["providers"][0]["options"]["path"]] / DASHBOARD.name).exists()
    config = {m.split(":")[1]: ROOT / m.split(":")[0] for m in services["prometheus"]["volumes"] if m.startswith("./")}
    scrape = yaml.safe_load(config["/etc/prometheus/prometheus.yml"].read_text())["scrape_configs"]
    jobs = {job["job_name"]: job for job in scrape}
    worker = jobs["llmwatch-worker"]["dns_sd_configs"][0]
    assert worker["names"] == ["llmwatch-worker"] and str(worker["port"]) in services["llmwatch-worker"]["expose"]
    assert services["llmwatch-worker"]["environment"]["LLMWATCH_WEB_PORT"] == str(worker["port"])
    host, port = jobs["llmwatch-gateway"]["static_configs"][0]["targets"][0].split(":")
    assert host in services and services[host]["environment"]["LLMWATCH_SERVING__PORT"] == port


def sql_of(panel: dict[str, Any]) -> list[str]:
    out = []
    for target in panel["targets"]:
        if "rawSql" in target:
            sql = target["rawSql"]
            for macro, value in MACROS.items():
                sql = sql.replace(macro, value)
            assert not re.search(r"\$\{?_?_?\w", sql), f"a macro left in {panel['title']}: {sql}"
            out.append(sql)
    return out


@pytest.mark.parametrize("title", [p["title"] for p in panels() if p["datasource"]["type"] != "prometheus"])
def test_each_clickhouse_panel_runs_against_the_store(store: StoreRunner, title: str) -> None:
    panel = next(p for p in panels() if p["title"] == title)
    for sql in sql_of(panel):
        asyncio.run(store.call_in_own_session(run_query, sql))
        described = asyncio.run(store.call_in_own_session(run_query, f"DESCRIBE ({sql})")).rows
        if panel["type"] == "timeseries":  # what the plugin turns into one line per series
            assert [row[0] for row in described] == ["time", "series", "value"]
