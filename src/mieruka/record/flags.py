"""What the line learns of a decision later: a part the service passed that failed downstream (an ``escape``) or one
it rejected that was good (an ``overkill``). A flag names a decision by its id, or by the part id (then the newest
decision of that part); ``mieruka review --records`` lists the flagged escapes and overkills first among the hard
cases, ``mieruka flag`` and ``POST /v1/records/flags`` add them."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Engine, insert, select

from mieruka.errors import MierukaError
from mieruka.record import FLAG_KINDS
from mieruka.record.schema import decisions, flags

__all__ = ["Flag", "NoSuchDecision", "add_flag", "flags_of"]

NOTE_CHARS = 2000
"""The longest note a flag keeps."""


class NoSuchDecision(MierukaError):
    """The decision a flag names is not in the record."""


@dataclass(frozen=True)
class Flag:
    """One flag, as :func:`flags_of` returns it."""

    decision_id: int
    kind: str
    note: str | None
    time: float


def add_flag(
    engine: Engine, *, kind: str, decision: int | None = None, part: str | None = None, note: str | None = None
) -> int:
    """Flag a decision (by ``decision`` id, or the newest decision of ``part``); returns the decision's id."""
    if kind not in FLAG_KINDS:
        raise MierukaError(f"flag kind {kind!r}: choose one of {', '.join(FLAG_KINDS)}")
    if (decision is None) == (part is None):
        raise MierukaError("flag one decision: give its id or its part id (one of the two)")
    if note is not None and len(note) > NOTE_CHARS:
        raise MierukaError(f"the note has {len(note)} characters; at most {NOTE_CHARS}")
    q = select(decisions.c.id)
    q = q.where(decisions.c.id == decision) if decision is not None else q.where(decisions.c.part_id == part)
    with engine.begin() as conn:
        found = conn.execute(q.order_by(decisions.c.id.desc()).limit(1)).first()
        if found is None:
            what = f"decision {decision}" if decision is not None else f"part {part!r}"
            raise NoSuchDecision(f"{what}: no such decision in the record")
        conn.execute(insert(flags).values(decision_id=int(found[0]), kind=kind, note=note, time=time.time()))
    return int(found[0])


def flags_of(engine: Engine) -> dict[int, list[Flag]]:
    """Every flag, by decision id, oldest first."""
    q = select(flags.c.decision_id, flags.c.kind, flags.c.note, flags.c.time).order_by(flags.c.id)
    out: dict[int, list[Flag]] = {}
    with engine.connect() as conn:
        for d, k, n, t in conn.execute(q):
            out.setdefault(int(d), []).append(Flag(int(d), str(k), n, float(t)))
    return out
