"""Re-save a format-1 model file (checksum over the weights only) as format 2 with this tree's code, after checking
its format-1 checksum: to compare a model trained before the format change (docs/benchmarks-history.md#training) with
today's commands.

    python bench/archive/resave_format1.py OLD.safetensors NEW.safetensors

The description of a format-1 file was never protected, so use this only on files you trained yourself.
"""

from __future__ import annotations

import argparse
import hashlib

import torch
from safetensors import safe_open

from mieruka.checkpoint import ModelInfo, save_checkpoint
from mieruka.models import build_model


def _weights_digest(tensors: dict[str, torch.Tensor]) -> str:
    """Format 1's checksum: the tensors alone (names, dtypes, shapes, bytes, sorted by name)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old")
    parser.add_argument("new")
    args = parser.parse_args()
    with safe_open(args.old, framework="pt") as fh:
        meta = fh.metadata()
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    if meta.get("format_version") != "1" or meta.get("sha256") != _weights_digest(tensors):
        raise SystemExit(f"{args.old}: not an intact format-1 mieruka model")
    info = ModelInfo.from_json(meta["info"])
    model = build_model(info.arch, len(info.classes))
    model.load_state_dict({k: v for k, v in tensors.items() if not k.startswith("_")})
    save_checkpoint(args.new, model, info)
    print(f"wrote {args.new}")


if __name__ == "__main__":
    main()
