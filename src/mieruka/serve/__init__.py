"""``mieruka serve``: the model behind an HTTP API and a web page (FastAPI on uvicorn)."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mieruka.errors import MierukaError
from mieruka.serve.app import API_KEY_HEADER, create_app

if TYPE_CHECKING:
    from fastapi import FastAPI

    from mieruka.runtime import Runtime

__all__ = ["API_KEY_HEADER", "ServeOptions", "app_from_environment", "create_app", "is_loopback", "serve"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_SETTINGS_ENV = "MIERUKA_SERVE_SETTINGS"
"""Where ``serve`` leaves its settings for the worker processes that uvicorn starts when ``workers > 1``."""


def _build(settings: dict[str, Any]) -> tuple[FastAPI, Runtime]:
    """Load the model and build the app (in the serving process itself, or in each worker process)."""
    from mieruka.model_file import load_runtime

    runtime = load_runtime(
        settings["model"],
        method=settings["method"],
        device=settings["device"],
        threads=settings["threads"],
        provider=settings.get("provider", "auto"),
    )
    if runtime.backend in ("onnxruntime", "openvino"):
        import torch

        # ONNX Runtime does the heavy work with its own threads; the small tensor step around it (normalization)
        # runs in the request threads, where more torch threads would only contend.
        torch.set_num_threads(1)
    app = create_app(
        runtime,
        api_key=settings["api_key"],
        max_upload_mb=settings["max_upload_mb"],
        max_images=settings["max_images"],
        record=_record(settings, runtime),
    )
    return app, runtime


def _record(settings: dict[str, Any], runtime: Runtime) -> Any:
    """The service's record (:mod:`mieruka.record`), when ``--record`` asks for one."""
    if settings.get("record") is None:
        return None
    try:
        from mieruka.record.line import LineRecord
        from mieruka.record.store import Recorder
    except ImportError as exc:
        raise MierukaError(f"--record needs SQLAlchemy: pip install 'mieruka[record]' ({exc})") from None
    recorder = Recorder(
        settings["record"],
        keep=settings["keep"],
        files=settings["record_files"],
        retention=(settings["retain_days"], settings["retain_gb"]),
    )
    return LineRecord(recorder, settings["model"], runtime.info, runtime.method)


def app_from_environment() -> FastAPI:
    """The app of one worker process: uvicorn calls this factory in each worker that ``serve`` asked for."""
    raw = os.environ.get(_SETTINGS_ENV)
    if raw is None:
        raise RuntimeError(f"{_SETTINGS_ENV} is not set: start workers with 'mieruka serve --workers N'")
    return _build(json.loads(raw))[0]


@dataclass(frozen=True)
class ServeOptions:
    """How ``serve`` runs (the command's options; :func:`serve` takes them as keywords).

    Attributes:
        host: The address to listen on (a non-loopback one without ``api_key`` is warned about).
        port: The port.
        api_key: The key clients send in the ``X-API-Key`` header (None: no key asked).
        method: The heatmap method of a ``.safetensors`` model (exported files carry their own).
        device: Where a ``.safetensors`` model runs.
        max_upload_mb: The largest request body.
        max_images: The most images one request may send.
        threads: ONNX Runtime threads per call (default: its own choice; with ``workers`` > 1, cores // workers).
        workers: Processes, each with its own copy of the model, sharing the port.
        log_level: uvicorn's log level.
        provider: ONNX Runtime's execution provider for an ``.onnx`` model (:mod:`mieruka.deploy.providers`).
        record: Record every answered image to this URL (``sqlite:///PATH`` or ``postgresql://…``; None: don't).
        keep: Which images the record keeps as files (``all``, ``ng``, ``none``).
        record_files: Folder of the kept files (default: beside the SQLite file).
        retain_days, retain_gb: Retention limits of the kept files.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    method: str | None = None
    device: str = "cpu"
    max_upload_mb: float = 32.0
    max_images: int = 16
    threads: int | None = None
    workers: int = 1
    log_level: str = "info"
    provider: str = "auto"
    record: str | None = None
    keep: str = "ng"
    record_files: str | None = None
    retain_days: float | None = None
    retain_gb: float | None = None

    def check(self) -> None:
        """Refuse out-of-range settings by their option names, before anything is loaded."""
        problems = [
            (1 <= self.port <= 65535, f"--port {self.port}: choose a port from 1 to 65535"),
            (self.workers >= 1, f"--workers {self.workers}: give at least 1"),
            (self.max_upload_mb > 0, f"--max-upload-mb {self.max_upload_mb:g}: give a positive size"),
            (self.max_images >= 1, f"--max-images {self.max_images}: give at least 1"),
            (self.threads is None or self.threads >= 1, f"--threads {self.threads}: give at least 1"),
        ]
        for ok, message in problems:
            if not ok:
                raise MierukaError(message)


def serve(model: str | os.PathLike[str], **options: Any) -> None:
    """Load ``model`` (``.onnx``, OpenVINO ``.xml`` or ``.safetensors``) and serve it until interrupted;
    ``options``: :class:`ServeOptions`' fields.

    With ``workers`` > 1, uvicorn runs that many processes, each with its own copy of the model, which share the
    port: on a CPU box one per core serves concurrent clients faster than one process does (its request threads
    contend for Python's lock). Each worker then gets ``cores // workers`` ONNX Runtime threads unless ``threads``
    says otherwise.
    """
    import uvicorn

    o = ServeOptions(**options)
    o.check()
    host, port, workers, threads = o.host, o.port, o.workers, o.threads
    if workers > 1 and threads is None:
        threads = max(1, (os.cpu_count() or 1) // workers)
    settings = {
        "model": str(model),
        "method": o.method,
        "device": o.device,
        "threads": threads,
        "provider": o.provider,
        "api_key": o.api_key,
        "max_upload_mb": o.max_upload_mb,
        "max_images": o.max_images,
        "record": o.record,
        "keep": o.keep,
        "record_files": o.record_files,
        "retain_days": o.retain_days,
        "retain_gb": o.retain_gb,
    }
    app, runtime = _build(settings)  # also in the parent with workers: a bad model fails here, with its message
    if o.api_key is None and not is_loopback(host):
        print(
            f"warning: listening on {host} without an API key: anyone who can reach this port can use the model "
            "(set --api-key or MIERUKA_API_KEY)",
            file=sys.stderr,
        )
    heat = f"heatmap by {runtime.method}" if runtime.method else "no heatmap (the model's head does not allow one)"
    print(
        f"mieruka: {runtime.info.arch}, {len(runtime.info.classes)} classes, {runtime.backend} "
        f"({runtime.provider}), {heat}"
    )
    print(f"mieruka: page at http://{host}:{port}/ , API docs at http://{host}:{port}/docs")
    if o.record is not None:
        shown = re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", o.record)  # no password in the log
        print(f"mieruka: recording every answer to {shown} (files kept: {o.keep})")
    if workers == 1:
        uvicorn.run(app, host=host, port=port, log_level=o.log_level)
        return
    del app, runtime
    print(f"mieruka: {workers} worker processes, {threads} ONNX Runtime thread(s) each")
    os.environ[_SETTINGS_ENV] = json.dumps(settings)  # the workers inherit the environment
    uvicorn.run(
        "mieruka.serve:app_from_environment",
        factory=True,
        workers=workers,
        host=host,
        port=port,
        log_level=o.log_level,
    )
