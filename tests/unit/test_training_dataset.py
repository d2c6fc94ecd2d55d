"""The dataset builder on hand-made rows, as the store returns them (inference joined to folded feedback)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from processors.text_signals import is_refusal
from serving.gateway.redaction import Redactor
from trainers.dataset import Dataset, DatasetPolicy, build_dataset, heldout_side, rows_sha256, shortfall

TOXIC_WORD = "idiot"


def row(request_id: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "request_id": request_id, "timestamp": f"2026-12-01 10:00:{len(request_id) % 60:02d}.000",
        "model": "m", "adapter": "", "prompt": None,
        "messages": json.dumps([{"role": "user", "content": f"question {request_id}"}]),
        "response_text": "a vague answer", "prompt_toxicity": 0.01, "toxic": False, "refusal": False,
        "user_id": f"user-{request_id}", "session_id": None, "thumbs_up": 0, "thumbs_down": 0, "max_score": None,
        "correction": None, "feedback_user_id": None,
    }
    return base | fields


def toxicity(texts: Sequence[str]) -> list[float]:
    return [0.9 if TOXIC_WORD in t else 0.0 for t in texts]


def build(rows: Sequence[Mapping[str, Any]], **policy: Any) -> Dataset:
    redactor = Redactor.from_settings(["email"], {})
    return build_dataset(rows, DatasetPolicy(**({"max_contributor_share": 1.0} | policy)), score_toxicity=toxicity,
                         redact=redactor.redact, is_refusal=is_refusal)


def everything(dataset: Dataset) -> dict[str, Any]:
    return {e.request_id: e for e in dataset.train + dataset.heldout}


def test_a_correction_replaces_the_response() -> None:
    dataset = build([row("r1", thumbs_down=1, correction="Go to Settings > Security.")])
    example = everything(dataset)["r1"]
    assert example.target == "Go to Settings > Security." and example.source == "correction"
    assert example.chat() == [{"role": "user", "content": "question r1"}]


def test_approved_responses_are_kept_as_they_were() -> None:
    dataset = build([row("up", thumbs_up=1, response_text="Right answer."),
                     row("scored", max_score=0.9, response_text="Also right."),
                     row("lukewarm", max_score=0.5)])
    kept = everything(dataset)
    assert kept["up"].target == "Right answer." and kept["scored"].source == "approved"
    assert "lukewarm" not in kept and dataset.counts["dropped_no_signal"] == 1


def test_toxic_refusals_and_thumbs_down_only_are_excluded() -> None:
    dataset = build([
        row("toxic-correction", correction=f"you {TOXIC_WORD}"),
        row("toxic-prompt", prompt_toxicity=0.8, correction="fine answer"),
        row("toxic-exchange", thumbs_up=1, toxic=True),
        row("refusing-correction", correction="I'm sorry, but I can't help with that."),
        row("refused", thumbs_up=1, refusal=True),
        row("down", thumbs_down=1),
        row("good", correction="A good answer."),
    ])
    assert set(everything(dataset)) == {"good"}
    assert dataset.counts["dropped_toxic"] == 3
    assert dataset.counts["dropped_refusal"] == 2
    assert dataset.counts["dropped_thumbs_down"] == 1


def test_one_example_per_prompt_a_correction_first_then_the_newest() -> None:
    same = json.dumps([{"role": "user", "content": "How  do I reset my password?"}])
    same_other_case = json.dumps([{"role": "user", "content": "how do i reset my password?"}])
    dataset = build([
        row("a-old", messages=same, correction="Old correction.", timestamp="2026-12-01 10:00:00"),
        row("b-new", messages=same_other_case, correction="New correction.", timestamp="2026-12-01 11:00:00"),
        row("c-approved", messages=same, thumbs_up=1, timestamp="2026-12-01 12:00:00"),
    ])
    assert [e.target for e in everything(dataset).values()] == ["New correction."]
    assert dataset.counts["dropped_duplicate"] == 2


def test_personal_data_is_redacted_again() -> None:
    dataset = build([row("r1", correction="Write to ann@example.com")])
    assert everything(dataset)["r1"].target == "Write to [EMAIL]" and dataset.counts["redacted"] == 1


def test_completion_prompts_become_one_user_turn() -> None:
    dataset = build([row("r1", messages=None, prompt="Complete: the sky is", correction="blue.")])
    assert everything(dataset)["r1"].messages == (("user", "Complete: the sky is"),)


def test_no_contributor_supplies_more_than_its_share() -> None:
    rows = [row(f"r{i}", correction=f"answer {i}", feedback_user_id="loud" if i < 8 else f"u{i}") for i in range(12)]
    dataset = build(rows, max_contributor_share=0.25)
    kept = everything(dataset).values()
    assert sum(e.contributor == "loud" for e in kept) == 3  # ceil(0.25 * 12)
    assert dataset.counts["dropped_contributor_cap"] == 5


def test_the_split_is_stable_and_by_request_id() -> None:
    rows = [row(f"req-{i}", correction=f"answer {i}") for i in range(200)]
    first, second = build(rows), build(list(reversed(rows)))
    assert [e.request_id for e in first.heldout] == [e.request_id for e in second.heldout]
    assert 20 <= len(first.heldout) <= 60  # 20% of 200, give or take the hash
    grown = build([*rows, *(row(f"more-{i}", correction=f"more {i}") for i in range(50))])
    assert {e.request_id for e in first.heldout} <= {e.request_id for e in grown.heldout}
    assert all(heldout_side(e.request_id, 0.2) for e in first.heldout)


def test_too_little_data_is_reported_with_the_counts() -> None:
    dataset = build([row("r1", correction="one"), row("r2", thumbs_down=1), row("r3", correction="two")])
    reason = shortfall(dataset, 20)
    assert reason is not None and "2 usable examples, 20 needed" in reason and "thumbs_down 1" in reason
    big = build([row(f"req-{i}", correction=f"answer {i}") for i in range(40)])
    assert shortfall(big, 20) is None


def test_the_rows_hash_ignores_how_values_were_typed() -> None:
    as_read = [{"request_id": "r1", "toxic": False, "max_score": 0.9}]
    as_json = [{"request_id": "r1", "toxic": "False", "max_score": "0.9"}]
    assert rows_sha256(as_read) == rows_sha256(as_json) != rows_sha256([{"request_id": "r2"}])
    assert build([row("r1", correction="x")]).rows_sha256 != build([row("r1", correction="y")]).rows_sha256
