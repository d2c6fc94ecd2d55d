"""Where an adapter came from: `manifest.json` next to its weights, and which old adapters may go.

The manifest answers, for a person or an auditor, every question about one candidate: the alert that asked
for it, the query that read its data with the row count and a SHA-256 of the rows, the base model and a
hash of its weights, the hyperparameters and library versions, the loss curve, the evaluation of the
candidate and of what served, the gate's verdict, and how long each step took.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import re
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.events import AlertEvent, UtcDatetime
from schemas.gate import GateCriterion

MANIFEST = "manifest.json"
LIBRARIES = ("torch", "transformers", "peft", "accelerate", "llmwatch")


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Trigger(_Record):
    """What asked for the run: an alert (its id, rule, series fingerprint and value) or a person."""

    kind: Literal["alert", "manual"]
    alert_id: str = ""
    rule: str = ""
    fingerprint: str = ""
    metric: str = ""
    value: float | None = None
    threshold: float | None = None
    alert_time: UtcDatetime | None = None

    @classmethod
    def of(cls, alert: AlertEvent | None) -> Trigger:
        if alert is None:
            return cls(kind="manual")
        return cls(kind="alert", alert_id=str(alert.event_id), rule=alert.rule, fingerprint=alert.fingerprint,
                   metric=alert.metric, value=alert.value, threshold=alert.threshold, alert_time=alert.timestamp)


class DatasetRecord(_Record):
    query: str
    since: UtcDatetime
    rows: int
    rows_sha256: str
    counts: dict[str, int]
    train: int
    heldout: int


class BaseModelRecord(_Record):
    name: str = Field(description="the served model the alert named")
    adapter: str = Field(default="", description="the adapter the alert named, if any")
    path: str
    weights_sha256: str


class TrainingRecord(_Record):
    device: str
    steps: int
    max_steps: int
    stopped_by: str
    seconds: float
    trainable_parameters: int
    loss_curve: list[tuple[int, float]]


class Sample(_Record):
    question: str
    target: str
    candidate: str
    current: str


class EvaluationRecord(_Record):
    current_name: str = Field(description="what served when the candidate was judged: base model or adapter")
    candidate: dict[str, float]
    current: dict[str, float]
    samples: list[Sample] = Field(default=[], description="a few held-out answers, side by side")


class GateRecord(_Record):
    passed: bool
    reason: str
    criteria: list[GateCriterion]


class Manifest(_Record):
    format: Literal["llmwatch.adapter/1"] = "llmwatch.adapter/1"
    adapter_name: str
    run_id: str
    created_at: UtcDatetime
    trigger: Trigger
    base_model: BaseModelRecord
    dataset: DatasetRecord
    hyperparameters: dict[str, str]
    libraries: dict[str, str]
    training: TrainingRecord
    evaluation: EvaluationRecord
    gate: GateRecord
    timings: dict[str, float] = Field(description="seconds: dataset, training, evaluation, total")


def write_manifest(directory: Path, manifest: Manifest) -> Path:
    path = directory / MANIFEST
    path.write_text(manifest.model_dump_json(indent=2) + "\n")
    return path


def read_manifest(directory: Path) -> Manifest:
    return Manifest.model_validate_json((directory / MANIFEST).read_text())


def weights_sha256(model_dir: Path) -> str:
    """One hash over the weight files (name and bytes, in name order) of a model folder."""
    digest = hashlib.sha256()
    files = sorted(p for p in model_dir.iterdir() if p.suffix in {".safetensors", ".bin"} and p.is_file())
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def safe_name(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", model).strip("-") or "model"


def adapter_name(model: str, when: datetime, taken: Iterable[str]) -> str:
    """<model>-<yyyymmdd-hhmmss>, with -2, -3 ... if that is taken: a name is never used twice."""
    base = f"{safe_name(model)}-{when:%Y%m%d-%H%M%S}"
    taken = set(taken)
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    return name


def adapters_to_delete(names: Iterable[str], model: str, keep: int, protected: Iterable[str]) -> list[str]:
    """The adapters of `model` beyond the newest `keep`, oldest first, except those serving (`protected`)."""
    pattern = re.compile(re.escape(safe_name(model)) + r"-(\d{8}-\d{6})(?:-(\d+))?")
    matches = [m for n in names if (m := pattern.fullmatch(n))]
    mine = [m[0] for m in sorted(matches, key=lambda m: (m[1], int(m[2] or 1)))]
    spared = set(protected)
    return [n for n in mine[: max(len(mine) - keep, 0)] if n not in spared]


ERASURES = "erasures.json"


def may_hold(manifest: Manifest, spans: dict[str, tuple[datetime, datetime]]) -> bool:
    """Whether erased rows (each model's first and last timestamp) fall in the period this adapter read."""
    span = spans.get(manifest.base_model.name)
    return span is not None and span[0] <= manifest.created_at and span[1] >= manifest.dataset.since


def mark_erasure(directory: Path, erasure_id: str, when: datetime) -> None:
    """Note in the adapter's folder that rows it may have trained on were erased; no personal data."""
    path = directory / ERASURES
    notes = json.loads(path.read_text()) if path.exists() else []
    notes.append({"erasure_id": erasure_id, "erased_at": when.isoformat(),
                  "note": "rows in this adapter's training period were erased; consider retraining"})
    path.write_text(json.dumps(notes, indent=2) + "\n")


def mark_erasures(adapters_dir: Path, spans: dict[str, tuple[datetime, datetime]], erasure_id: str,
                  when: datetime) -> list[str]:
    """Mark every adapter whose training period holds erased rows; returns their names."""
    marked = []
    for manifest_path in sorted(adapters_dir.glob(f"*/{MANIFEST}")) if adapters_dir.is_dir() else []:
        manifest = read_manifest(manifest_path.parent)
        if may_hold(manifest, spans):
            mark_erasure(manifest_path.parent, erasure_id, when)
            marked.append(manifest.adapter_name)
    return marked


__all__ = ["Manifest", "adapter_name", "adapters_to_delete", "read_manifest", "weights_sha256", "write_manifest"]

