"""The local collector's journal: accepted batches on disk before the answer.

An append-only log in segment files (``seg-<n>.log`` in the collector's journal
directory), as write-ahead logs are: each record is its length, a CRC-32 and the payload;
the records that arrive together are written with one ``write`` and made durable with
one ``fdatasync``. A segment is deleted once every record in it is in the store. When
the collector starts, whatever segments are left (a crash, a kill) are read back in
order; a record cut short by a crash in mid-write ends its segment (it was never
answered, since the answer waits for the sync).

>>> import tempfile
>>> journal = Journal(tempfile.mkdtemp())
>>> segment = journal.append([b"first", b"second"])
>>> journal.close()
>>> again = Journal(journal.directory)
>>> [(s == segment, payload) for s, payload in again.recover()]
[(True, b'first'), (True, b'second')]
>>> again.done(segment, 2)
>>> sorted(p.name for p in again.directory.iterdir())
[]
>>> again.close()
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

log = logging.getLogger("edgemetrics")

_MAGIC = b"EMJ1\n"
_RECORD = struct.Struct("<II")  # payload length, CRC-32 of the payload
_PREFIX = "seg-"
_SUFFIX = ".log"


class Journal:
    """Append-only, fsynced records in segment files; safe for one writer thread and one
    thread that reports records as done."""

    def __init__(self, directory: str | Path, *, segment_bytes: int = 8 << 20) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        found = sorted(
            int(p.name[len(_PREFIX) : -len(_SUFFIX)])
            for p in self.directory.glob(f"{_PREFIX}*{_SUFFIX}")
            if p.name[len(_PREFIX) : -len(_SUFFIX)].isdigit()
        )
        # Records not yet reported done, per segment; segments left by an earlier run
        # count theirs when they are read back.
        self._open_records: dict[int, int] = dict.fromkeys(found, 0)
        self._left = list(found)
        # Segments not yet read back whole: kept even when their records read so far are done.
        self._unread = set(found)
        self._active = (found[-1] + 1) if found else 0
        self._fd: int | None = None
        self._size = 0

    def _path(self, segment: int) -> Path:
        return self.directory / f"{_PREFIX}{segment:016d}{_SUFFIX}"

    def recover(self) -> Iterator[tuple[int, bytes]]:
        """The records left by an earlier run, oldest first, with their segment."""
        for segment in self._left:
            path = self._path(segment)
            data = path.read_bytes()
            offset = len(_MAGIC) if data.startswith(_MAGIC) else len(data)
            while offset + _RECORD.size <= len(data):
                length, crc = _RECORD.unpack_from(data, offset)
                start = offset + _RECORD.size
                payload = data[start : start + length]
                if len(payload) != length or zlib.crc32(payload) != crc:
                    break
                with self._lock:
                    self._open_records[segment] += 1
                yield segment, payload
                offset = start + length
            if offset != len(data):
                log.warning(
                    "edgemetrics journal: %s ends in %d bytes that are not a whole record "
                    "(cut short by a crash in mid-write; never answered)",
                    path,
                    len(data) - offset,
                )
            with self._lock:
                self._unread.discard(segment)
                if self._open_records[segment] <= 0:
                    self._delete(segment)
        self._left = []

    def append(self, payloads: Sequence[bytes]) -> int:
        """Write the records and sync them to disk; returns their segment. Raises OSError
        (a full disk, say) with nothing of them left in the journal."""
        parts: list[bytes] = []
        for payload in payloads:
            parts.append(_RECORD.pack(len(payload), zlib.crc32(payload)))
            parts.append(payload)
        data = b"".join(parts)
        with self._lock:
            if self._fd is None or self._size >= self.segment_bytes:
                self._rotate()
            assert self._fd is not None
            segment = self._active
            try:
                written = os.write(self._fd, data)
                if written != len(data):
                    raise OSError(f"journal: wrote {written} of {len(data)} bytes")
                os.fdatasync(self._fd)
            except OSError:
                self._undo()
                raise
            self._size += len(data)
            self._open_records[segment] = self._open_records.get(segment, 0) + len(payloads)
        return segment

    def done(self, segment: int, records: int) -> None:
        """``records`` records of ``segment`` are in the store."""
        with self._lock:
            left = self._open_records.get(segment, 0) - records
            self._open_records[segment] = left
            if (
                left <= 0
                and segment not in self._unread
                and (segment != self._active or self._fd is None)
            ):
                self._delete(segment)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self._open_records.get(self._active, 1) <= 0:
                self._delete(self._active)

    def _rotate(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            if self._open_records.get(self._active, 0) <= 0:
                self._delete(self._active)
            self._active += 1
        path = self._path(self._active)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, _MAGIC)
            os.fsync(fd)
            # The new file's name must be durable too, or a crash could lose the segment.
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        self._fd = fd
        self._size = len(_MAGIC)
        self._open_records.setdefault(self._active, 0)

    def _undo(self) -> None:
        """After a failed write: cut the segment back to its last whole record; if even
        that fails, leave it (its tail is not a whole record) and start a new one."""
        assert self._fd is not None
        try:
            os.ftruncate(self._fd, self._size)
        except OSError:
            os.close(self._fd)
            self._fd = None
            self._active += 1

    def _delete(self, segment: int) -> None:
        self._open_records.pop(segment, None)
        self._path(segment).unlink(missing_ok=True)
