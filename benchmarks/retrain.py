"""Retraining: how long from a retrain alert to the candidate on llm.models, and is the gate's verdict right?

    python benchmarks/retrain.py                              # results printed
    python benchmarks/retrain.py --out benchmarks/RESULTS.md  # and appended there

The embedded broker, a real worker and a real trainer (`llmwatch trainer`), all with the default settings
(only the data directory, ports and topic names are the benchmark's). Two models get `--examples` requests
each with a thumbs-down and a correction (`llmwatch.house_style`): `house`, whose corrections share a house
style, and `shuffled`, whose corrections belong to other questions. One retrain alert each, one after the
other. For each: the time from publishing the alert to the candidate's arrival on llm.models (a plain
consumer), split into dataset, training (base model load included) and evaluation from the adapter's
manifest; the loss curve; and whether the gate decided right (house passes, shuffled is rejected). Peak RSS
is the trainer process's (VmHWM). Target: under 3 minutes per run on a 2-core machine, both verdicts right.
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

from kafka import KafkaConsumer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmwatch.house_style import correction_traffic  # noqa: E402
from schemas.events import AlertEvent  # noqa: E402
from schemas.topics import Topics  # noqa: E402
from serving.vllm.model_files import MODEL_NAME, ensure_model  # noqa: E402
from streams.kafka.broker import EmbeddedBroker  # noqa: E402
from streams.kafka.topics import ensure_topics  # noqa: E402
from streams.publisher import Publisher  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.store.sql import query  # noqa: E402
from trainers.lineage import read_manifest  # noqa: E402

EXPECTED = {"house": True, "shuffled": False}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)
    return result


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(examples: int, work: Path) -> dict[str, Any]:
    model_dir = ensure_model(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llmwatch" / "models"
                             / MODEL_NAME, print)
    run_id = uuid.uuid4().hex[:6]
    with EmbeddedBroker(_free_port(), log_file=work / "broker.log") as broker:
        topics = Topics(**{k: f"{run_id}.{v}" for k, v in Topics().model_dump().items() if isinstance(v, str)})
        settings = Settings(data_dir=work, kafka_bootstrap_servers=broker.bootstrap_servers, topics=topics,
                            web_port=_free_port(), _env_file=None)
        ensure_topics(broker.bootstrap_servers, topics)
        env = os.environ | {"LLMWATCH_DATA_DIR": str(work), "LLMWATCH_WEB_PORT": str(settings.web_port),
                            "LLMWATCH_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
                            "LLMWATCH_SERVING__MODEL": str(model_dir)}
        env |= {f"LLMWATCH_TOPICS__{k.upper()}": v for k, v in topics.model_dump().items() if isinstance(v, str)}
        children = []
        for role in ("worker", "trainer"):
            with (work / f"{role}.log").open("ab") as log:
                children.append(subprocess.Popen([sys.executable, "-m", "llmwatch", role], env=env, stdout=log,
                                                 stderr=subprocess.STDOUT))
            if role == "worker":
                _wait(settings.worker_file.exists, 300, "the worker")
        trainer = children[1]
        try:
            _wait(lambda: "llmwatch trainer ready" in (work / "trainer.log").read_text(), 300, "the trainer")
            arrivals: dict[str, tuple[float, dict[str, Any]]] = {}
            stop = threading.Event()

            def consume() -> None:
                consumer = KafkaConsumer(topics.models, bootstrap_servers=broker.bootstrap_servers,
                                         auto_offset_reset="earliest", consumer_timeout_ms=200, group_id=None)
                while not stop.is_set():
                    for message in consumer:
                        candidate = json.loads(message.value)
                        arrivals[candidate["base_model"]] = (time.time(), candidate)
                consumer.close()

            thread = threading.Thread(target=consume, daemon=True)
            thread.start()
            with Publisher.from_settings(settings) as publisher:
                for model in EXPECTED:
                    for inference, feedback in correction_traffic(examples, model=model, shuffled=model == "shuffled",
                                                                  seed=11):
                        publisher.publish(inference)
                        publisher.publish(feedback)
            total = examples * len(EXPECTED)
            _wait(lambda: query(settings, "SELECT count() FROM feedback_events").rows[0][0] == total, 300,
                  "the traffic to be stored")
            results: dict[str, Any] = {}
            for model, expected in EXPECTED.items():
                load = os.getloadavg()[0]
                alert = AlertEvent(rule="corrections_far_from_answers", state="firing", value=0.1, threshold=0.3,
                                   metric="correction_rouge_l_mean", model=model, fingerprint=f"bench-{model}",
                                   actions=["retrain"])
                with Publisher.from_settings(settings) as publisher:
                    sent = time.time()
                    publisher.publish(alert)
                arrived, candidate = _wait(lambda model=model: arrivals.get(model), 1800, f"the {model} candidate")
                manifest = read_manifest(Path(candidate["adapter_uri"]))
                curve = manifest.training.loss_curve
                results[model] = {
                    "alert_to_candidate_s": arrived - sent, "timings": manifest.timings,
                    "steps": manifest.training.steps, "stopped_by": manifest.training.stopped_by, "loss_curve": curve,
                    "passed": candidate["passed_gate"], "right": candidate["passed_gate"] is expected,
                    "reason": candidate["gate_reason"], "candidate": candidate["eval_metrics"],
                    "current": candidate["baseline_metrics"], "train": manifest.dataset.train,
                    "heldout": manifest.dataset.heldout, "load_before": load,
                }
                print(model, json.dumps({k: v for k, v in results[model].items() if k != "loss_curve"}), flush=True)
            results["trainer_peak_rss_mib"] = _peak_rss_mib(trainer.pid)
            stop.set()
            thread.join(5)
        finally:
            for child in reversed(children):
                child.send_signal(signal.SIGTERM)
                child.wait(120)
    return results


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=100, help="requests with a correction, per model")
    parser.add_argument("--note", default="", help="a sentence on the conditions, added to the results")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as work:
        results = run(args.examples, Path(work))
    load_after = os.getloadavg()
    print("trainer peak RSS (MiB):", round(results["trainer_peak_rss_mib"]))
    if not args.out:
        return
    lines = [
        "", f"## Retraining: alert to candidate (benchmarks/retrain.py, {datetime.now(UTC):%Y-%m-%d})", "",
        f"`python benchmarks/retrain.py --examples {args.examples} --out benchmarks/RESULTS.md` at commit {_commit()} "
        f"on {platform.node()} ({os.cpu_count()} cores, no GPU, Python {platform.python_version()}), default "
        f"settings; load average (1 min) before/after {load_before[0]:.2f}/{load_after[0]:.2f}. {args.note}", "",
        "| | house style | shuffled answers | target |", "| --- | ---: | ---: | --- |",
    ]
    house, shuffled = results["house"], results["shuffled"]

    def row(label: str, value: Any, target: str = "") -> str:
        return f"| {label} | {value(house)} | {value(shuffled)} | {target} |"

    lines += [
        row("examples: train / held out", lambda r: f"{r['train']} / {r['heldout']}"),
        row("load average (1 min) when the alert was published", lambda r: f"{r['load_before']:.2f}"),
        row("alert published -> candidate on llm.models", lambda r: f"{r['alert_to_candidate_s']:.0f} s", "< 180 s"),
        row("dataset / training (model load included) / evaluation",
            lambda r: " / ".join(f"{r['timings'][k]:.1f}" for k in ("dataset", "training", "evaluation")) + " s"),
        row("training steps (stopped by)", lambda r: f"{r['steps']} ({r['stopped_by']})"),
        row("training loss, first -> last step",
            lambda r: f"{r['loss_curve'][0][1]:.2f} -> {r['loss_curve'][-1][1]:.2f}"),
        row("ROUGE-L candidate / base", lambda r: f"{r['candidate']['rouge_l']:.3f} / {r['current']['rouge_l']:.3f}"),
        row("relevance candidate / base",
            lambda r: f"{r['candidate']['relevance']:.3f} / {r['current']['relevance']:.3f}"),
        row("perplexity candidate / base",
            lambda r: f"{r['candidate']['perplexity']:.2f} / {r['current']['perplexity']:.2f}"),
        row("gate verdict (right?)", lambda r: f"{'passed' if r['passed'] else 'rejected'} "
            f"({'right' if r['right'] else 'WRONG'})", "house passes, shuffled is rejected"),
        "", f"Peak RSS of the trainer process: {results['trainer_peak_rss_mib']:.0f} MiB.", "",
        "Loss curve (step: loss), house style: " + ", ".join(f"{s}: {v:.2f}" for s, v in house["loss_curve"]),
        "", "Gate reasons: house: " + house["reason"], "", "shuffled: " + shuffled["reason"],
    ]
    with args.out.open("a") as out:
        out.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
