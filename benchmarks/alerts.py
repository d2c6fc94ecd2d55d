"""Alerting: how long from the end of a breaching window to its alert on llm.alerts, and what evaluate costs.

    python benchmarks/alerts.py                              # both parts, results printed
    python benchmarks/alerts.py --out benchmarks/RESULTS.md  # and appended there
    python benchmarks/alerts.py --breaches 20 --window-seconds 10 --skip-latency

(a) Latency: the embedded broker and a real worker (default settings but the window length and a rule file
    with one latency rule); traffic alternates one breaching window (p99 3 s) with one calm window, so every
    breach is one firing alert. For each, the time from the window's end to the alert's arrival on llm.alerts
    (a plain consumer). Target: p99 under 2 s. Baseline, in the same run: the same consumer's delay for a
    message produced at the window's end (what the broker alone costs).
(b) CPU: `evaluate` with 1,000 rules over a window of realistic points (10 models x 3 adapters x the metric
    families' point names and bias labels); CPU time per window of points. Target: under 50 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from kafka import KafkaConsumer, KafkaProducer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from processors.alerting.evaluation import AlertState, RuleSet, evaluate  # noqa: E402
from schemas.events import MetricPoint  # noqa: E402
from schemas.rules import AlertRule  # noqa: E402
from schemas.topics import Topics  # noqa: E402
from streams.kafka.broker import EmbeddedBroker  # noqa: E402
from streams.publisher import Publisher  # noqa: E402
from streams.settings import Settings  # noqa: E402

NAMES = ["requests", "error_rate", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "ttft_p50_ms",
         "ttft_p95_ms", "output_tokens_per_second", "toxic_rate", "prompt_toxicity_mean", "response_toxicity_mean",
         "feedback_count", "thumbs_down_rate", "score_mean", "correction_rouge_l_mean"]
BIAS = [f"bias.{m}{s}" for m in ("toxicity_rate", "refusal_rate", "negative_feedback_rate")
        for s in ("", ".gap", ".ratio", ".p_value", ".detected")]


def realistic_points(window_start: datetime, rng: random.Random, breach_share: float) -> list[MetricPoint]:
    """Every metric near its usual level (100); `breach_share` of the values spike past every threshold."""

    def value() -> float:
        return rng.uniform(300, 400) if rng.random() < breach_share else rng.uniform(80, 120)

    points = []
    for model in (f"model-{i}" for i in range(10)):
        for adapter in ("", "support-v3", "support-v4"):
            points += [MetricPoint(name=name, value=value(), window_start=window_start,
                                   window_seconds=60, model=model, adapter=adapter) for name in NAMES]
            points += [MetricPoint(name=name, value=value(), window_start=window_start, window_seconds=60,
                                   model=model, adapter=adapter, labels={"attribute": attribute, "group": group})
                       for name in BIAS for attribute in ("cohort", "gender") for group in ("a", "b")]
    return points


def thousand_rules(rng: random.Random) -> list[AlertRule]:
    """Thresholds between 1.5x and 2.5x the usual level: ok unless a value spikes."""
    metrics = NAMES + BIAS
    return [AlertRule.model_validate({
        "name": f"rule_{i}", "metric": metrics[i % len(metrics)], "window_seconds": 60,
        "model": rng.choice(["*", f"model-{i % 10}", "model-*"]), "adapter": rng.choice(["*", "support-*", ""]),
        "threshold": rng.uniform(150, 250), "for": rng.choice([1, 2, 3]), "min_requests": rng.choice([0, 10]),
        "annotations": {"summary": "{{ labels.model }} {{ value }}"},
    }) for i in range(1000)]


def evaluate_cost(windows: int = 20, breach_share: float = 0.01) -> dict[str, float]:
    rng = random.Random(7)
    rules = RuleSet(thousand_rules(rng))
    start = datetime(2026, 12, 1, tzinfo=UTC)
    state = AlertState()
    events: list = []
    cpu = []
    for w in range(windows):
        points = realistic_points(start + timedelta(minutes=w), rng, breach_share)
        before = time.process_time()
        result = evaluate(rules, points, state, start + timedelta(minutes=w + 1, seconds=1), quiet=False)
        cpu.append(time.process_time() - before)
        state = result.state
        events += result.events
    return {"rules": len(rules.rules), "points_per_window": len(points), "series": len(state.seen),
            "events": len(events), "cpu_ms_p50": float(np.percentile(cpu, 50) * 1000),
            "cpu_ms_max": float(max(cpu) * 1000)}


def latency(breaches: int, window_seconds: int, work: Path) -> dict[str, float | int]:
    rules = work / "rules.yaml"
    rules.write_text(f"""rules:
  - name: bench_latency
    metric: latency_p99_ms
    window_seconds: {window_seconds}
    threshold: 1000
    min_requests: 5
