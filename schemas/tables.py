"""How an event becomes a ClickHouse row: the table's columns are the model's fields, by name."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from schemas.events import Event


@dataclass(frozen=True, slots=True)
class Rejected:
    """A row the store refused: its index in the batch written, and the store's reason."""

    index: int
    error: str


def columns(model: type[Event]) -> list[str]:
    return list(model.model_fields)


def to_rows(events: Sequence[Event]) -> list[list[Any]]:
    """Rows in `columns()` order; structured fields (chat messages) are stored as JSON text."""
    if not events:
        return []
    json_fields = type(events[0]).json_fields
    rows = []
    for event in events:
        data = event.model_dump()
        for name in json_fields:
            if data[name] is not None:
                data[name] = json.dumps(data[name], ensure_ascii=False)
        rows.append(list(data.values()))
    return rows
