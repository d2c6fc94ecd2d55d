"""What a model should have answered, from what users said about production traffic: a pure function.

The rows are inference events joined to their feedback (`streams.store.training` reads them). A user's
correction replaces the response; a response with thumbs up (and none down) or a score of at least
`min_score` is kept as it was. Feedback is untrusted input, so toxic prompts and corrections, refusals,
thumbs-down without a correction, duplicates of a prompt, and more than `max_contributor_share` of the
examples from one user (or session) are dropped, and the gateway's redaction is applied again. Every drop
is counted for the lineage, next to a SHA-256 of the rows as read. Train and held-out are split by a hash
of the request id, so a request stays on its side however the data grows.

Formatting with the base model's chat template needs its tokenizer: `trainers.lora` does it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

ScoreTexts = Callable[[Sequence[str]], Sequence[float]]
Redact = Callable[[str], tuple[str, Mapping[str, int]]]


@dataclass(frozen=True)
class DatasetPolicy:
    min_score: float = 0.8
    toxicity_threshold: float = 0.5
    heldout_fraction: float = 0.2
    max_contributor_share: float = 0.25
    min_examples: int = 20


@dataclass(frozen=True)
class Example:
    request_id: str
    messages: tuple[tuple[str, str], ...]
    """(role, content) of the conversation the answer follows."""
    target: str
    source: Literal["correction", "approved"]
    contributor: str

    def chat(self) -> list[dict[str, str]]:
        return [{"role": role, "content": content} for role, content in self.messages]


@dataclass(frozen=True)
class Dataset:
    train: tuple[Example, ...]
    heldout: tuple[Example, ...]
    counts: dict[str, int] = field(default_factory=dict)
    rows_sha256: str = ""

    @property
    def size(self) -> int:
        return len(self.train) + len(self.heldout)


def rows_sha256(rows: Sequence[Mapping[str, Any]]) -> str:
    """The same rows give the same hash whichever way they were read (store or worker HTTP: values as text)."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps({k: None if v is None else str(v) for k, v in row.items()}, sort_keys=True,
                                 ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def heldout_side(request_id: str, fraction: float) -> bool:
    bucket = int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:8], "big") / 2**64
    return bucket < fraction


def conversation(row: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """The stored chat (JSON text) or the completion prompt as one user turn."""
    messages = row.get("messages")
    if isinstance(messages, str) and messages.strip():
        messages = json.loads(messages)
    if messages:
        return tuple((str(m["role"]), str(m["content"])) for m in messages)
    return (("user", str(row.get("prompt") or "")),)


def _prompt_key(messages: tuple[tuple[str, str], ...]) -> str:
    return json.dumps([(role, " ".join(content.lower().split())) for role, content in messages])


def _flag(value: Any) -> bool:
    return value in (True, 1, "1", "true", "True")


def _number(value: Any) -> float | None:
    return None if value is None or value == "" else float(value)


def build_dataset(rows: Sequence[Mapping[str, Any]], policy: DatasetPolicy, *, score_toxicity: ScoreTexts,
                  redact: Redact, is_refusal: Callable[[str], bool]) -> Dataset:
    """Train and held-out examples from joined rows; deterministic for the same rows and scorers."""
    ordered = sorted(rows, key=lambda r: (str(r.get("timestamp")), str(r["request_id"])))
    counts: Counter[str] = Counter(rows=len(ordered))
    corrections = [str(r.get("correction") or "").strip() for r in ordered]
    toxic_corrections = dict(zip([c for c in corrections if c], score_toxicity([c for c in corrections if c]),
                                 strict=True))
    candidates: list[tuple[Example, Mapping[str, Any]]] = []
    for row, correction in zip(ordered, corrections, strict=True):
        prompt_toxic = (_number(row.get("prompt_toxicity")) or 0.0) >= policy.toxicity_threshold
        if correction:
            if prompt_toxic or toxic_corrections[correction] >= policy.toxicity_threshold:
                counts["dropped_toxic"] += 1
                continue
            if is_refusal(correction):
                counts["dropped_refusal"] += 1
                continue
            target, source = correction, "correction"
        elif int(_number(row.get("thumbs_down")) or 0) > 0:
            counts["dropped_thumbs_down"] += 1
            continue
        elif int(_number(row.get("thumbs_up")) or 0) > 0 or (_number(row.get("max_score")) or 0) >= policy.min_score:
            target, source = str(row.get("response_text") or "").strip(), "approved"
            if not target:
                counts["dropped_no_response"] += 1
                continue
            if _flag(row.get("toxic")) or prompt_toxic:
                counts["dropped_toxic"] += 1
                continue
            if _flag(row.get("refusal")) or is_refusal(target):
                counts["dropped_refusal"] += 1
                continue
        else:
            counts["dropped_no_signal"] += 1
            continue
        messages, redacted = _redacted(conversation(row), target, redact)
        counts["redacted"] += redacted
        contributor = (row.get("feedback_user_id") or row.get("user_id") or row.get("session_id")
                       or f"request:{row['request_id']}")
        example = Example(str(row["request_id"]), messages[:-1], messages[-1][1], source, str(contributor))  # type: ignore[arg-type]
        candidates.append((example, row))

    by_prompt: dict[str, Example] = {}
    for example, _ in candidates:  # oldest first: a later example of the same kind replaces an earlier one
        key = _prompt_key(example.messages)
        kept = by_prompt.get(key)
        if kept is not None:
            counts["dropped_duplicate"] += 1
            if kept.source == "correction" and example.source == "approved":
                continue
        by_prompt[key] = example
    unique = sorted(by_prompt.values(), key=lambda e: e.request_id)

    cap = max(1, math.ceil(policy.max_contributor_share * len(unique)))
    per_contributor: Counter[str] = Counter()
    examples = []
    for example in unique:
        per_contributor[example.contributor] += 1
        if per_contributor[example.contributor] > cap:
            counts["dropped_contributor_cap"] += 1
            continue
        examples.append(example)
    counts["contributors"] = len(per_contributor)
    counts["corrections"] = sum(e.source == "correction" for e in examples)
    counts["approved"] = sum(e.source == "approved" for e in examples)
    heldout = tuple(e for e in examples if heldout_side(e.request_id, policy.heldout_fraction))
    train = tuple(e for e in examples if not heldout_side(e.request_id, policy.heldout_fraction))
    counts["train"], counts["heldout"] = len(train), len(heldout)
    return Dataset(train, heldout, dict(sorted(counts.items())), rows_sha256(ordered))


def _redacted(messages: tuple[tuple[str, str], ...], target: str,
              redact: Redact) -> tuple[tuple[tuple[str, str], ...], int]:
    """Every turn and the target through the redactor again; how many texts it changed."""
    changed = 0
    out = []
    for role, content in (*messages, ("assistant", target)):
        text, found = redact(content)
        changed += bool(found)
        out.append((role, text))
    return tuple(out), changed


def shortfall(dataset: Dataset, min_examples: int) -> str | None:
    """Why the dataset is too small to train and judge a candidate, or None."""
    dropped = ", ".join(f"{k.removeprefix('dropped_')} {v}" for k, v in dataset.counts.items()
                        if k.startswith("dropped_") and v)
    detail = f" ({dataset.counts.get('rows', 0)} rows read; dropped: {dropped or 'none'})"
    if dataset.size < min_examples:
        return f"too little data: {dataset.size} usable examples, {min_examples} needed{detail}"
    if not dataset.heldout or not dataset.train:
        return (f"too little data: {len(dataset.train)} train and {len(dataset.heldout)} held-out examples; "
                f"both sides are needed{detail}")
    return None
