"""The window batches the families read, with their columns, and grouping shared by families."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd

GROUP_KEYS = ["model", "adapter", "prompt_version"]

INFERENCE_COLUMNS = {
    "model": "model",
    "adapter": "ifNull(adapter, '')",
    "prompt_version": "ifNull(prompt_template_version, '')",
    "status": "status",
    "latency_ms": "latency_ms",
    "ttft_ms": "ttft_ms",
    "prompt_tokens": "prompt_tokens",
    "completion_tokens": "completion_tokens",
    "prompt_toxicity": "prompt_toxicity",
    "response_toxicity": "response_toxicity",
    "toxic": "toxic",
    "refusal": "refusal",
    "sentiment": "sentiment",
    "cohort": "ifNull(cohort, '')",
    "language": "ifNull(language, '')",
    "groups": "groups",
    "prompt_length": "if(prompt IS NULL, lengthUTF8(ifNull(messages, '')), lengthUTF8(prompt))",
    "response_length": "lengthUTF8(ifNull(response_text, ''))",
}
"""Column name -> SQL expression over inference_events; what every inference window batch holds."""

FEEDBACK_COLUMNS = {
    "thumbs": "ifNull(f.thumbs, '')",
    "score": "f.score",
    "correction": "f.correction",
    "matched": "i.event_id != toUUID('00000000-0000-0000-0000-000000000000')",
    "model": "i.model",
    "adapter": "ifNull(i.adapter, '')",
    "prompt_version": "ifNull(i.prompt_template_version, '')",
    "response_text": "i.response_text",
    "cohort": "ifNull(i.cohort, '')",
    "language": "ifNull(i.language, '')",
    "groups": "i.groups",
}
"""Feedback in the window joined to its inference event (matched is false while it has not arrived)."""


def by_group(frame: pd.DataFrame) -> Iterator[tuple[tuple[str, str, str], pd.DataFrame]]:
    for key, group in frame.groupby(GROUP_KEYS, sort=True):
        yield (str(key[0]), str(key[1]), str(key[2])), group
