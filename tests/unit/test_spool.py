"""The spool: bounded, in order, acknowledged in steps, and intact across a restart or a torn write."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.errors import ServingError
from serving.gateway.spool import Record, Spool


def records(n: int, start: int = 0, size: int = 100) -> list[Record]:
    return [Record("llm.inference", f"k{i}".encode(), f"{i:08d}".encode().ljust(size, b".")) for i in
            range(start, start + n)]


def drain(spool: Spool, batch: int = 7) -> list[Record]:
    out = []
    while spool.pending:
        got, cursor = spool.peek(batch)
        out += got
        spool.ack(cursor)
    return out


def test_records_come_back_in_order_exactly_once(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20, segment_bytes=1000)
    sent = records(50)
    assert spool.append(sent[:20]) == 20
    assert spool.append(sent[20:]) == 30
    assert spool.pending == 50
    assert drain(spool) == sent
    assert spool.pending == 0 and spool.size_bytes == 0
    assert list(tmp_path.glob("*.seg")) == []


def test_keys_may_be_absent_or_empty(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    sent = [Record("t", None, b"v"), Record("t", b"", b""), Record("topic.x", b"key", b"\x00\xff")]
    spool.append(sent)
    assert drain(spool) == sent


def test_peek_without_ack_returns_the_same_records(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20, segment_bytes=500)
    spool.append(records(10))
    first, _ = spool.peek(4)
    again, _ = spool.peek(4)
    assert first == again == records(4)


def test_a_restart_resumes_after_the_last_ack(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20, segment_bytes=1000)
    spool.append(records(30))
    got, cursor = spool.peek(12)
    spool.ack(cursor)
    spool.close()

    reopened = Spool(tmp_path, 1 << 20, segment_bytes=1000)
    assert reopened.pending == 18
    reopened.append(records(5, start=30))
    assert drain(reopened) == records(18, start=12) + records(5, start=30)


def test_an_unacknowledged_peek_is_replayed_after_a_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    spool.append(records(3))
    spool.peek(3)
    spool.close()
    assert drain(Spool(tmp_path, 1 << 20)) == records(3)


def test_the_bound_keeps_what_fits_and_says_how_much(tmp_path: Path) -> None:
    frame = len(records(1)[0].encode())
    spool = Spool(tmp_path, max_bytes=10 * frame + frame // 2, segment_bytes=1000)
    assert spool.append(records(8)) == 8
    assert spool.append(records(5, start=8)) == 2
    assert spool.append(records(1, start=13)) == 0
    got, cursor = spool.peek(4)
    spool.ack(cursor)
    assert spool.append(records(4, start=20)) == 4
    assert [r.value[:8] for r in drain(spool)] == [f"{i:08d}".encode() for i in [*range(4, 10), *range(20, 24)]]


def test_a_torn_last_write_is_cut_off_and_the_rest_survives(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    spool.append(records(5))
    spool.close()
    (segment,) = tmp_path.glob("*.seg")
    with segment.open("ab") as file:
        file.write(records(1, start=5)[0].encode()[:-10])

    reopened = Spool(tmp_path, 1 << 20)
    assert reopened.pending == 5
    reopened.append(records(1, start=6))
    assert drain(reopened) == records(5) + records(1, start=6)


def test_a_second_process_cannot_open_the_same_spool(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    with pytest.raises(ServingError, match="in use by another gateway"):
        Spool(tmp_path, 1 << 20)
    spool.close()
    Spool(tmp_path, 1 << 20).close()
