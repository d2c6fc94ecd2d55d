"""What processors need from the store, as small protocols: `streams/store/` implements them.

Ingest, embedding and the window job are written against these, so that each can be driven in a test
by a list in memory as well as by ClickHouse, and so that nothing in `processors/` but the wiring
(`agents.py`, `views.py`) imports `streams/`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

import numpy as np
import pandas as pd

from schemas.events import Event, SeriesState, SilenceEvent
from schemas.tables import Rejected


class RowWriter(Protocol):
    """Stores a batch, waiting out an unavailable store; returns the rows the store refused."""

    async def write(self, events: Sequence[Event]) -> list[Rejected]: ...

    async def write_rows(self, model: type[Event], rows: Sequence[Sequence[Any]]) -> list[Rejected]: ...


class WindowReader(Protocol):
    """Reads back what one window holds, deduplicated (replays and retries count once)."""

    async def inference(self, start: datetime, end: datetime) -> pd.DataFrame:
        """Inference events in [start, end), with the columns every family reads."""
        ...

    async def feedback(self, start: datetime, end: datetime) -> pd.DataFrame:
        """Feedback in [start, end), joined to its inference event by request id where that has arrived."""
        ...

    async def embeddings(self, start: datetime, end: datetime) -> dict[str, np.ndarray]:
        """Sampled embeddings in [start, end), one matrix per field (prompt, response)."""
        ...

    async def reference(self, size: int) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
        """The drift reference: the pinned period, else the first `size` embedded events, and their rows."""
        ...

    async def stored(self, window_start: datetime, window_seconds: int, ids: Sequence[UUID]) -> int:
        """How many of these metric points of the window are in the store."""
        ...


class AlertStore(Protocol):
    """What alert evaluation reads back: its own state after a restart, silences, the requests behind a breach."""

    async def series(self) -> list[SeriesState]: ...

    async def silences(self, now: datetime) -> list[SilenceEvent]: ...

    async def worst_requests(self, metric: str, series: dict[str, str], start: datetime, end: datetime,
                             limit: int = 5) -> list[str]: ...
