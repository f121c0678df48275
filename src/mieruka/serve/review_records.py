"""``mieruka review --records URL``: the line's hard cases reviewed in the browser, decisions to ``decisions.csv``.

The page lists the recorded decisions worth a look whose image the service kept: the ones judged NG and the ones
whose top probability is below ``below`` (a hesitant model), newest first, at most ``limit``. Beside each, its
input and heatmap, and the decisions of :data:`~mieruka.audit.decisions.DECISIONS`. A decision names the image as
``record:ID`` and is appended to the same ``decisions.csv`` format the audit's review writes; ``mieruka train …
--corrections decisions.csv --add-records URL`` then trains on them.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse

from mieruka import __version__
from mieruka.audit.decisions import DECISIONS, DecisionLog
from mieruka.errors import DataError
from mieruka.serve.limits import BodyLimit, add_error_handler
from mieruka.serve.review import MAX_BODY, add_decision_routes

__all__ = ["create_records_review_app", "review_items"]


def review_items(url: str, *, below: float = 0.6, limit: int = 200) -> tuple[list[dict[str, Any]], list[str], Path]:
    """The decisions worth a look (NG, or top probability below ``below``) with a kept image, newest first; the
    classes of their models; the folder of the kept files."""
    from sqlalchemy import or_, select

    from mieruka.record.query import open_record
    from mieruka.record.schema import decisions, models
    from mieruka.record.store import files_folder

    engine = open_record(url)
    try:
        folder = files_folder(engine, None)
        columns = [decisions.c[c] for c in ("id", "time", "part_id", "filename", "class", "probability", "verdict",
                                            "ng_probability", "image_file", "overlay_file")]  # fmt: skip
        q = (
            select(*columns)
            .where(decisions.c.image_file.is_not(None))
            .where(or_(decisions.c.verdict == "NG", decisions.c.probability < below))
            .order_by(decisions.c.id.desc())
            .limit(limit)
        )
        with engine.connect() as conn:
            items = [dict(r._mapping) for r in conn.execute(q)]
            classes: list[str] = []
            for (text,) in conn.execute(select(models.c.classes)):
                classes += [c for c in json.loads(text) if c not in classes]
    finally:
        engine.dispose()
    return items, classes, folder


def create_records_review_app(
    url: str, decisions_path: str | os.PathLike[str], *, below: float = 0.6, limit: int = 200
) -> FastAPI:
    """The review service of a record's hard cases (see the module docstring)."""
    items, classes, folder = review_items(url, below=below, limit=limit)
    if not classes:
        raise DataError(f"{url}: the record holds no model yet (serve --record {url} writes one)")
    log = DecisionLog(Path(decisions_path), classes)
    log.current()  # a damaged decisions file stops the start, with its line
    known = {f"record:{it['id']}" for it in items}
    app = FastAPI(title="mieruka review", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, limit=MAX_BODY, message=f"the request is larger than {MAX_BODY // 1024} KiB")
    add_error_handler(app)

    @app.get("/api/items")
    def listed() -> dict[str, Any]:
        return {"items": items, "classes": classes, "choices": list(DECISIONS), "below": below}

    add_decision_routes(app, log, classes, known, "this review")

    @app.get("/files/{prefix}/{name}")
    def kept(prefix: str, name: str) -> FileResponse:
        from mieruka.record.store import kept_file

        path = kept_file(folder, f"{prefix}/{name}")
        if path is None:
            raise HTTPException(404, f"{prefix}/{name}: no such kept file")
        return FileResponse(path)

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        html = resources.files("mieruka.serve").joinpath("static/review_records.html").read_text(encoding="utf-8")
        return HTMLResponse(html)

    return app
