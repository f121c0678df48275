"""ONNX Runtime's execution providers: which hardware runs an ``.onnx`` model (``--provider``).

``auto`` takes the best one installed, in the order of :data:`PREFERENCE`: TensorRT, CUDA (the ``onnxruntime-gpu``
package), OpenVINO (``onnxruntime-openvino``), then the CPU. ONNX Runtime quietly falls back to the CPU when a
provider cannot start (no GPU, say), so the provider a session really uses is read back from it and reported: it is
printed by ``predict`` and ``serve`` and answered by ``/v1/model``.
"""

from __future__ import annotations

from mieruka.errors import MierukaError

__all__ = ["PREFERENCE", "PROVIDERS", "provider_list", "short_name"]

PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
"""``--provider`` names and ONNX Runtime's names for them."""

PREFERENCE = ("tensorrt", "cuda", "openvino", "cpu")
CHOICES = ("auto", *PROVIDERS)

_PACKAGES = {
    "tensorrt": "onnxruntime-gpu with TensorRT",
    "cuda": "onnxruntime-gpu",
    "openvino": "onnxruntime-openvino",
}


def provider_list(name: str, available: list[str]) -> list[str]:
    """ONNX Runtime's provider list for ``--provider name``, given the ``available`` ones: the chosen provider,
    then the CPU as the fallback for operators it does not take."""
    if name not in CHOICES:
        raise MierukaError(f"--provider {name!r}: choose {', '.join(CHOICES)}")
    if name == "auto":
        name = next(p for p in PREFERENCE if PROVIDERS[p] in available or p == "cpu")
    wanted = PROVIDERS[name]
    if wanted not in available:
        raise MierukaError(
            f"--provider {name}: ONNX Runtime here has no {wanted} (installed: "
            f"{', '.join(short_name(a) for a in available)}); install {_PACKAGES[name]} instead of onnxruntime"
        )
    return [wanted] if name == "cpu" else [wanted, PROVIDERS["cpu"]]


def short_name(provider: str) -> str:
    """``CUDAExecutionProvider`` → ``cuda`` (unknown providers keep their name)."""
    return next((k for k, v in PROVIDERS.items() if v == provider), provider)
