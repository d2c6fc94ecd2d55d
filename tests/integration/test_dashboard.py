"""The dashboard in a real browser (Debian's chromium, driven by Playwright) over a real worker, and the
worker's `/metrics` scraped and parsed as Prometheus would.

Traffic for two models goes through the broker in real time (2-second windows), with feedback, malformed
messages and a firing alert; then every page loads without a console error, the Overview draws latency for
both models, a search by request id shows its response and feedback, and the alert is on Overview and Alerts.
Screenshots go to $LLMWATCH_DASHBOARD_SCREENSHOTS when it names a folder (docs/ keeps them).
"""

from __future__ import annotations

import os
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
from playwright.sync_api import ConsoleMessage, Page, sync_playwright
from prometheus_client.parser import text_string_to_metric_families

from schemas import AlertEvent, FeedbackEvent, InferenceEvent
from streams.settings import Dashboard, Metrics
from tests.integration.conftest import Child, Worker, free_port, wait_until

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
MODELS = [("support-model", "support-v4"), ("chat-model", None)]
MALFORMED = [b"not json", b"\xff\xfe{", b'{"request_id": 1}']
ALERT_RULE = "dashboard_latency_high"


@dataclass
class DashboardChild(Child):
    command: ClassVar[str] = "dashboard"

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.settings.dashboard.url}health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False


@dataclass
class Traffic:
    inference: int
    feedback: int
    malformed: int
    searched: str


@pytest.fixture(scope="module")
def watched(make_worker: Any) -> Iterator[Worker]:
    worker = make_worker(metrics=Metrics(window_seconds=(2,), lateness_seconds=0.5, feedback_horizon_seconds=0,
                                         embed_per_second=0))
    yield worker.start()
    if worker.process is not None:
        worker.stop()


@pytest.fixture(scope="module")
def traffic(watched: Worker) -> Traffic:
    run = uuid.uuid4().hex[:6]
    searched = f"dash-{run}-searched"
    sent = feedback = 0
    with watched.publisher() as publisher:
        start = time.monotonic()
        while time.monotonic() - start < 8:  # windows close on the clock: several 2-s windows per model
            for model, adapter in MODELS:
                request_id = searched if sent == 0 else f"dash-{run}-{sent}"
                slow = 2.0 if adapter is None else 1.0
                toxic = adapter is None and sent % 13 == 5
                publisher.publish(InferenceEvent(
                    request_id=request_id, model=model, adapter=adapter, latency_ms=slow * (100.0 + (sent % 50) * 10),
                    ttft_ms=slow * 40.0, messages=[{"role": "user", "content": "How do I reset my password?"}],
                    response_text="Shut up, you worthless idiot." if toxic else "Open Settings, then Security.",
                    status="error" if sent % 17 == 3 else "ok", user_id=f"user-{sent % 3}",
                    session_id=f"session-{run}", prompt_tokens=9, completion_tokens=7))
                sent += 1
            if sent % 10 == 0:
                publisher.publish(FeedbackEvent(request_id=f"dash-{run}-{sent - 1}", thumbs="up"))
                feedback += 1
            time.sleep(0.05)
        publisher.publish(FeedbackEvent(request_id=searched, thumbs="down", correction="Settings > Security > Reset"))
        feedback += 1
        for payload in MALFORMED:
            publisher.publish_raw(watched.settings.topics.inference, payload).get(timeout=30)
        publisher.publish(AlertEvent(rule=ALERT_RULE, state="firing", severity="critical", metric="latency_p99_ms",
                                     value=4321.0, threshold=2500.0, model="support-model", adapter="support-v4",
                                     fingerprint=f"fp-{run}", message="p99 4321 ms on support-model support-v4"))
    wait_until(lambda: watched.count("SELECT count() FROM inference_events") >= sent, 120, "the requests to land")
    wait_until(lambda: watched.count("SELECT count() FROM dead_letters") >= len(MALFORMED), 60, "the dead letters")
    wait_until(lambda: watched.count(f"SELECT count() FROM alerts WHERE rule = '{ALERT_RULE}'") == 1, 60, "the alert")
    wait_until(lambda: watched.count("SELECT uniqExact(model) FROM metric_points WHERE name = 'latency_p99_ms'") == 2,
               60, "latency points for both models")
    return Traffic(sent + len(MALFORMED), feedback, len(MALFORMED), searched)


@pytest.fixture(scope="module")
def dashboard(watched: Worker, traffic: Traffic) -> Iterator[DashboardChild]:
    settings = watched.settings.model_copy(update={"dashboard": Dashboard(port=free_port(), refresh_seconds=0)})
    child = DashboardChild(settings, watched.settings.data_dir / "dashboard.log").start()
    yield child
    child.stop()


@pytest.fixture(scope="module")
def browser_page(dashboard: DashboardChild) -> Iterator[tuple[Page, list[str]]]:
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                errors.append(f"{page.url}: {message.text}")

        page.on("console", on_console)
        page.on("pageerror", lambda exc: errors.append(f"{page.url}: {exc}"))
        yield page, errors
        browser.close()


