"""The manifest (complete, round-trips), adapter names (never reused) and which old adapters may go."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas.events import AlertEvent
from schemas.gate import DEFAULT_GATE
from trainers.lineage import (
    BaseModelRecord,
    DatasetRecord,
    EvaluationRecord,
    GateRecord,
    Manifest,
    TrainingRecord,
    Trigger,
    adapter_name,
    adapters_to_delete,
    read_manifest,
    weights_sha256,
    write_manifest,
)

WHEN = datetime(2026, 12, 2, 10, 15, 0, tzinfo=UTC)


def manifest(alert: AlertEvent | None) -> Manifest:
    return Manifest(
        adapter_name="smollm2-135m-20261202-101500", run_id="run-1", created_at=WHEN, trigger=Trigger.of(alert),
        base_model=BaseModelRecord(name="smollm2-135m", path="/models/smol", weights_sha256="ab" * 32),
        dataset=DatasetRecord(query="SELECT ...", since=WHEN, rows=40, rows_sha256="cd" * 32,
                              counts={"rows": 40, "train": 30, "heldout": 8}, train=30, heldout=8),
        hyperparameters={"rank": "8"}, libraries={"peft": "0.21.2"},
        training=TrainingRecord(device="cpu", steps=3, max_steps=3, stopped_by="max_steps", seconds=9.5,
                                trainable_parameters=10, loss_curve=[(1, 3.2), (2, 2.1), (3, 1.4)]),
        evaluation=EvaluationRecord(current_name="smollm2-135m", candidate={"rouge_l": 0.8}, current={"rouge_l": 0.2}),
        gate=GateRecord(passed=True, reason="passed: ...", criteria=list(DEFAULT_GATE)),
        timings={"dataset": 0.4, "training": 9.9, "evaluation": 5.0, "total": 15.3},
    )


def test_the_manifest_names_the_alert_and_round_trips(tmp_path: Path) -> None:
    alert = AlertEvent(rule="thumbs_down_high", state="firing", metric="thumbs_down_rate", value=0.6, threshold=0.3,
                       model="smollm2-135m", fingerprint="f" * 16, actions=["retrain"])
    write_manifest(tmp_path, manifest(alert))
    back = read_manifest(tmp_path)
    assert back == manifest(alert)
    assert back.trigger.alert_id == str(alert.event_id) and back.trigger.rule == "thumbs_down_high"
    assert back.trigger.value == 0.6 and back.trigger.fingerprint == "f" * 16
    assert back.training.loss_curve[-1] == (3, 1.4)
    assert Trigger.of(None).kind == "manual"


def test_an_incomplete_manifest_is_refused(tmp_path: Path) -> None:
    write_manifest(tmp_path, manifest(None))
    path = tmp_path / "manifest.json"
    path.write_text(path.read_text().replace('"rows_sha256"', '"rows_hash"'))
    with pytest.raises(ValidationError, match="rows_sha256"):
        read_manifest(tmp_path)


def test_adapter_names_carry_the_time_and_are_never_reused() -> None:
    assert adapter_name("smollm2-135m", WHEN, []) == "smollm2-135m-20261202-101500"
    taken = ["smollm2-135m-20261202-101500", "smollm2-135m-20261202-101500-2"]
    assert adapter_name("smollm2-135m", WHEN, taken) == "smollm2-135m-20261202-101500-3"
    assert adapter_name("org/Model v2", WHEN, []) == "org-Model-v2-20261202-101500"


def test_old_adapters_go_but_never_one_serving_nor_another_models() -> None:
    names = ["m-20261201-090000", "m-20261201-100000", "m-20261201-100000-2", "m-20261202-080000",
             "m-v2-20261101-000000", ".partial-x", "notes"]
    assert adapters_to_delete(names, "m", keep=2, protected=[]) == ["m-20261201-090000", "m-20261201-100000"]
    assert adapters_to_delete(names, "m", keep=2, protected=["m-20261201-090000"]) == ["m-20261201-100000"]
    assert adapters_to_delete(names, "m", keep=5, protected=[]) == []


def test_the_weights_hash_follows_the_weights(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "config.json").write_text("{}")
    first = weights_sha256(tmp_path)
    (tmp_path / "config.json").write_text('{"changed": true}')
    assert weights_sha256(tmp_path) == first
    (tmp_path / "model.safetensors").write_bytes(b"other weights")
    assert weights_sha256(tmp_path) != first


def test_an_erasure_marks_the_adapters_whose_training_period_held_the_rows(tmp_path: Path) -> None:
    from datetime import timedelta

    from trainers.lineage import ERASURES, mark_erasures

    trained = manifest(None).model_copy(update={
        "dataset": manifest(None).dataset.model_copy(update={"since": WHEN - timedelta(days=7)})})
    (tmp_path / trained.adapter_name).mkdir()
    write_manifest(tmp_path / trained.adapter_name, trained)
    inside = {"smollm2-135m": (WHEN - timedelta(days=2), WHEN - timedelta(days=1))}
    after = {"smollm2-135m": (WHEN + timedelta(hours=1), WHEN + timedelta(hours=2))}
    other_model = {"another-model": inside["smollm2-135m"]}

    assert mark_erasures(tmp_path, after, "e0", WHEN) == []
    assert mark_erasures(tmp_path, other_model, "e1", WHEN) == []
    assert mark_erasures(tmp_path, inside, "e2", WHEN) == [trained.adapter_name]
    notes = (tmp_path / trained.adapter_name / ERASURES).read_text()
    assert '"e2"' in notes and "e1" not in notes and "smollm2" not in notes
    assert mark_erasures(tmp_path / "missing", inside, "e3", WHEN) == []
