"""The HTTP service: ``POST /v1/predict`` (class, probabilities, OK/NG verdict and the heatmap overlay),
``GET /v1/model``, ``GET /healthz``, and a web page at ``/``.

Bad input never reaches the model: a body over the size limit gets 413, bytes that are not an image 415, a corrupt
image 422 and an image with more pixels than allowed (a decompression bomb) 413, each with a message naming the file.
The request path keeps no mutable state between requests: the runtime is read-only, every array is local.
"""

from __future__ import annotations

import base64
import hmac
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from importlib import resources
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, File, Form, Header, HTTPException, Query, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.security import APIKeyHeader
from fastapi_offline import FastAPIOffline

from mieruka import __version__
from mieruka.data.images import MAX_PIXELS, ImageTooLarge, NotAnImage, decode_image
from mieruka.errors import DataError
from mieruka.explain.render import colorize, picture_png
from mieruka.fonts import cjk_font_path
from mieruka.metrics import gate, ng_probability
from mieruka.runtime import Runtime, prepare, run_with_tta
from mieruka.serve.limits import BodyLimit, add_error_handler

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from mieruka.record.line import LineRecord

__all__ = ["API_KEY_HEADER", "create_app"]

API_KEY_HEADER = "X-API-Key"
PART_ID_MAX = 200
"""The longest part id a request may give (the record's ``part_id`` column); a longer one is refused (422)."""
"""The header that carries the API key when the service is started with one."""

_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="required when the service has a key")


