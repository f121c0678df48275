"""What the runners of exported files (ONNX Runtime, OpenVINO) share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

__all__ = ["ExportedRuntime", "onnx_metadata_of"]


class ExportedRuntime:
    """What the runners of exported files share: their outputs say whether there is a heatmap, and they are
    callable on a normalized batch as :func:`mieruka.inference.predict_probs` takes a model."""

    outputs: tuple[str, ...]

    @property
    def has_heatmap(self) -> bool:
        return "heatmap" in self.outputs

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Probabilities for a normalized batch."""
        return torch.from_numpy(np.array(self.run(x.detach().cpu().numpy())[0]))


def onnx_metadata_of(path: Path) -> dict[str, str]:
    """The key/value metadata of an ONNX file (its weights are not read)."""
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
