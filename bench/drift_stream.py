"""Drift on real images: a model's service fed a data set's validation images (the line's start, the reference),
then its test images as they are, darkened by 40 %, and shifted by a tenth of the image; ``monitor`` after each.

Every image goes through the service's own code (``create_app`` with ``record=…``, in process) into a SQLite record;
``monitor`` compares the newest decisions with the model's first ones (``--reference`` = the validation images).
For each altered stream it also finds how many images the window needs before the alert: the smallest of
``--windows`` whose newest decisions raise it.

    python bench/drift_stream.py MODEL DATA [--windows 25,50,100,150,200,270]

Prints, as its last line, one JSON object: per stream (``test``, ``dark``, ``shift``) the alerts, the features
named, the PSI of each feature and ``images_to_alert``.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shared import cpu_description


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def _dark(pixels: np.ndarray) -> np.ndarray:
    return (pixels.astype(np.float32) * 0.6).round().astype(np.uint8)


def _shift(pixels: np.ndarray) -> np.ndarray:
    """Moved right and down by a tenth of the image; the uncovered edge repeats the border (a camera knocked)."""
    h, w = pixels.shape[:2]
    dy, dx = h // 10, w // 10
    out = np.empty_like(pixels)
    out[dy:, dx:] = pixels[: h - dy, : w - dx]
    out[:dy, dx:] = out[dy : dy + 1, dx:]
    out[:, :dx] = out[:, dx : dx + 1]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("--windows", default="25,50,100,150,200,270")
    args = parser.parse_args()

    from fastapi.testclient import TestClient

    from mieruka.checkpoint import read_info
    from mieruka.data.images import read_image
    from mieruka.model_file import load_runtime
    from mieruka.record.line import LineRecord
    from mieruka.record.monitor import monitor
    from mieruka.record.query import open_record
    from mieruka.record.store import Recorder
    from mieruka.serve import create_app

    dataset = read_info(args.model).load_dataset(args.data)
    rng = np.random.default_rng(0)  # a line sees the classes mixed, not in the manifest's order
    val, test = (list(dataset.split(s)) for s in ("val", "test"))
    rng.shuffle(val)
    rng.shuffle(test)
    windows = [int(w) for w in args.windows.split(",")]
    runtime = load_runtime(args.model)
    out: dict[str, Any] = {"model": str(args.model), "reference": len(val), "device": cpu_description()}
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/records.db"
        line = LineRecord(Recorder(url, keep="none"), args.model, runtime.info, runtime.method)
        client = TestClient(create_app(runtime, record=line))

        def send(samples: Any, alter: Any = None) -> None:
            for s in samples:
                pixels = read_image(s.image)
                data = _png(alter(pixels)) if alter else Path(s.image).read_bytes()
                files = [("files", (Path(s.image).name, data, "image/png"))]
                assert client.post("/v1/predict?overlay=false", files=files).json()["recorded"]

        send(val)
        for name, alter in (("test", None), ("dark", _dark), ("shift", _shift)):
            send(test, alter)
            line.recorder.sync()  # the writer's next flush, now
            engine = open_record(url)
            found = [monitor(engine, window=w, reference=len(val)) for w in windows]
            engine.dispose()
            full = found[-1]
            out[name] = {
                "alerts": [a["feature"] for a in full.alerts],
                "messages": [a["message"] for a in full.alerts],
                "psi": full.psi,
                "images_to_alert": next((w for w, r in zip(windows, found, strict=True) if r.alerts), None),
            }
            print(name, out[name]["alerts"], out[name]["images_to_alert"], file=sys.stderr)
        line.recorder.close()
    print(json.dumps(out, ensure_ascii=False))


if __name__ == "__main__":
    main()
