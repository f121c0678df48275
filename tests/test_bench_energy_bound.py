"""bench/energy_bound.py: the ceiling of energy inside for a map of one grid resolution
(docs/benchmarks-history.md#guide quotes
it, so it is tested like the package)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from energy_bound import best_cell_energy


def _each_cell(mask: torch.Tensor, grid: int, size: int) -> list[float]:
    """Energy inside of every one-cell map, each built and resized on its own (no adjoint)."""
    out = []
    for k in range(grid * grid):
        cells = torch.zeros(1, 1, grid, grid)
        cells.view(-1)[k] = 1.0
        up = F.interpolate(cells, size=(size, size), mode="bilinear", align_corners=False)
        up = F.interpolate(up, size=mask.shape, mode="bilinear", align_corners=False)[0, 0]
        out.append(float((up * mask).sum() / up.sum()))
    return out


def test_the_bound_is_the_best_single_cell_and_reaches_one_for_the_whole_image() -> None:
    mask = torch.zeros(40, 56)
    mask[3:9, 30:41] = 1.0  # a small defect off the grid lines, in an image of another shape than the input
    got = best_cell_energy(mask, grid=4, input_size=32)
    assert got == pytest.approx(max(_each_cell(mask, 4, 32)), rel=1e-5)
    assert 0.0 < got < 1.0
    assert best_cell_energy(torch.ones(40, 56), grid=4, input_size=32) == pytest.approx(1.0, rel=1e-6)
    # a finer grid can put more of its energy on the same defect
    assert best_cell_energy(mask, grid=8, input_size=32) > got
