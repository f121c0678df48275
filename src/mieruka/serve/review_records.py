"""``mieruka review --records URL``: the line's hard cases reviewed in the browser, decisions to ``decisions.csv``.

The page lists the recorded decisions worth a look whose image the service kept: the ones judged NG, the ones
whose top probability is below ``below`` (a hesitant model) and the ones whose heatmap is far from the model's
reference (it looked where it rarely looks: :func:`review_items`), newest first, at most ``limit``, each with its
reasons. Beside each, its
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
from mieruka.errors import DataError, MierukaError
from mieruka.serve.limits import BodyLimit, add_error_handler
from mieruka.serve.review import MAX_BODY, add_decision_routes

__all__ = ["create_records_review_app", "review_items"]


def review_items(
    url: str, *, below: float = 0.6, far: float = 0.01, limit: int = 200, files: str | os.PathLike[str] | None = None
) -> tuple[list[dict[str, Any]], list[str], Path]:
    """The decisions worth a look with a kept image, each with its ``reasons``: flagged later as an escape or an
    overkill (:mod:`mieruka.record.flags`; these first), then, newest first, judged NG, top probability below
    ``below``, or a heatmap far from the model's reference (a peak position or spread whose two-sided tail
    probability in the reference is below ``far``: :func:`~mieruka.record.features.unusual_heatmap`; 0 turns that
    off); at most ``limit``. Also the classes of their models and the folder of the kept files (``files``, needed for
    a server database; else beside the SQLite record)."""
    from sqlalchemy import select

    from mieruka.record.flags import flags_of
    from mieruka.record.query import open_record
    from mieruka.record.schema import decisions, models
    from mieruka.record.store import files_folder

    engine = open_record(url)
    try:
        folder = files_folder(engine, files)
        columns = [decisions.c[c] for c in ("id", "time", "part_id", "filename", "class", "probability", "verdict",
                                            "ng_probability", "model_id", "peak_x", "peak_y", "spread",
                                            "image_file", "overlay_file")]  # fmt: skip
        kept = select(*columns).where(decisions.c.image_file.is_not(None)).order_by(decisions.c.id.desc())
        flagged = flags_of(engine)
        references: dict[str, dict[str, Any] | None] = {}
        items: list[dict[str, Any]] = []
        with engine.connect() as conn:
            # the decisions flagged later first (an escape found downstream is the hardest case), then the rest
            for q in (kept.where(decisions.c.id.in_(list(flagged))), kept.where(decisions.c.id.not_in(list(flagged)))):
                result = conn.execution_options(yield_per=1000).execute(q)
                for r in result:
                    if len(items) == limit:
                        break
                    row = dict(r._mapping)
                    if row["model_id"] not in references:
                        references[row["model_id"]] = _reference(engine, row["model_id"]) if far > 0 else None
                    row["reasons"] = _flag_reasons(flagged.get(row["id"], [])) + _reasons(
                        row, below, far, references[row["model_id"]]
                    )
                    if row["reasons"]:
                        items.append(row)
                result.close()
            classes: list[str] = []
            for (text,) in conn.execute(select(models.c.classes)):
                classes += [c for c in json.loads(text) if c not in classes]
    finally:
        engine.dispose()
    return items, classes, folder


def _reference(engine: Any, model_id: str) -> dict[str, Any] | None:
    """The model's drift reference (training's, else its first decisions), or None when it has none yet."""
    from mieruka.record.monitor import model_reference

    try:
        return model_reference(engine, model_id)[0]
    except MierukaError:
        return None


def _flag_reasons(found: list[Any]) -> list[str]:
    return [f"flagged later: {f.kind}" + (f" ({f.note})" if f.note else "") for f in found]


def _reasons(row: dict[str, Any], below: float, far: float, reference: dict[str, Any] | None) -> list[str]:
    from mieruka.record.features import unusual_heatmap

    reasons = []
    if row["verdict"] == "NG":
        reasons.append("NG")
    if row["probability"] < below:
        reasons.append(f"probability below {below:g}")
    if reference is not None:
        feature, p = unusual_heatmap(row, reference)
        if p < far:
            reasons.append(f"heatmap {feature.replace('_', ' ')} far from the reference (tail {p:.3f})")
    return reasons


def create_records_review_app(
    url: str,
    decisions_path: str | os.PathLike[str],
    *,
    below: float = 0.6,
    far: float = 0.01,
    limit: int = 200,
    files: str | os.PathLike[str] | None = None,
) -> FastAPI:
    """The review service of a record's hard cases (see the module docstring)."""
    items, classes, folder = review_items(url, below=below, far=far, limit=limit, files=files)
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
        return {"items": items, "classes": classes, "choices": list(DECISIONS), "below": below, "far": far}

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
