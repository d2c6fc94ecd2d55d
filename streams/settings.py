"""The one settings class: every knob of every process, read from LLMWATCH_* once at the entry point."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Topics(BaseModel):
    """Kafka topic names; override one with e.g. LLMWATCH_TOPICS__INFERENCE=prod.llm.inference."""

    model_config = ConfigDict(frozen=True)

    inference: str = "llm.inference"
    feedback: str = "llm.feedback"
    metrics: str = "llm.metrics"
    alerts: str = "llm.alerts"
    models: str = "llm.models"
    deployments: str = "llm.deployments"
    training: str = "llm.training"
    deadletter: str = "llm.deadletter"
    partitions: int = Field(default=4, ge=1)
    replication_factor: int = Field(default=1, ge=1)

    def names(self) -> list[str]:
        return [
            self.inference,
            self.feedback,
            self.metrics,
            self.alerts,
            self.models,
            self.deployments,
            self.training,
            self.deadletter,
        ]


class Retention(BaseModel):
    """Days to keep rows in ClickHouse (0 keeps them forever); applied as table TTLs at start."""

    model_config = ConfigDict(frozen=True)

    events_days: int = Field(default=90, ge=0)
    metrics_days: int = Field(default=365, ge=0)
    dead_letters_days: int = Field(default=30, ge=0)


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
    app_id: str = Field(default="llmwatch", description="Faust app id, also the consumer group")
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=6066, ge=1, le=65535)
    topics: Topics = Topics()
    retention: Retention = Retention()
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
    def worker_file(self) -> Path:
        """Where the process that owns an embedded store says how to reach it."""
        return self.data_dir / "worker.json"
