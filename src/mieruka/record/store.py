"""The service's record: every answered image kept, without holding the answer for long.

A request hands its rows (and the files to keep) to :meth:`Recorder.record` and waits for the write: one thread
takes what the requests queued (a bounded queue), writes the files, inserts every row queued meanwhile in one
transaction and commits (a group commit), then releases the requests. So an answer is sent only once its record
is committed (a killed service loses no acknowledged answer), and a busy service pays one commit per batch, not
per image. When the queue is full or the write takes longer than ``wait_s``, the answer goes out anyway and says
``"recorded": false`` (:attr:`Recorder.failed` counts them).

Files are content-addressed (``files/ab/abcdef….png``, the SHA-256 of their bytes): the same image sent twice is
kept once. ``keep``: ``all``, ``ng`` (the images judged NG) or ``none``. Retention applies to the files (the rows,
small, stay for traceability): files older than ``retain_days`` are removed, then the oldest ones until the
folder holds at most ``retain_gb``; their rows keep the decision and lose the file name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, func, insert, select, update

from mieruka.errors import MierukaError
from mieruka.record.schema import decisions, migrate, models, open_engine

__all__ = ["KEEP_CHOICES", "Kept", "Recorder", "files_folder", "kept_file"]

KEEP_CHOICES = ("all", "ng", "none")
WRITTEN_MEMORY = 100_000
"""The most kept-file names the writer remembers as written (then it starts again from none)."""
PRUNE_EVERY_S = 300.0
"""How often the writer applies the retention limits (and once when it starts)."""


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
            "--record-files DIR, the folder of its kept images (serve --record-files DIR)"
        )
    path = Path(database)
    return path.with_name(f"{path.stem}-files")


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
        files: Folder for the files (default: beside a SQLite database).
        retain_days, retain_gb: Retention limits of the files (None: none).
        queue_size: Most rows waiting to be written.
        wait_s: Longest a request waits for its record.
    """

    def __init__(
        self,
        url: str,
        *,
        keep: str = "ng",
        files: str | os.PathLike[str] | None = None,
        retention: tuple[float | None, float | None] = (None, None),
        queue_size: int = 4096,
        wait_s: float = 5.0,
    ):
        if keep not in KEEP_CHOICES:
            raise MierukaError(f"--keep {keep}: choose one of {', '.join(KEEP_CHOICES)}")
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine = open_engine(url)
        migrate(self.engine)
        self.url, self.keep, self.wait_s = url, keep, wait_s
        self.files = files_folder(self.engine, files) if keep != "none" else None
        self.retain_days, self.retain_gb = retention
        self.queue: queue.Queue[tuple[list[dict[str, Any]], list[list[Kept]], Future[None]] | None] = queue.Queue(
            queue_size
        )
        self.failed = 0
        self.recorded = 0
        self._last_prune = 0.0
        self._conn: Connection | None = None
        self._insert = _Insert(self.engine)  # built once: the writer runs it for every batch
        self._written: set[str] = set()
        """Names of the files this writer kept (or found) since the last prune, so that an image sent again is
        not looked up on disk again."""
        self._thread = threading.Thread(target=self._run, name="mieruka-recorder", daemon=True)
        self._thread.start()

    def register_model(self, model_id: str, info: Any, path: str, reference: dict[str, Any] | None) -> None:
        """Describe the model that answers (once per model id; ``serve --workers N`` processes may race here)."""
        from sqlalchemy.exc import IntegrityError

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

    def record(self, rows: list[dict[str, Any]], kept: list[list[Kept]]) -> bool:
        """Queue ``rows`` (and each row's files) and wait for their commit; False when it did not happen in time."""
        done: Future[None] = Future()
        try:
            self.queue.put((rows, kept, done), timeout=self.wait_s)
            done.result(timeout=self.wait_s)
        except Exception:  # a full queue, a slow or failed write: the answer goes out, saying so
            self.failed += len(rows)
            return False
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then stop the writer."""
        self.queue.put(None)
        self._thread.join(timeout)
        self._drop_connection()
        self.engine.dispose()

    def _run(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < 256:
                try:
                    more = self.queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self.queue.put(None)  # stop after this batch
                    break
                batch.append(more)
            self._write(batch)

    def _write(self, batch: Sequence[tuple[list[dict[str, Any]], list[list[Kept]], Future[None]]]) -> None:
        try:
            rows = []
            for request_rows, kept, _ in batch:
                for row, files in zip(request_rows, kept, strict=True):
                    names = [self._keep_file(f) for f in files]
                    rows.append({**row, "image_file": names[0] if names else None,
                                 "overlay_file": names[1] if len(names) > 1 else None})  # fmt: skip
            if self._conn is None:  # the writer's own connection, kept open (no pool checkout per batch)
                self._conn = self.engine.connect()
            with self._conn.begin():
                self._insert.run(self._conn, rows)
            self.recorded += len(rows)
        except Exception as exc:
            self._drop_connection()  # a broken one is opened anew for the next batch
            for _, _, done in batch:
                done.set_exception(exc)
            return
        for _, _, done in batch:
            done.set_result(None)
        if time.monotonic() - self._last_prune > PRUNE_EVERY_S:
            self._last_prune = time.monotonic()
            self.prune()

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

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
