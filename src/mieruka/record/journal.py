"""The record's journal: each answered row is appended to a file before the answer goes out, and written to the
database later, in batches, by the service's writer thread.

An answer must not go out before its row is safe. A database transaction per answer (a hand-over to a writer
thread, a commit, the answer back) costs the service more than appending a line to a file, and a line written with
``os.write`` is in the operating system's cache when the call returns: a killed service (``kill -9``) loses none.
The writer reads the new lines every ``flush_s`` and inserts them in one transaction, which also stores how far the
journal has been written (``mieruka_meta``: ``journal:NAME`` → byte offset). So a line reaches the database once,
even when the process is killed between the insert and anything after it.

Each service process appends to its own file, ``NAME.jsonl`` in the pending folder, and holds an exclusive lock on
it (``flock``) while it lives. A journal whose lock is free belongs to a process that is gone: the next process that
opens the record (the restarted service, ``mieruka records``, ``monitor``…) writes its remaining lines and removes
it. A last line without its newline was cut by the kill while being written, so never acknowledged: it is dropped.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, delete, select, update

from mieruka.record.schema import meta

__all__ = ["CHUNK", "Journal", "fold_orphans", "forget", "pending_folder", "set_offset", "write_lines"]

CHUNK = 4 << 20
"""Bytes of journal read (and written to the database in one transaction) at a time."""

_log = logging.getLogger("mieruka.record")

InsertRows = Callable[[Connection, list[dict[str, Any]]], None]


def pending_folder(files: Path) -> Path:
    """Where the journals of a record go: beside its files folder (``records-files`` → ``records-files.pending``)."""
    return files.with_name(f"{files.name}.pending")


def _key(path: Path) -> str:
    return f"journal:{path.stem}"


class Journal:
    """This process's journal in ``folder``: :meth:`append` from any thread; the writer thread reads it back."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.lock = threading.Lock()
        self.path, self.fd = self._open()
        self.written = 0
        """Bytes appended to the current file."""
        self.waiting: list[tuple[list[dict[str, Any]], Any, int]] = []
        self.cut = False
        """Whether the last write was cut short (its line not ended)."""

    def _open(self) -> tuple[Path, int]:
        host = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
        path = self.folder / f"{host}-{os.getpid()}-{time.time_ns():x}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held while this process lives
        return path, fd

    def renew(self) -> tuple[Path, int]:
        """Go on in a new file; returns the old one's path and descriptor (still locked). Call it holding
        :attr:`lock`, so that no answer is appended to the old file afterwards."""
        old = self.path, self.fd
        self.path, self.fd = self._open()
        self.written, self.cut = 0, False
        return old

    def append(self, rows: list[dict[str, Any]], attached: Any = None) -> bool:
        """Append ``rows``, one JSON line each; True once all of them are in the file. The rows (and ``attached``)
        wait for :meth:`take` with the offset their lines end at."""
        data = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in rows).encode()
        with self.lock:
            if self.cut:  # the last line was cut (a full disk): end it first, so that it spoils no later line
                data = b"\n" + data
            n = os.write(self.fd, data)
            self.written += n
            self.cut = n < len(data)
            if self.cut:
                return False
            self.waiting.append((rows, attached, self.written))
        return True

    def take(self) -> list[tuple[list[dict[str, Any]], Any, int]]:
        """What was appended since the last call: (rows, attached, the offset their lines end at), in order."""
        with self.lock:
            taken, self.waiting = self.waiting, []
        return taken

    @property
    def key(self) -> str:
        """The key of the current file's offset in ``mieruka_meta``."""
        return _key(self.path)

    def close(self) -> None:
        """Release the file (its lock with it)."""
        os.close(self.fd)


def _lines(data: bytes) -> Iterator[dict[str, Any]]:
    for line in data.splitlines():
        try:
            yield json.loads(line)
        except ValueError:  # a line cut by a full disk (the answer said "recorded": false): nothing to write
            _log.warning("record journal: a damaged line skipped (%d bytes)", len(line))


def _offset(conn: Connection, key: str) -> int:
    value = conn.execute(select(meta.c.value).where(meta.c.key == key)).scalar_one_or_none()
    return int(value) if value is not None else 0


def set_offset(conn: Connection, key: str, offset: int) -> None:
    if conn.execute(update(meta).where(meta.c.key == key).values(value=str(offset))).rowcount == 0:
        conn.execute(meta.insert().values(key=key, value=str(offset)))


def write_lines(engine: Engine, insert: InsertRows, path: Path) -> int:
    """Write a journal's complete lines, from where the database says it stopped, to the database: a chunk per
    transaction with the offset it reached; returns how many rows."""
    key, written = _key(path), 0
    with engine.connect() as conn:
        start = _offset(conn, key)
    with open(path, "rb") as fh:
        while True:
            fh.seek(start)
            data = fh.read(CHUNK)
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                return written
            rows = list(_lines(data[:cut]))
            with engine.begin() as conn:
                if rows:
                    insert(conn, rows)
                set_offset(conn, key, start + cut)
            start += cut
            written += len(rows)


def forget(engine: Engine, path: Path) -> None:
    """Remove a journal whose lines are all in the database, then its offset (in that order: a kill between the two
    leaves an offset without a file, which is harmless; the other way round would write the lines again)."""
    path.unlink(missing_ok=True)
    with engine.begin() as conn:
        conn.execute(delete(meta).where(meta.c.key == _key(path)))


def fold_orphans(engine: Engine, folder: Path, insert: InsertRows) -> int:
    """Write the journals in ``folder`` that no live process holds (their process was killed) to the database and
    remove them; returns how many rows were written."""
    if not folder.is_dir():
        return 0
    written = 0
    for path in sorted(folder.glob("*.jsonl")):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # folded by another process meanwhile
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # its service is alive and writes it
                continue
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # another process folded and removed it before this one got the lock
                continue
            written += write_lines(engine, insert, path)
            forget(engine, path)
        finally:
            os.close(fd)
    if written:
        _log.warning("record: %d answered rows of a stopped service written from its journal", written)
    return written
