"""A bounded on-disk queue of Kafka records, so the gateway loses no event while Kafka is away.

Records are appended, framed (length + CRC32), to numbered segment files and fsynced before `append`
returns. A reader takes the oldest records (`peek`) and acknowledges them once Kafka has (`ack`): the
acknowledged position is written to a small file that is renamed into place, and segments read to the
end are deleted. A restart resumes at the last acknowledged position, so a crash between Kafka's ack and
ours resends at most one batch, which the store collapses by `event_id`. A torn frame at the end of the
last segment (a crash mid-append) is cut off at open.

The bound is on bytes not yet acknowledged: `append` stores the records that fit and returns how many,
so the caller decides what to say about the rest. One process owns a spool (a lock file says so);
within it, one user at a time (not thread-safe).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from schemas.errors import ServingError

log = logging.getLogger(__name__)

_FRAME = struct.Struct(">II")  # payload length, CRC32 of the payload
_RECORD = struct.Struct(">HI")  # topic length, key length (NO_KEY: none)
_NO_KEY = 0xFFFFFFFF
_SUFFIX = ".seg"
_ACK_FILE = "ack"


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka message as the producer would send it."""

    topic: str
    key: bytes | None
    value: bytes

    def encode(self) -> bytes:
        topic = self.topic.encode()
        key = self.key or b""
        payload = b"".join((_RECORD.pack(len(topic), _NO_KEY if self.key is None else len(key)), topic, key,
                            self.value))
        return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload

    @classmethod
    def decode(cls, payload: bytes) -> Record:
        topic_length, key_length = _RECORD.unpack_from(payload)
        start = _RECORD.size + topic_length
        topic = payload[_RECORD.size:start].decode()
        if key_length == _NO_KEY:
            return cls(topic, None, payload[start:])
        return cls(topic, payload[start:start + key_length], payload[start + key_length:])


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a `peek` stopped: pass it to `ack` once every record it returned is safe elsewhere."""

    segment: int
    offset: int
    records: int


def _frames(data: bytes) -> tuple[list[bytes], int]:
    """The intact payloads at the start of `data`, and the offset where intact frames end."""
    payloads, offset = [], 0
    while offset + _FRAME.size <= len(data):
        length, crc = _FRAME.unpack_from(data, offset)
        end = offset + _FRAME.size + length
        if end > len(data) or zlib.crc32(data[offset + _FRAME.size:end]) != crc:
            break
        payloads.append(data[offset + _FRAME.size:end])
        offset = end
    return payloads, offset


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """Open with `Spool(directory, max_bytes)`; what an earlier process left there is read first."""

    def __init__(self, directory: Path, max_bytes: int, *, segment_bytes: int | None = None) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or max(64 * 1024, min(16 * 1024 * 1024, max_bytes // 8))
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = (directory / "lock").open("w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise ServingError(f"the spool {directory} is in use by another gateway: give each gateway its own "
                               "LLMWATCH_DATA_DIR") from None
        self._segments: dict[int, int] = {}  # segment number -> its size in bytes
        self._read_segment, self._read_offset = self._load_ack()
        self.pending = 0
        self._open()

    def close(self) -> None:
        """Release the spool to the next process; what it holds stays on disk."""
        self._lock.close()

    @property
    def size_bytes(self) -> int:
        """Bytes not yet acknowledged: what counts against `max_bytes`."""
        return sum(self._segments.values()) - (self._read_offset if self._read_segment in self._segments else 0)

    def _path(self, segment: int) -> Path:
        return self.directory / f"{segment:020d}{_SUFFIX}"

    def _load_ack(self) -> tuple[int, int]:
        try:
            segment, offset = (self.directory / _ACK_FILE).read_text().split()
            return int(segment), int(offset)
        except (OSError, ValueError):
            return 0, 0

    def _open(self) -> None:
        """Index the segments, drop fully acknowledged ones, cut a torn tail, count what is pending."""
        numbers = sorted(int(p.name.removesuffix(_SUFFIX)) for p in self.directory.glob(f"*{_SUFFIX}"))
        for number in numbers:
            path = self._path(number)
            if number < self._read_segment:
                path.unlink()
                continue
            data = path.read_bytes()
            payloads, end = _frames(data)
            if end < len(data):
                log.warning("spool segment %s: %d damaged bytes at the end (an interrupted write) removed",
                            path.name, len(data) - end)
                with path.open("r+b") as file:
                    file.truncate(end)
                    os.fsync(file.fileno())
            self._segments[number] = end
            if number == self._read_segment:
                self._read_offset = min(self._read_offset, end)
                self.pending += len(_frames(data[self._read_offset:end])[0])
            else:
                self.pending += len(payloads)
        if self._segments and self._read_segment not in self._segments:
            self._read_segment, self._read_offset = min(self._segments), 0
        if self.pending:
            log.info("spool %s holds %d events (%d bytes) from before", self.directory, self.pending,
                     self.size_bytes)

    def append(self, records: Sequence[Record]) -> int:
        """Store the records that fit under `max_bytes`, durably; returns how many (a prefix) were stored."""
        room = self.max_bytes - self.size_bytes
        frames: list[bytes] = []
        for record in records:
            frame = record.encode()
            if len(frame) > room:
                break
            frames.append(frame)
            room -= len(frame)
        if frames:
            self._write(frames)
        return len(frames)

    def _write(self, frames: list[bytes]) -> None:
        if self._segments:
            last = max(self._segments)
            segment = last if self._segments[last] < self.segment_bytes else last + 1
        else:  # all delivered: start after the acknowledged position
            segment = self._read_segment + (self._read_offset > 0)
            self._read_segment, self._read_offset = segment, 0
        new = segment not in self._segments
        with self._path(segment).open("ab") as file:
            file.write(b"".join(frames))
            file.flush()
            os.fsync(file.fileno())
        if new:
            _fsync_directory(self.directory)
        self._segments[segment] = self._segments.get(segment, 0) + sum(map(len, frames))
        self.pending += len(frames)

    def peek(self, max_records: int) -> tuple[list[Record], Cursor]:
        """The oldest unacknowledged records, up to `max_records`, oldest first (empty when none)."""
        records: list[Record] = []
        segment, offset = self._read_segment, self._read_offset
        for number in sorted(n for n in self._segments if n >= self._read_segment):
            if len(records) >= max_records:
                break
            segment, offset = number, offset if number == self._read_segment else 0
            with self._path(number).open("rb") as file:
                file.seek(offset)
                while offset < self._segments[number] and len(records) < max_records:
                    length, _ = _FRAME.unpack(file.read(_FRAME.size))
                    records.append(Record.decode(file.read(length)))
                    offset += _FRAME.size + length
        return records, Cursor(segment, offset, len(records))

    def ack(self, cursor: Cursor) -> None:
        """Everything up to `cursor` is delivered: remember that, and delete the segments read to the end."""
        done = [n for n in self._segments if n < cursor.segment]
        if self._segments.get(cursor.segment) == cursor.offset:
            done.append(cursor.segment)
        self._read_segment, self._read_offset = cursor.segment, cursor.offset
        if cursor.segment in done:
            self._read_segment, self._read_offset = cursor.segment + 1, 0
        temporary = self.directory / f"{_ACK_FILE}.tmp"
        with temporary.open("w") as file:
            file.write(f"{self._read_segment} {self._read_offset}\n")
            file.flush()
            os.fsync(file.fileno())
        temporary.replace(self.directory / _ACK_FILE)
        for number in done:
            self._path(number).unlink(missing_ok=True)
            del self._segments[number]
        if self._segments and self._read_segment not in self._segments:
            self._read_segment, self._read_offset = min(self._segments), 0
        self.pending -= cursor.records


class SetAside:
    """Records Kafka refused for good (too large, say), kept one JSON line each beside the spool.

    A refused record can never be published: retrying it would block every record behind it, for good.
    It is kept here for a person to look at (`refused.jsonl`, its value as the event's JSON), up to
    `max_bytes`; beyond that only counted and logged.
    """

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes

    def add(self, record: Record, reason: str) -> bool:
        """Keep the record; False when there is no room (the caller says so)."""
        line = json.dumps({"at": datetime.now(UTC).isoformat(), "reason": reason, "topic": record.topic,
                           "key": None if record.key is None else record.key.decode(errors="replace"),
                           "size": len(record.value), "value": record.value.decode(errors="replace")},
                          ensure_ascii=False).encode() + b"\n"
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size + len(line) > self.max_bytes:
            return False
        with self.path.open("ab") as file:
            file.write(line)
            file.flush()
            os.fsync(file.fileno())
        return True
