"""How an event becomes a ClickHouse row: the table's columns are the model's fields, by name."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from schemas.events import Event


def columns(model: type[Event]) -> list[str]:
    return list(model.model_fields)


def to_rows(events: Sequence[Event]) -> list[list[Any]]:
    """Rows in `columns()` order; lists of objects (chat messages) are stored as JSON text."""
    return [
        [json.dumps(v, ensure_ascii=False) if isinstance(v, list) else v for v in event.model_dump().values()]
        for event in events
    ]
