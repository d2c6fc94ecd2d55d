"""How an event becomes a ClickHouse row: the table's columns are the model's fields, by name."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from operator import attrgetter
from typing import Any

from pydantic_core import to_jsonable_python

from schemas.events import Event


@dataclass(frozen=True, slots=True)
class Rejected:
    """A row the store refused: its index in the batch written, and the store's reason."""

    index: int
    error: str


def columns(model: type[Event]) -> list[str]:
    return list(model.model_fields)


@cache
def _reader(model: type[Event]) -> tuple[Callable[[Event], tuple[Any, ...]], list[int]]:
    """The model's field values in column order, read in one C call, and where its JSON columns sit."""
    names = columns(model)
    return attrgetter(*names), [i for i, name in enumerate(names) if name in model.json_fields]


def to_rows(events: Sequence[Event]) -> list[list[Any]]:
    """Rows in `columns()` order; structured fields (chat messages) are stored as JSON text.

    The values are the event's own (frozen) objects, not a `model_dump` copy of each: that copy was the
    dearest part of building a row. Only the JSON columns are converted.
    """
    if not events:
        return []
    read, json_at = _reader(type(events[0]))
    rows = []
    for event in events:
        row = list(read(event))
        for i in json_at:
            if row[i] is not None:
                row[i] = json.dumps(to_jsonable_python(row[i]), ensure_ascii=False)
        rows.append(row)
    return rows
