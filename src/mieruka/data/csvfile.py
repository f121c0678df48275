"""The one reader of the CSV files people hand mieruka: manifests, review decisions (``train --corrections``), a
run's ``split.csv``; and of their other text files (YOLO and COCO box files): :func:`read_user_text`.

UTF-8 with or without a byte-order mark (as Excel's "CSV UTF-8" saves it); header names and values stripped of
surrounding blanks. Any other encoding, a malformed row or a missing column is a :class:`~mieruka.errors.DataError`
naming the file (and the line); a field may hold up to :data:`FIELD_LIMIT` characters, more than anything mieruka
itself writes.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

from mieruka.errors import DataError

__all__ = ["FIELD_LIMIT", "read_csv_rows", "read_user_text"]

FIELD_LIMIT = 1 << 24
"""Characters one field may hold (Python's csv module stops at 131,072 by default)."""


def read_csv_rows(
    path: str | os.PathLike[str], *, required: Sequence[str] = (), what: str = "CSV file", hint: str = ""
) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The header and the rows of a CSV file, each row with its line number.

    Args:
        path: The file.
        required: Columns it must have; a file without one is refused as not a ``what``.
        what: What the file should be, for the messages (``decisions file``, ``manifest``).
        hint: Said after a missing column (e.g. the header expected).
    """
    path = Path(path)
    if csv.field_size_limit() < FIELD_LIMIT:
        csv.field_size_limit(FIELD_LIMIT)
    line = 1
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = [h.strip() for h in next(reader, [])]
            missing = [c for c in required if c not in header]
            if missing:
                raise DataError(
                    f"{path}: not a {what}: missing {', '.join(missing)} (columns found: {', '.join(header) or 'none'})"
                    + (f"; {hint}" if hint else "")
                )
            rows = []
            for values in reader:
                line = reader.line_num
                if any(v.strip() for v in values):
                    rows.append((line, {k: (v or "").strip() for k, v in zip(header, values, strict=False) if k}))
    except FileNotFoundError:
        raise DataError(f"{path}: no such {what}") from None
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: not UTF-8 text (byte {exc.start} is {exc.object[exc.start : exc.start + 1]!r}); save it as UTF-8 "
            "(in Excel: 'CSV UTF-8')"
        ) from None
    except csv.Error as exc:
        raise DataError(f"{path}, line {line + 1}: malformed CSV ({exc})") from None
    return header, rows


def read_user_text(path: str | os.PathLike[str], what: str) -> str:
    """A text file people hand us, by the same rule as their CSV files: UTF-8 with or without a byte-order mark;
    anything else a :class:`~mieruka.errors.DataError` naming the file and ``what`` it should be."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: the {what} is not UTF-8 text (byte {exc.start} is {exc.object[exc.start : exc.start + 1]!r}); "
            "save it as UTF-8"
        ) from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read the {what} ({exc})") from None
