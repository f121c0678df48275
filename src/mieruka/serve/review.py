"""``mieruka review``: an audit's report served with a decision per review item, kept in ``decisions.csv``.

``GET /`` is the audit's own report; served over HTTP it shows, beside every review item, the decisions of
:data:`mieruka.audit.decisions.DECISIONS` (with a class for a relabel and an optional comment).
``POST /api/decisions`` (JSON ``image``, ``decision``, optional ``label`` and ``comment``) appends one to
``AUDIT_DIR/decisions.csv``; ``GET /api/decisions`` returns the current ones (the last per image). Bodies over
:data:`MAX_BODY` and comments over :data:`~mieruka.audit.decisions.MAX_COMMENT` get a JSON 413, so nothing the
service accepts can break a later read of the file. The panels, the
thumbnails and the audit's files are served from the folder as they are.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from mieruka import __version__
from mieruka.audit.decisions import DECISIONS, MAX_COMMENT, Decision, DecisionLog
from mieruka.audit.report import AUDIT_FILES
from mieruka.errors import DataError
from mieruka.serve.limits import BodyLimit, add_error_handler

__all__ = ["MAX_BODY", "add_decision_routes", "create_review_app", "serve_review"]

MAX_BODY = 64 * 1024
"""Bytes a request body may hold (a decision is a few hundred); larger ones get a JSON 413."""

_FILES = tuple(name for name in AUDIT_FILES if "/" not in name)
"""The audit's own files, served beside the report (the report folder's files come from the mounts)."""


class DecisionIn(BaseModel):
    """A decision as the page sends it."""

    image: str = Field(description="the image as the audit names it (review.csv's image column)")
    decision: str = Field(description=f"one of {', '.join(DECISIONS)}")
    label: str | None = Field(default=None, description="the new class (relabel only)")
    comment: str = Field(default="", description="free text")


def _audited_images(audit: Path) -> set[str]:
    with open(audit / "audit.csv", newline="", encoding="utf-8") as fh:
        return {row["image"] for row in csv.DictReader(fh)}


def create_review_app(audit_dir: str | os.PathLike[str]) -> FastAPI:
    """The review service of one audit folder (with its report)."""
    audit = Path(audit_dir)
    needed = [audit / "report" / "index.html", audit / "report" / "panels.json", audit / "audit.csv"]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise DataError(
            f"{audit}: not an audit folder with a report (missing {', '.join(missing)}); run mieruka audit first"
        )
    classes = json.loads((audit / "report" / "panels.json").read_text(encoding="utf-8"))["classes"]
    images = _audited_images(audit)
    log = DecisionLog(audit / "decisions.csv", classes)
    log.current()  # a damaged decisions file stops the start, with its line, not the first request
    app = FastAPI(title="mieruka review", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, limit=MAX_BODY, message=f"the request is larger than {MAX_BODY // 1024} KiB")
    add_error_handler(app)

    add_decision_routes(app, log, classes, images, "this audit")

    @app.get("/")
    def page() -> FileResponse:
        return FileResponse(audit / "report" / "index.html", media_type="text/html")

    for name in _FILES:
        app.add_api_route(f"/{name}", _file_route(audit / name), methods=["GET"])
    app.mount("/report", StaticFiles(directory=audit / "report"), name="report")
    app.mount("/", StaticFiles(directory=audit / "report"), name="panels")
    return app


def add_decision_routes(app: FastAPI, log: DecisionLog, classes: list[str], images: set[str], of: str) -> None:
    """``GET /api/decisions`` (the current ones) and ``POST /api/decisions`` (one more, for one of ``images``; ``of``
    names what they are images of in the 404), shared by both review services."""

    @app.get("/api/decisions")
    def current() -> dict[str, Any]:
        return {"decisions": [asdict(d) for d in log.current()], "choices": list(DECISIONS), "classes": classes}

    @app.post("/api/decisions")
    def decide(body: DecisionIn) -> dict[str, Any]:
        if len(body.comment) > MAX_COMMENT:
            raise HTTPException(413, f"the comment has {len(body.comment)} characters; at most {MAX_COMMENT}")
        if body.image not in images:
            raise HTTPException(404, f"{body.image}: not an image of {of}")
        try:
            saved = log.add(Decision(body.image, body.decision, body.label or "", body.comment))
        except DataError as exc:
            raise HTTPException(422, str(exc)) from None
        return {"saved": asdict(saved)}


def _file_route(path: Path) -> Any:
    def send() -> FileResponse:
        if not path.is_file():
            raise HTTPException(404, f"{path.name}: not written yet")
        return FileResponse(path)

    return send


def serve_review(audit_dir: str | os.PathLike[str], *, host: str = "127.0.0.1", port: int = 8010) -> None:
    """Serve :func:`create_review_app` until interrupted."""
    import uvicorn

    from mieruka.serve import is_loopback

    app = create_review_app(audit_dir)
    if not is_loopback(host):
        print(
            f"warning: listening on {host}: anyone who can reach this port can read the audit and write decisions",
            file=sys.stderr,
        )
    print(f"mieruka review: http://{host}:{port}/ ; decisions go to {Path(audit_dir) / 'decisions.csv'}")
    uvicorn.run(app, host=host, port=port, log_level="warning")