""")
    run = uuid.uuid4().hex[:6]
    with EmbeddedBroker(_free_port(), log_file=work / "broker.log") as broker:
        topics = Topics(**{k: f"{run}.{v}" for k, v in Topics().model_dump().items() if isinstance(v, str)})
        settings = Settings(data_dir=work, kafka_bootstrap_servers=broker.bootstrap_servers, topics=topics,
                            web_port=_free_port(), _env_file=None)
        env = os.environ | {"LLMWATCH_DATA_DIR": str(work),
                            "LLMWATCH_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
                            "LLMWATCH_WEB_PORT": str(settings.web_port), "LLMWATCH_ALERTS__RULES_FILE": str(rules),
                            "LLMWATCH_METRICS__WINDOW_SECONDS": json.dumps([window_seconds]),
                            "LLMWATCH_METRICS__EMBED_PER_SECOND": "0"}
        env |= {f"LLMWATCH_TOPICS__{k.upper()}": v for k, v in topics.model_dump().items() if isinstance(v, str)}
        with (work / "worker.log").open("ab") as log:
            worker = subprocess.Popen([sys.executable, "-m", "llmwatch", "worker"], env=env, stdout=log,
                                      stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 180
            while not settings.worker_file.exists():
                if time.monotonic() > deadline or worker.poll() is not None:
                    raise RuntimeError(f"the worker did not start; see {work / 'worker.log'}")
                time.sleep(0.2)
            arrivals: dict[str, float] = {}
            probes: dict[str, float] = {}
            stop = threading.Event()

            def consume() -> None:
                consumer = KafkaConsumer(topics.alerts, "bench.probe", bootstrap_servers=broker.bootstrap_servers,
                                         auto_offset_reset="latest", consumer_timeout_ms=200, group_id=None)
                while not stop.is_set():
                    for message in consumer:
                        now = time.time()
                        if message.topic == topics.alerts:
                            alert = json.loads(message.value)
                            if alert["state"] == "firing":
                                arrivals[alert["window_start"]] = now
                        else:
                            probes[message.value.decode()] = now
                consumer.close()

            thread = threading.Thread(target=consume, daemon=True)
            thread.start()
            time.sleep(3)
            probe = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all", linger_ms=0)
            ends: list[datetime] = []
            with Publisher.from_settings(settings) as publisher:
                # Align to a window boundary, then alternate breaching and calm windows.
                now = datetime.now(UTC)
                first = datetime.fromtimestamp((now.timestamp() // window_seconds + 1) * window_seconds, UTC)
                time.sleep((first - now).total_seconds())
                for w in range(2 * breaches + 1):
                    start = first + timedelta(seconds=w * window_seconds)
                    slow = w % 2 == 0 and w < 2 * breaches
                    while (remaining := (start + timedelta(seconds=window_seconds) - datetime.now(UTC))
                           .total_seconds()) > 0.05:
                        for _ in range(5):
                            publisher.publish(_event(3000.0 if slow else 100.0))
                        publisher.flush()
                        time.sleep(min(0.2, max(remaining - 0.05, 0)))
                    end = start + timedelta(seconds=window_seconds)
                    time.sleep(max(0.0, (end - datetime.now(UTC)).total_seconds()))
                    probe.send("bench.probe", end.isoformat().encode())
                    if slow:
                        ends.append(start)
                print(f"  published {2 * breaches + 1} windows; waiting for the last alerts", flush=True)
                time.sleep(window_seconds + 10)
            stop.set()
            thread.join(5)
            delays, misses = [], 0
            for start in ends:
                end = start + timedelta(seconds=window_seconds)
                found = next((t for k, t in arrivals.items() if datetime.fromisoformat(k) == start), None)
                if found is None:
                    misses += 1
                    continue
                delays.append(found - end.timestamp())
            probe_delays = [t - datetime.fromisoformat(k).timestamp() for k, t in probes.items()]
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
    result: dict[str, float | int] = {"breaches": len(ends), "alerts": len(delays), "missed": misses}
    if delays:
        # A missed alert counts as infinitely late: p99 is only as good as the misses allow.
        padded = np.array(delays + [float("inf")] * misses)
        result |= {"p50_s": float(np.percentile(padded, 50)), "p99_s": float(np.percentile(padded, 99)),
                   "max_s": float(max(delays))}
    if probe_delays:
        result |= {"baseline_p50_s": float(np.percentile(probe_delays, 50)),
                   "baseline_p99_s": float(np.percentile(probe_delays, 99))}
    return result


def _event(latency_ms: float):  # noqa: ANN202
    from schemas import InferenceEvent

    return InferenceEvent(request_id=uuid.uuid4().hex, model="bench", prompt="How do I reset my password?",
                          response_text="Open Settings, then Security.", latency_ms=latency_ms * random.uniform(0.9, 1))


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--breaches", type=int, default=20)
    parser.add_argument("--window-seconds", type=int, default=2)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    load_before = os.getloadavg()
    costs = {share: evaluate_cost(breach_share=share) for share in (0.0, 0.001, 0.01)}
    costs[0.5] = evaluate_cost(windows=5, breach_share=0.5)
    for share, cost in costs.items():
        print(f"evaluate, {share:.1%} of values breaching:", cost, flush=True)
    lat = None
    if not args.skip_latency:
        with tempfile.TemporaryDirectory() as work:
            lat = latency(args.breaches, args.window_seconds, Path(work))
        print("latency:", lat, flush=True)
    load_after = os.getloadavg()
    if args.out:
        lines = [
            "", f"## Alerts ({datetime.now(UTC):%Y-%m-%d})", "",
            f"`python benchmarks/alerts.py --breaches {args.breaches} --window-seconds {args.window_seconds}"
            f"{' --skip-latency' if args.skip_latency else ''} --out benchmarks/RESULTS.md` on {platform.node()} "
            f"({os.cpu_count()} cores, Python {platform.python_version()}); load average before/after "
            f"{load_before[0]:.2f}/{load_after[0]:.2f}; peak RSS of this process "
            f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB.", "",
            "| measure | value | target |", "| --- | ---: | --- |",
            *(f"| `evaluate`, {c['rules']} rules, {c['points_per_window']} points a window, {share:.1%} of values "
              f"breaching ({c['events']} alerts over the run): CPU per window p50 / max (the first window works "
              f"out which rules take which series) | {c['cpu_ms_p50']:.1f} / {c['cpu_ms_max']:.1f} ms | < 50 ms |"
              for share, c in costs.items()),
        ]
        if lat and "p50_s" in lat:
            lines += [
                f"| window end -> firing alert on llm.alerts, {lat['alerts']} of {lat['breaches']} breaches "
                f"({lat['missed']} missed), {args.window_seconds}-s windows: p50 / p99 / max | "
                f"{lat['p50_s']:.2f} / {lat['p99_s']:.2f} / {lat['max_s']:.2f} s | p99 < 2 s |",
                f"| baseline: a message produced at the window's end, same consumer: p50 / p99 | "
                f"{lat.get('baseline_p50_s', float('nan')):.3f} / {lat.get('baseline_p99_s', float('nan')):.3f} s | |",
            ]
        with args.out.open("a") as out:
            out.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
