"""``mieruka serve``: the model behind an HTTP API and a web page (FastAPI on uvicorn)."""

from __future__ import annotations

import ipaddress
import os
import sys

from mieruka.serve.app import API_KEY_HEADER, create_app

__all__ = ["API_KEY_HEADER", "create_app", "is_loopback", "serve"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    model: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    method: str = "gradcam",
    device: str = "cpu",
    max_upload_mb: float = 32.0,
    max_images: int = 16,
    threads: int | None = None,
    log_level: str = "info",
) -> None:
    """Load ``model`` (``.onnx`` or ``.safetensors``) and serve it until interrupted."""
    import uvicorn

    from mieruka.runtime import load_runtime

    runtime = load_runtime(model, method=method, device=device, threads=threads)
    if runtime.backend == "onnxruntime":
        import torch

        # ONNX Runtime does the heavy work with its own threads; the small tensor steps around it (normalization,
        # resizing the heatmap) run in the request threads, where more torch threads would only contend.
        torch.set_num_threads(1)
    if api_key is None and not is_loopback(host):
        print(
            f"warning: listening on {host} without an API key: anyone who can reach this port can use the model "
            "(set --api-key or MIERUKA_API_KEY)",
            file=sys.stderr,
        )
    app = create_app(runtime, api_key=api_key, max_upload_mb=max_upload_mb, max_images=max_images)
    heat = f"heatmap by {runtime.method}" if runtime.method else "no heatmap (the model's head does not allow one)"
    print(f"mieruka: {runtime.info.arch}, {len(runtime.info.classes)} classes, {runtime.backend}, {heat}")
    print(f"mieruka: page at http://{host}:{port}/ , API docs at http://{host}:{port}/docs")
    uvicorn.run(app, host=host, port=port, log_level=log_level)
