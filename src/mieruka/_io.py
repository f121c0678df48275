"""Atomic file writes: a reader (or a kill at any moment) never sees a half-written file. And the reading back of a
versioned JSON result (``summary.json``, ``metrics.json``)."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from mieruka.errors import DataError

__all__ = ["atomic_write", "check_schema", "read_json_as", "write_csv", "write_json"]

T = TypeVar("T")


def check_schema(data: dict[str, Any], name: str, known: int) -> int:
    """The ``schema_version`` of a result file's content (1 when absent); one newer than ``known`` is refused."""
    version = int(data.get("schema_version", 1))
    if version > known:
        raise DataError(f"{name} has schema version {version}; this mieruka reads up to {known}: upgrade it")
    return version


def read_json_as(path: str | os.PathLike[str], parse: Callable[[dict[str, Any]], T], what: str) -> T:
    """``parse`` of the JSON file at ``path``; a missing, damaged or foreign file is a :class:`DataError` naming it
    as not ``what``."""
    try:
        return parse(json.loads(Path(path).read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not {what} this mieruka can read ({e})") from e


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file in the target folder, then rename it over ``path``.

    The rename is atomic on POSIX and Windows file systems, so ``path`` holds either the old or the new content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp creates 0600; give the file the permissions open() would
    try:
        write(tmp_path)
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as UTF-8 JSON (non-ASCII kept readable: 欠陥A stays 欠陥A), atomically."""
    text = json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_csv(path: str | os.PathLike[str], header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """Write a UTF-8 CSV file atomically."""

    def _write(p: Path) -> None:
        with open(p, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows(rows)

    return atomic_write(path, _write)