def screenshot(page: Page, name: str) -> None:
    folder = os.environ.get("LLMWATCH_DASHBOARD_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"dashboard-{name}.png"), full_page=True)


def test_every_page_loads_in_a_browser_without_a_console_error(browser_page: tuple[Page, list[str]],
                                                               dashboard: DashboardChild) -> None:
    page, errors = browser_page
    for path, name, marker in [("/?range=15m", "overview", "#summary"), ("/alerts?range=1h", "alerts", "#rule-series"),
                               ("/loop", "loop", "#lineage, .empty"), ("/requests", "requests", "#recent"),
                               ("/dead-letters?range=1h", "dead-letters", "#letters")]:
        response = page.goto(dashboard.settings.dashboard.url.rstrip("/") + path)
        assert response is not None and response.status == 200, path
        page.wait_for_selector(marker)
        page.wait_for_load_state("networkidle")
        screenshot(page, name)
    assert errors == []


def test_the_overview_draws_latency_for_each_model_and_shows_the_firing_alert(
        browser_page: tuple[Page, list[str]], dashboard: DashboardChild) -> None:
    page, errors = browser_page
    page.goto(dashboard.settings.dashboard.url + "?range=15m")
    page.wait_for_function("document.getElementById('chart-latency').data !== undefined")
    drawn = page.evaluate("Array.from(document.getElementById('chart-latency').data, t => [t.name, t.x.length])")
    points = {name: count for name, count in drawn}
    assert points.get("support-model/support-v4 p99", 0) >= 1 and points.get("chat-model p99", 0) >= 1, points
    assert page.locator("#chart-latency .scatterlayer .point").count() > 0  # drawn, not only handed over
    firing = page.locator("#firing-alerts").inner_text()
    assert ALERT_RULE in firing and "4321" in firing
    assert errors == []


def test_the_overview_refreshes_itself(browser_page: tuple[Page, list[str]], dashboard: DashboardChild) -> None:
    page, errors = browser_page
    page.goto(dashboard.settings.dashboard.url + "?range=15m&refresh=1")
    page.wait_for_function("document.body.dataset.refreshedAt !== undefined", timeout=30_000)
    page.wait_for_function("document.getElementById('chart-latency').data.length > 0")
    assert ALERT_RULE in page.locator("#firing-alerts").inner_text()
    assert errors == []


def test_a_search_by_request_id_shows_its_response_and_feedback(browser_page: tuple[Page, list[str]],
                                                                dashboard: DashboardChild, traffic: Traffic) -> None:
    page, errors = browser_page
    page.goto(dashboard.settings.dashboard.url + "requests")
    page.fill("input[name=q]", traffic.searched)
    page.click("button[type=submit]")
    page.wait_for_selector("#request-1")
    found = page.locator("#request-1")
    assert traffic.searched in found.locator("h3").inner_text()
    assert found.locator("pre.response").inner_text() == "Open Settings, then Security."
    feedback = found.locator("table.feedback").inner_text()
    assert "down" in feedback and "Settings > Security > Reset" in feedback
    screenshot(page, "request")
    assert errors == []


def test_the_alert_is_on_the_alerts_page(browser_page: tuple[Page, list[str]], dashboard: DashboardChild) -> None:
    page, errors = browser_page
    page.goto(dashboard.settings.dashboard.url + "alerts?range=1h")
    timeline = page.locator("#alert-timeline").inner_text()
    assert ALERT_RULE in timeline and "firing" in timeline
    assert errors == []


def scrape(worker: Worker) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.settings.web_port}/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_metrics_count_what_was_published(watched: Worker, traffic: Traffic) -> None:
    topics = watched.settings.topics
    samples = scrape(watched)

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("llmwatch_worker_events_received_total", topic=topics.inference) == traffic.inference
    assert value("llmwatch_worker_events_stored_total", topic=topics.inference) == traffic.inference - traffic.malformed
    dead = sum(v for (name, labels), v in samples.items()
               if name == "llmwatch_worker_events_dead_lettered_total" and ("topic", topics.inference) in labels)
    assert dead == traffic.malformed
    assert value("llmwatch_worker_events_dead_lettered_total", topic=topics.inference, reason="not_json") == 1
    assert value("llmwatch_worker_events_stored_total", topic=topics.feedback) == traffic.feedback
    assert value("llmwatch_worker_events_stored_total", topic=topics.alerts) == 1
    assert value("llmwatch_worker_store_insert_seconds_count", table="inference_events") >= 1
    assert value("llmwatch_worker_store_rows_total", table="inference_events") == traffic.inference - traffic.malformed
    assert value("llmwatch_worker_window_compute_seconds_count", window_seconds="2", **{"pass": "first"}) >= 1
    assert ("llmwatch_worker_webhook_failures_total", ()) not in samples  # no webhook: no made-up label

    def settled() -> bool:
        lags = {labels: v for (name, labels), v in scrape(watched).items() if name == "llmwatch_worker_consumer_lag"
                and ("topic", topics.inference) in labels}
        return bool(lags) and all(v == 0 for v in lags.values())

    wait_until(settled, 60, "the inference partitions' lag to be reported and reach 0")
