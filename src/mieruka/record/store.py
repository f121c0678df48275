"""The service's record: every answered image kept, without holding the answer for long.

A request writes its files and appends its rows to this process's journal (:mod:`mieruka.record.journal`, one line
each) and answers: a killed service loses no acknowledged answer. The writer thread writes the journal's new lines
to the database every ``flush_s`` (0.2 s), in one transaction; readers of the record see an answer that much later
(the service's own History and Drift views write what is pending first). When the journal cannot be written (a full
disk), or more than ``max_pending_mb`` wait for a database that does not take them, the answer goes out anyway and
says ``"recorded": false`` (:attr:`Recorder.failed` counts them).

Files are content-addressed (``files/ab/abcdef….png``, the SHA-256 of their bytes): the same image sent twice is
kept once. ``keep``: ``all``, ``ng`` (the images judged NG) or ``none``. Retention applies to the files (the rows,
small, stay for traceability): files older than ``retain_days`` are removed, then the oldest ones until the
folder holds at most ``retain_gb``; their rows keep the decision and lose the file name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, func, insert, select, update
from sqlalchemy.exc import DataError, IntegrityError

from mieruka.errors import MierukaError
from mieruka.record.journal import Journal, fold_orphans, forget, pending_folder, set_offset
from mieruka.record.schema import decisions, migrate, models, open_engine

__all__ = ["KEEP_CHOICES", "Kept", "Recorder", "files_folder", "kept_file", "write_orphans"]

KEEP_CHOICES = ("all", "ng", "none")
WRITTEN_MEMORY = 100_000
"""The most kept-file names the writer remembers as written (then it starts again from none)."""
PRUNE_EVERY_S = 300.0
"""How often the writer applies the retention limits (and once when it starts)."""
ROTATE_BYTES = 16 << 20
"""A journal this long, all of it in the database, is replaced by a new one (and removed)."""

_log = logging.getLogger("mieruka.record")

Complete = Callable[[list[Any]], list[dict[str, Any]]]
"""More columns of rows from what was attached to each (one dict per row), computed by the writer for all the rows
it writes at once."""


@dataclass(frozen=True)
class Kept:
    """A file to keep beside a row: its bytes and suffix (``.png``, ``.jpg``…)."""

    data: bytes
    suffix: str


_KEPT_NAME = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{64}\.[a-z0-9]{1,5}$")


def kept_file(folder: Path | None, relative: str) -> Path | None:
    """The kept file a row names (``ab/abcdef….png`` under ``folder``), or None when there is none by that name
    (anything but a content address, ``..`` included, is no name)."""
    if folder is None or not _KEPT_NAME.match(relative) or not (folder / relative).is_file():
        return None
    return folder / relative


def files_folder(engine: Engine, given: str | os.PathLike[str] | None) -> Path:
    """Where the kept files go: ``given`` (every command's ``--record-files``), else beside a SQLite database
    (``records.db`` → ``records-files/``)."""
    if given is not None:
        return Path(given)
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        raise MierukaError(
            f"{engine.url.render_as_string(hide_password=True)}: a server database keeps no files beside it; give "
            "--record-files DIR, the folder of its kept images and of the answers waiting to be written "
            "(serve --record-files DIR)"
        )
    path = Path(database)
    return path.with_name(f"{path.stem}-files")


def write_orphans(engine: Engine, files: Path) -> int:
    """Write to the database what the journals of killed services beside ``files`` hold (see
    :mod:`mieruka.record.journal`); returns how many rows."""
    return fold_orphans(engine, pending_folder(files), _Insert(engine).run)


def _completed(rows: list[dict[str, Any]], attached: list[Any], complete: Complete | None) -> list[dict[str, Any]]:
    """``rows`` with the columns ``complete`` computes from ``attached`` (the rows as they are when it fails: the
    decisions are kept)."""
    if complete is None or not attached:
        return rows
    try:
        more = complete(attached)
    except Exception as exc:
        _log.error("record: the features of %d answered rows not computed (%s)", len(rows), exc)
        return rows
    return [{**row, **extra} for row, extra in zip(rows, more, strict=True)]


class _Insert:
    """The insert of decisions, compiled once for the engine's driver and run through it directly: the writer runs
    it for every batch, and SQLAlchemy's statement cache and parameter handling cost more than the insert itself
    (every column is a plain number or string, which the drivers take as they are)."""

    def __init__(self, engine: Engine):
        columns = [c for c in decisions.columns if not c.primary_key]
        statement = insert(decisions).values({c.name: bindparam(c.name) for c in columns})
        compiled = statement.compile(dialect=engine.dialect)
        self.sql = str(compiled)
        self.names = [c.name for c in columns]
        self.order = compiled.positiontup  # the parameters' order for a positional driver (SQLite); None: by name

    def run(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        if self.order is not None:
            conn.exec_driver_sql(self.sql, [tuple(r.get(k) for k in self.order) for r in rows])
        else:
            conn.exec_driver_sql(self.sql, [{k: r.get(k) for k in self.names} for r in rows])


class Recorder:
    """Writes the decisions of a service to ``url`` (see the module docstring).

    Args:
        url: ``sqlite:///PATH`` or ``postgresql://…``.
        keep: Which images (and their overlays) to keep as files.
        files: Folder for the files (default: beside a SQLite database; a server database needs one, for its
            journal).
        retention: Retention limits of the files, (days, GiB) (None: none).
        flush_s: How often the writer thread writes the journal to the database.
        max_pending_mb: Most journal waiting for the database before answers say ``"recorded": false``.
    """

    def __init__(
        self,
        url: str,
        *,
        keep: str = "ng",
        files: str | os.PathLike[str] | None = None,
        retention: tuple[float | None, float | None] = (None, None),
        flush_s: float = 0.2,
        max_pending_mb: float = 64.0,
    ):
        if keep not in KEEP_CHOICES:
            raise MierukaError(f"--keep {keep}: choose one of {', '.join(KEEP_CHOICES)}")
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine = open_engine(url)
        folder = files_folder(self.engine, files)  # before touching the database: a missing folder is refused first
        migrate(self.engine)
        self.url, self.keep, self.flush_s = url, keep, flush_s
        self.files = folder if keep != "none" else None
        self.retain_days, self.retain_gb = retention
        self.max_pending = int(max_pending_mb * (1 << 20))
        self.failed = 0
        self.recorded = 0
        self._insert = _Insert(self.engine)  # built once: the writer runs it for every batch
        self.pending = pending_folder(folder)
        self.recorded += fold_orphans(self.engine, self.pending, self._insert.run)  # what a killed predecessor answered
        self.journal = Journal(self.pending)
        self._done = 0
        """Bytes of this process's journal in the database."""
        self._ready: list[dict[str, Any]] = []
        """Rows taken from the journal, complete, waiting for the database (when it failed)."""
        self._ready_end = 0
        self.complete: Complete | None = None
        """Computes more columns of the rows recorded with something attached (:meth:`record`)."""
        self._flushing = threading.Lock()
        self._failing = False
        self._last_prune = 0.0
        self._written: set[str] = set()
        """Names of the files this process kept (or found) since the last prune, so that an image sent again is
        not looked up on disk again."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mieruka-recorder", daemon=True)
        self._thread.start()

    def register_model(self, model_id: str, info: Any, path: str, reference: dict[str, Any] | None) -> None:
        """Describe the model that answers (once per model id; ``serve --workers N`` processes may race here)."""
        with contextlib.suppress(IntegrityError):  # another worker process registered it first
            self._register(model_id, info, path, reference)

    def _register(self, model_id: str, info: Any, path: str, reference: dict[str, Any] | None) -> None:
        with self.engine.begin() as conn:
            if conn.execute(select(models.c.model_id).where(models.c.model_id == model_id)).first() is None:
                conn.execute(
                    insert(models).values(
                        model_id=model_id,
                        version=info.version,
                        path=path,
                        classes=json.dumps(list(info.classes), ensure_ascii=False),
                        verdicts=json.dumps(dict(info.verdicts), ensure_ascii=False),
                        reference=None if reference is None else json.dumps(reference),
                        first_seen=time.time(),
                    )
                )

    def wants(self, verdict: str) -> bool:
        """Whether an image with this verdict is kept as a file."""
        return self.keep == "all" or (self.keep == "ng" and verdict == "NG")

    def record(self, rows: list[dict[str, Any]], kept: list[list[Kept]], attached: list[Any] | None = None) -> bool:
        """Keep each row's files and append the rows to the journal; False when that could not be done (the
        answer goes out anyway, saying so). ``attached``: what :attr:`complete` computes more columns of each row
        from, when the writer writes them (a row written from a killed service's journal has none of them)."""
        if self.journal.written - self._done > self.max_pending:
            self.failed += len(rows)
            return False
        try:
            named = []
            for row, files in zip(rows, kept, strict=True):
                names = [self._keep_file(f) for f in files]
                named.append({**row, "image_file": names[0] if names else None,
                              "overlay_file": names[1] if len(names) > 1 else None})  # fmt: skip
            if self.journal.append(named, attached):
                return True
        except OSError as exc:
            _log.error("record: cannot keep an answer (%s)", exc)
        self.failed += len(rows)
        return False

    def sync(self) -> int:
        """Write what was answered to the database now (the writer does every ``flush_s``); returns how many rows."""
        with self._flushing:
            taken = self.journal.take()
            if taken:
                rows = [row for batch, _, _ in taken for row in batch]
                attached = [a for batch, extra, _ in taken for a in (extra or [None] * len(batch))]
                with_extra = [k for k, a in enumerate(attached) if a is not None]
                done = _completed([rows[k] for k in with_extra], [attached[k] for k in with_extra], self.complete)
                for k, row in zip(with_extra, done, strict=True):
                    rows[k] = row
                self._ready += rows
                self._ready_end = taken[-1][2]
            if not self._ready:
                return 0
            try:
                with self.engine.begin() as conn:
                    self._insert.run(conn, self._ready)
                    set_offset(conn, self.journal.key, self._ready_end)
                written = len(self._ready)
            except (DataError, IntegrityError):  # a row the database refuses must not hold up the others
                written = self._one_by_one()
            self._ready, self._done = [], self._ready_end
            self.recorded += written
            if self._done >= ROTATE_BYTES:
                self._rotate()
            return written

    def _one_by_one(self) -> int:
        """Write the ready rows one transaction each, the journal's offset with the last one; a row refused is
        dropped, named in the log (the service checks what it records, so this is not expected)."""
        written = 0
        for k, row in enumerate(self._ready):
            last = k == len(self._ready) - 1
            try:
                with self.engine.begin() as conn:
                    self._insert.run(conn, [row])
                    if last:
                        set_offset(conn, self.journal.key, self._ready_end)
                written += 1
            except (DataError, IntegrityError) as exc:
                _log.error("record: the database refused a decision (part %r): %s", row.get("part_id"), exc)
                self.failed += 1
                if last:
                    with self.engine.begin() as conn:
                        set_offset(conn, self.journal.key, self._ready_end)
        return written

    def _rotate(self) -> None:
        """Go on in a new journal when this one is long and all of it is in the database; remove the old one."""
        with self.journal.lock:
            if self.journal.written != self._done or self.journal.waiting:  # answers appended meanwhile: later
                return
            path, fd = self.journal.renew()
            self._done = 0
        forget(self.engine, path)  # still locked: no other process takes it for an orphan meanwhile
        os.close(fd)

    def close(self, timeout: float = 30.0) -> None:
        """Write what is pending, then stop the writer (and remove the journal, all of it written). Once."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout)
        try:
            self.sync()
        except Exception as exc:  # the journal stays, for the next process that opens the record
            _log.error("record: %s; the answers wait in %s", exc, self.journal.path)
            self.journal.close()
        else:
            forget(self.engine, self.journal.path)
            self.journal.close()
        self.engine.dispose()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            try:
                self.sync()
                if self._failing:
                    _log.warning("record: writing to the database again")
                self._failing = False
            except Exception as exc:  # the rows wait in the journal; tried again at the next flush
                if not self._failing:
                    _log.error("record: cannot write to the database (%s); answers wait in the journal", exc)
                self._failing = True
            if time.monotonic() - self._last_prune > PRUNE_EVERY_S:
                self._last_prune = time.monotonic()
                try:
                    self.prune()
                except Exception as exc:
                    _log.error("record: retention not applied (%s)", exc)

    def _keep_file(self, kept: Kept) -> str:
        assert self.files is not None
        digest = hashlib.sha256(kept.data).hexdigest()
        name = f"{digest[:2]}/{digest}{kept.suffix}"
        if name in self._written:  # kept by this writer since the last prune: it is there
            return name
        path = os.path.join(self.files, digest[:2], f"{digest}{kept.suffix}")  # strings: this runs per image
        if not os.path.isfile(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{os.path.dirname(path)}/.{digest}{kept.suffix}.{threading.get_ident()}.tmp"
            with open(tmp, "wb") as fh:
                fh.write(kept.data)
            os.replace(tmp, path)  # a reader never sees half a file
        if len(self._written) >= WRITTEN_MEMORY:
            self._written.clear()
        self._written.add(name)
        return name

    def prune(self, now: float | None = None) -> int:
        """Apply the retention limits to the kept files; returns how many files were removed."""
        if self.files is None or not self.files.is_dir() or (self.retain_days is None and self.retain_gb is None):
            return 0
        now = time.time() if now is None else now
        found = sorted((p.stat().st_mtime, p.stat().st_size, p) for p in self.files.glob("*/*") if p.is_file())
        gone: list[Path] = []
        if self.retain_days is not None:
            gone = [p for mtime, _, p in found if mtime < now - self.retain_days * 86400]
        if self.retain_gb is not None:
            budget = self.retain_gb * 1024**3
            kept = [(size, p) for mtime, size, p in found if p not in set(gone)]
            total = sum(size for size, _ in kept)
            for size, p in kept:  # oldest first
                if total <= budget:
                    break
                gone.append(p)
                total -= size
        self._written.clear()  # prune removes files: look again
        names = [f"{p.parent.name}/{p.name}" for p in gone]
        with self.engine.begin() as conn:
            for column in (decisions.c.image_file, decisions.c.overlay_file):
                for start in range(0, len(names), 500):
                    conn.execute(update(decisions).where(column.in_(names[start : start + 500])).values({column: None}))
        for p in gone:
            p.unlink(missing_ok=True)
        return len(gone)

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(decisions)).scalar_one())
