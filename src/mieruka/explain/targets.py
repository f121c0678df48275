"""Targets: what scalar of the model's output an explanation explains.

A target is a callable ``(logits (B, K), labels (B,) or None) -> scores (B,)``; one score per image, differentiable
in the logits. The built-in ones cover inspection's questions: "why this class?" (true, predicted or named class)
and "why reject?" (the NG score).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

__all__ = ["ClassTarget", "NGScore", "PredictedClass", "Target", "TrueClass", "parse_target"]

Target = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


@dataclass(frozen=True)
class ClassTarget:
    """The logit of one class (the same index for every image)."""

    index: int

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return logits[:, self.index]  # (B,)

    def indices(self, logits: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return torch.full((logits.shape[0],), self.index, dtype=torch.long, device=logits.device)


@dataclass(frozen=True)
class PredictedClass:
    """The logit of each image's top-1 class."""

    def indices(self, logits: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return logits.detach().argmax(1)

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return logits.gather(1, self.indices(logits)[:, None])[:, 0]


@dataclass(frozen=True)
class TrueClass:
    """The logit of each image's true class (labels required)."""

    def indices(self, logits: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if labels is None:
            raise ValueError("--target true needs the images' true classes (give a data set, not bare images)")
        return labels.to(logits.device, torch.long)

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return logits.gather(1, self.indices(logits, labels)[:, None])[:, 0]


@dataclass(frozen=True)
class NGScore:
    """Evidence for rejecting the part: the log-odds of the NG classes against the OK classes,
    ``logsumexp(logits[NG]) - logsumexp(logits[OK])`` (= log P(NG) / P(OK) under the softmax)."""

    ng: tuple[int, ...]
    ok: tuple[int, ...]

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        ng = torch.logsumexp(logits[:, list(self.ng)], dim=1)
        if not self.ok:
            return ng
        return ng - torch.logsumexp(logits[:, list(self.ok)], dim=1)


def parse_target(spec: str, classes: Sequence[str], verdicts: dict[str, str]) -> list[Target] | str:
    """``true``, ``pred``, ``ng``, ``all`` or a class name → targets (``all`` is returned as the string)."""
    if spec == "all":
        return "all"
    if spec == "true":
        return [TrueClass()]
    if spec == "pred":
        return [PredictedClass()]
    if spec == "ng":
        ng = tuple(i for i, c in enumerate(classes) if verdicts[c] == "NG")
        ok = tuple(i for i, c in enumerate(classes) if verdicts[c] != "NG")
        if not ng:
            raise ValueError("--target ng: the model has no NG class")
        return [NGScore(ng, ok)]
    if spec in classes:
        return [ClassTarget(list(classes).index(spec))]
    raise ValueError(f"--target {spec!r}: choose true, pred, ng, all or a class name ({', '.join(classes)})")
