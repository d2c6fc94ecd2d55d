"""One spool per gateway process, and what becomes of the spool of a process that no longer runs.

With `LLMWATCH_SERVING__GATEWAY_PROCESSES=N`, process `i` keeps its events in `<data dir>/spool/gateway/<i>`:
no two processes ever write or replay the same file, and process `i` of the next run replays what process
`i` of the last one left. When N shrinks, the folders of indices N and above have no owner any more:
process 0 adopts them at start (their records move into its own spool, oldest first, and are published
from there), as it adopts the records of a gateway from before per-process spools (segments directly in
`spool/gateway`). Nothing is lost: records that do not fit in process 0's spool stay where they were, for
the next start; a folder another process still holds (a gateway of an earlier run, still running) is left
alone.
"""

from __future__ import annotations

import logging
from pathlib import Path

from schemas.errors import ServingError
from serving.gateway.spool import Spool

log = logging.getLogger(__name__)

_BATCH = 500
_SEGMENTS = "*.seg"
_BOOKKEEPING = ("ack", "ack.tmp", "lock")


def spool_root(data_dir: Path) -> Path:
    return data_dir / "spool" / "gateway"


def spool_dir(data_dir: Path, index: int) -> Path:
    """The spool of gateway process `index`."""
    return spool_root(data_dir) / str(index)


def orphaned(data_dir: Path, processes: int) -> list[Path]:
    """Spools no process of a gateway with `processes` processes owns, the one from before per-process
    spools first (the oldest), then by index."""
    root = spool_root(data_dir)
    if not root.is_dir():
        return []
    found = sorted((path for path in root.iterdir()
                    if path.is_dir() and path.name.isdigit() and int(path.name) >= processes),
                   key=lambda path: int(path.name))
    return [root, *found] if any(root.glob(_SEGMENTS)) else found


def adopt(own: Spool, orphan: Path) -> int:
    """Move the records of an orphaned spool into `own`, oldest first; returns how many moved.

    Each batch is acknowledged in the orphan only once `own` has stored it (fsynced), so a crash in the
    middle repeats at most one batch, which the store collapses by event id.
    """
    try:
        source = Spool(orphan, own.max_bytes)
    except ServingError:
        log.warning("the spool %s belongs to no process of this gateway but is still in use (a gateway of an "
                    "earlier run?); it is left alone", orphan)
        return 0
    moved = 0
    try:
        while source.pending:
            records, cursor = source.peek(_BATCH)
            stored = own.append(records)
            if stored:
                source.ack(cursor if stored == len(records) else source.peek(stored)[1])
            moved += stored
            if stored < len(records):
                log.error("the spool %s is full: %d events of the orphaned spool %s stay there until the next "
                          "start", own.directory, source.pending, orphan)
                break
        left = source.pending
    finally:
        source.close()
    if not left:
        _tidy(orphan)
    if moved:
        log.info("%d events from the spool %s (a gateway process that no longer runs) moved to %s", moved, orphan,
                 own.directory)
    return moved


def _tidy(orphan: Path) -> None:
    """Remove an emptied spool's bookkeeping, and the folder once nothing else is in it (`refused.jsonl`
    is kept for a person to read)."""
    for name in _BOOKKEEPING:
        (orphan / name).unlink(missing_ok=True)
    if orphan.name.isdigit() and not any(orphan.iterdir()):
        orphan.rmdir()
