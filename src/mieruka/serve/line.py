"""The record's views of the service (``serve --record``): ``GET /v1/records`` (the newest decisions, filtered,
a page at a time), ``GET /v1/records/files/…`` (a kept image or overlay), ``POST /v1/records/flags`` (a decision
found wrong later, :mod:`mieruka.record.flags`) and ``GET /v1/drift`` (``monitor``'s report), which the page's
History and Drift views read."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from mieruka.errors import MierukaError
from mieruka.record import FLAG_KINDS

if TYPE_CHECKING:
    from collections.abc import Callable

    from mieruka.record.line import LineRecord

__all__ = ["FlagBody", "add_record_routes"]

_SHOWN = ("id", "time", "part_id", "filename", "class", "probability", "verdict", "ng_probability", "threshold",
          "model_id", "brightness", "contrast", "sharpness", "peak_x", "peak_y", "spread", "fragments",
          "image_file", "overlay_file")  # fmt: skip


class FlagBody(BaseModel):
    """``POST /v1/records/flags``: one decision (by ``id``, or the newest of ``part_id``) and what was found (the
    kind and the note are checked by :func:`mieruka.record.flags.add_flag`, a 422 when wrong)."""

    kind: str = Field(default="escape", description=f"one of {', '.join(FLAG_KINDS)}")
    id: int | None = None
    part_id: str | None = None
    note: str | None = None


def add_record_routes(app: FastAPI, record: LineRecord, check_key: Callable[..., None]) -> None:
    """The record's routes, behind the service's key."""
    from sqlalchemy import select

    from mieruka.record.schema import decisions
    from mieruka.record.store import kept_file

    engine = record.recorder.engine
    files = record.recorder.files

    @app.get("/v1/records", summary="the newest recorded decisions (History)", dependencies=[Depends(check_key)])
    def records(
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        before: Annotated[int | None, Query(description="only decisions older than this id (the next page)")] = None,
        verdict: Annotated[str | None, Query(pattern="^(OK|NG)$")] = None,
        cls: Annotated[str | None, Query(alias="class")] = None,
        part: Annotated[str | None, Query()] = None,
    ) -> dict[str, Any]:
        q = select(*(decisions.c[c] for c in _SHOWN)).order_by(decisions.c.id.desc()).limit(limit)
        for column, value in ((decisions.c.verdict, verdict), (decisions.c["class"], cls), (decisions.c.part_id, part)):
            if value is not None:
                q = q.where(column == value)
        if before is not None:
            q = q.where(decisions.c.id < before)
        record.recorder.sync()  # this process's newest answers first
        with engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(q)]
        return {
            "rows": rows,
            "next_before": rows[-1]["id"] if len(rows) == limit else None,
            "classes": list(record.info.classes),
        }

    @app.get("/v1/records/files/{folder}/{name}", summary="a kept image or overlay", dependencies=[Depends(check_key)])
    def kept(folder: str, name: str) -> FileResponse:
        path = kept_file(files, f"{folder}/{name}")
        if path is None:
            raise HTTPException(404, f"{folder}/{name}: no such kept file")
        return FileResponse(path, headers={"Cache-Control": "max-age=86400, immutable"})

    @app.post(
        "/v1/records/flags",
        summary="flag a decision found wrong later (an escape found downstream, an overkill)",
        dependencies=[Depends(check_key)],
    )
    def flag(body: FlagBody) -> dict[str, Any]:
        from mieruka.record.flags import NoSuchDecision, add_flag

        try:
            decision = add_flag(engine, kind=body.kind, decision=body.id, part=body.part_id, note=body.note)
        except NoSuchDecision as exc:
            raise HTTPException(404, str(exc)) from None
        except MierukaError as exc:
            raise HTTPException(422, str(exc)) from None
        return {"decision": decision, "kind": body.kind}

    @app.get(
        "/v1/drift", summary="drift of the newest decisions against the reference", dependencies=[Depends(check_key)]
    )
    def drift(
        window: Annotated[int, Query(ge=2, le=100_000)] = 500,
        reference: Annotated[int, Query(ge=2, le=100_000)] = 500,
    ) -> dict[str, Any]:
        from mieruka.record.monitor import monitor

        record.recorder.sync()
        try:
            report = monitor(engine, model=record.model_id, window=window, reference=reference)
        except MierukaError as exc:
            raise HTTPException(409, str(exc)) from None
        return report.as_json()
