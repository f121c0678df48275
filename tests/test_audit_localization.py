from __future__ import annotations

import numpy as np
import pytest

from mieruka.audit.localization import (
    average_precision,
    energy_inside,
    fragmentation,
    iou_dice,
    localization_scores,
    pointing_game,
    relevance_rank_accuracy,
)


@pytest.fixture
def case() -> tuple[np.ndarray, np.ndarray]:
    """A 4 × 5 map and a 2-pixel region, small enough to compute every metric by hand."""
    heat = np.array(
        [
            [0.0, 0.0, 0.0, 0.0, 0.0],
            [0.0, 4.0, 2.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.0, 1.0],
            [-3.0, 0.0, 0.0, 0.0, 3.0],
        ]
    )
    mask = np.zeros((4, 5), dtype=bool)
    mask[1, 1] = mask[2, 1] = True
    return heat, mask


def test_energy_inside_uses_the_positive_part(case: tuple[np.ndarray, np.ndarray]) -> None:
    heat, mask = case
    assert energy_inside(heat, mask) == pytest.approx(4 / 10)  # m⁺ total 4 + 2 + 1 + 3 = 10
    assert energy_inside(np.ones((4, 5)), mask) == pytest.approx(mask.mean())  # uniform: the area fraction
    assert energy_inside(np.zeros((4, 5)), mask) == 0.0


def test_pointing_game_with_tolerance(case: tuple[np.ndarray, np.ndarray]) -> None:
    heat, mask = case
    assert pointing_game(heat, mask, tolerance=0)  # max 4 at (1, 1), inside
    moved = heat.copy()
    moved[1, 3] = 9  # max two pixels right of the region (distance 2)
    assert not pointing_game(moved, mask, tolerance=1)
    assert pointing_game(moved, mask, tolerance=2)
    assert not pointing_game(heat, np.zeros_like(mask))


def test_relevance_rank_and_average_precision(case: tuple[np.ndarray, np.ndarray]) -> None:
    heat, mask = case
    # top-2 pixels: 4 at (1,1) in, 3 at (3,4) out → 1/2
    assert relevance_rank_accuracy(heat, mask) == pytest.approx(0.5)
    # ranking: 4 (in) 3 (out) 2 (out) 1 (out) then 15 zeros tied incl. (2,1) (in), then -3 (out)
    # AP = 1/2 · 1/1 (first hit at rank 1) + 1/2 · 2/19 (second at the end of the zero tie group, rank 19)
    assert average_precision(heat, mask) == pytest.approx(0.5 * 1 + 0.5 * 2 / 19)
    perfect = mask.astype(float)
    assert average_precision(perfect, mask) == pytest.approx(1.0)
    assert relevance_rank_accuracy(perfect, mask) == pytest.approx(1.0)


def test_iou_dice_and_fragmentation(case: tuple[np.ndarray, np.ndarray]) -> None:
    heat, mask = case
    # attended at 0.5 × max = 2: (1,1)=4, (1,2)=2, (3,4)=3 → intersection 1, union 4
    iou, dice = iou_dice(heat, mask)
    assert iou == pytest.approx(1 / 4) and dice == pytest.approx(2 * 1 / (3 + 2))
    # two components: {(1,1),(1,2)} with mass 6 and {(3,4)} with mass 3 → largest share 6/9
    assert fragmentation(heat) == (2, pytest.approx(6 / 9))
    assert fragmentation(np.zeros((3, 3))) == (0, 0.0)
    diagonal = np.eye(3)
    assert fragmentation(diagonal)[0] == 1  # 8-connectivity joins diagonal neighbors


def test_localization_scores_bundle(case: tuple[np.ndarray, np.ndarray]) -> None:
    heat, mask = case
    s = localization_scores(heat, mask)
    assert s.area_fraction == pytest.approx(2 / 20) and s.lift == pytest.approx(0.4 / 0.1)
    assert s.pointing_hit and s.components == 2
    with pytest.raises(ValueError, match="differ in size"):
        localization_scores(heat, mask[:3])