def create_app(
    runtime: Runtime,
    *,
    api_key: str | None = None,
    max_upload_mb: float = 32.0,
    max_images: int = 16,
    max_pixels: int = MAX_PIXELS,
    overlay_max_side: int = 512,
    record: LineRecord | None = None,
) -> FastAPI:
    """Build the service around a loaded model.

    Args:
        runtime: An :class:`~mieruka.runtime.OnnxModel` or :class:`~mieruka.model_file.TorchModel`.
        api_key: When given, ``/v1/*`` requires it in the ``X-API-Key`` header (the page and ``/healthz`` stay open).
        max_upload_mb: Largest request body; larger ones get 413.
        max_images: Most images in one request.
        max_pixels: Largest image (width × height) decoded; larger ones are refused as decompression bombs (413).
        overlay_max_side: The overlay PNG is drawn at the image's size, shrunk to at most this many pixels a side.
        record: Where every answered image is recorded (:mod:`mieruka.record`); None: nothing is kept.
    """
    colorize(np.zeros((1, 1), np.float32))  # load the color map now, not in the first request
    broken = _probe(runtime)
    app = FastAPIOffline(  # /docs and /redoc from files bundled with the package: no CDN, works offline
        lifespan=partial(_lifespan, record),
        title="mieruka",
        version=__version__,
        description="Explainable visual inspection: class, OK/NG verdict and a Grad-CAM-family heatmap per image.",
    )
    too_large = f"the upload is larger than the limit of {max_upload_mb:g} MiB"
    app.add_middleware(BodyLimit, limit=int(max_upload_mb * 1024 * 1024), message=too_large)

    def check_key(given: Annotated[str | None, Depends(_key_header)]) -> None:
        if api_key is not None and not hmac.compare_digest((given or "").encode(), api_key.encode()):
            raise HTTPException(401, f"missing or wrong API key (send it in the {API_KEY_HEADER} header)")

    add_error_handler(app)
    limits = {"max_upload_mb": max_upload_mb, "max_images": max_images, "max_pixels": max_pixels}
    model_description = _describe(runtime, limits, api_key is not None)
    if record is not None:
        from mieruka.serve.line import add_record_routes

        model_description["record"] = {"model_id": record.model_id, "keep": record.recorder.keep}
        add_record_routes(app, record, check_key)
    _add_page(app)
    judge = _Judge(runtime, max_images, max_pixels, overlay_max_side, record, broken)

    @app.get("/healthz", summary="liveness: ok when the model answers (503 and the reason when it cannot)")
    def healthz() -> JSONResponse:
        if broken is not None:
            return JSONResponse({"status": "error", "detail": broken}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/v1/model", summary="what the model is", dependencies=[Depends(check_key)])
    def model() -> dict[str, Any]:
        return model_description

    @app.post("/v1/predict", summary="classify and explain images", dependencies=[Depends(check_key)])
    def predict(
        files: Annotated[list[UploadFile], File(description="one or several images (JPEG, PNG, BMP, TIFF, WebP)")],
        pictures: Annotated[_Pictures, Depends(_pictures)],
        threshold: Annotated[
            float | None, Query(ge=0.0, le=1.0, description="NG-probability threshold (default: the model's)")
        ] = None,
        part_header: Annotated[
            str | None,
            Header(alias="X-Part-Id", max_length=PART_ID_MAX, description="the part's id, kept in the record"),
        ] = None,
        part_id: Annotated[
            str | None, Form(max_length=PART_ID_MAX, description="the part's id (instead of the X-Part-Id header)")
        ] = None,
    ) -> dict[str, Any]:
        return judge.answer(files, pictures, threshold, part_header or part_id)

    return app


@asynccontextmanager
async def _lifespan(record: LineRecord | None, _app: FastAPI) -> AsyncIterator[None]:
    """When the service stops, its record writes what is pending (with its features) and removes its journal."""
    yield
    if record is not None:
        record.recorder.close()


@dataclass(frozen=True)
class _Judge:
    """What ``POST /v1/predict`` does with a request's images (the route only reads the request)."""

    runtime: Runtime
    max_images: int
    max_pixels: int
    overlay_max_side: int
    record: LineRecord | None
    broken: str | None

    def answer(
        self, files: list[UploadFile], pictures: _Pictures, threshold: float | None, part: str | None
    ) -> dict[str, Any]:
        start = time.perf_counter()
        info = self.runtime.info
        if self.broken is not None:
            raise HTTPException(503, f"the model cannot answer: {self.broken}")
        if len(files) > self.max_images:
            raise HTTPException(413, f"{len(files)} images in one request; the limit is {self.max_images}")
        raws = [f.file.read() for f in files]
        images = [_decode(raw, f.filename, self.max_pixels, info.bit_depth) for raw, f in zip(raws, files, strict=True)]
        probs, heat = run_with_tta(self.runtime, prepare(images, info), info.tta)
        t = threshold if threshold is not None else info.decision_threshold
        p_ng = ng_probability(probs, info.ng_classes)
        rejected = gate(probs, info.ng_classes, t)
        results, drawn = [], []
        for i, (f, image) in enumerate(zip(files, images, strict=True)):
            item = _result(info.classes, f.filename, image, probs[i], float(p_ng[i]), t, bool(rejected[i]))
            pngs = pictures.draw(image, None if heat is None else heat[i], self.overlay_max_side)
            results.append({**item, **{k: base64.b64encode(v).decode("ascii") for k, v in pngs.items()}})
            drawn.append(pngs)
        answer: dict[str, Any] = {"method": self.runtime.method, "results": results}
        if self.record is not None:
            from mieruka.record.line import Answered

            answered = [
                Answered(
                    f.filename,
                    raw,
                    image,
                    probs[i],
                    float(p_ng[i]),
                    t,
                    r["verdict"],
                    None if heat is None else heat[i],
                    pngs.get("overlay_png"),  # already drawn for the answer
                )
                for i, (f, raw, image, r, pngs) in enumerate(zip(files, raws, images, results, drawn, strict=True))
            ]
            answer["recorded"] = self.record.record(answered, part)
        answer["elapsed_ms"] = round((time.perf_counter() - start) * 1000, 2)
        return answer


@dataclass(frozen=True)
class _Pictures:
    """Which pictures an answer carries: the overlay (default), the heatmap alone, the input as PNG."""

    overlay: bool
    heatmap: bool
    preview: bool

    def draw(self, image: np.ndarray, heat: np.ndarray | None, max_side: int) -> dict[str, bytes]:
        """The asked pictures as PNG bytes (the answer carries them as base64)."""
        out = {}
        if self.overlay and heat is not None:
            out["overlay_png"] = picture_png(image, heat, max_side, 0.5)
        if self.heatmap and heat is not None:
            out["heatmap_png"] = picture_png(image, heat, max_side, 1.0)
        if self.preview:
            out["input_png"] = picture_png(image, None, max_side, 0.0)
        return out


def _pictures(
    overlay: Annotated[bool, Query(description="include the overlay PNG (base64)")] = True,
    heatmap: Annotated[bool, Query(description="include the heatmap alone, jet colours, as PNG (base64)")] = False,
    preview: Annotated[
        bool, Query(description="include the input as PNG (base64), e.g. for TIFF, which browsers cannot show")
    ] = False,
) -> _Pictures:
    return _Pictures(overlay, heatmap, preview)


def _result(
    classes: tuple[str, ...],
    filename: str | None,
    image: np.ndarray,
    probs: np.ndarray,
    p_ng: float,
    t: float,
    rejected: bool,
) -> dict[str, Any]:
    """One image's answer without its overlay."""
    top = int(probs.argmax())
    return {
        "filename": filename,
        "width": image.shape[1],
        "height": image.shape[0],
        "class": classes[top],
        "class_index": top,
        "probability": float(probs[top]),
        "verdict": "NG" if rejected else "OK",
        "ng_probability": p_ng,
        "threshold": t,
        "probabilities": {c: float(p) for c, p in zip(classes, probs, strict=True)},
    }


def _describe(runtime: Runtime, limits: dict[str, Any], auth: bool) -> dict[str, Any]:
    """The answer of ``GET /v1/model``."""
    info = runtime.info
    return {
        "arch": info.arch,
        "classes": list(info.classes),
        "verdicts": info.verdicts,
        "image_size": info.image_size,
        "ng_threshold": info.decision_threshold,
        "tta": info.tta,
        "method": runtime.method,
        "heatmap": runtime.method is not None,
        "backend": runtime.backend,
        "provider": runtime.provider,
        "version": info.version,
        "limits": limits,
        "auth": auth,
    }


def _probe(runtime: Runtime) -> str | None:
    """Run the model once on a blank image: None when it answers, else why it cannot (then ``/healthz`` says so)."""
    size = runtime.info.image_size
    try:
        probs, _ = runtime.run(prepare([np.zeros((size, size, 3), np.uint8)], runtime.info))
        if probs.shape != (1, len(runtime.info.classes)) or not np.isfinite(probs).all():
            return f"the model returned {probs.shape} probabilities for {len(runtime.info.classes)} classes"
    except Exception as exc:  # any failure here is reported by /healthz instead of by every request
        return f"{type(exc).__name__}: {exc}"
    return None


def _add_page(app: FastAPI) -> None:
    """The web page and the font it uses for Japanese text."""

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        html = resources.files("mieruka.serve").joinpath("static/index.html").read_text(encoding="utf-8")
        return HTMLResponse(html, headers={"Cache-Control": "no-cache"})

    @app.get("/static/cjk-font.ttf", include_in_schema=False)
    def font() -> FileResponse:
        path = cjk_font_path()
        if path is None:
            raise HTTPException(404, "no bundled CJK font")
        return FileResponse(path, media_type="font/ttf", headers={"Cache-Control": "max-age=86400"})


def _decode(raw: bytes, filename: str | None, max_pixels: int, bit_depth: int | None) -> np.ndarray:
    name = filename or "upload"
    try:
        return decode_image(raw, name, max_pixels=max_pixels, bit_depth=bit_depth)
    except NotAnImage as exc:
        raise HTTPException(415, str(exc)) from None
    except ImageTooLarge as exc:
        raise HTTPException(413, str(exc)) from None
    except DataError as exc:
        raise HTTPException(422, str(exc)) from None
