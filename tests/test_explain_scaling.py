from __future__ import annotations

import numpy as np
import pytest
import torch

from mieruka.explain.scaling import minmax, minmax_np, normalize_for_display


def test_normalization_per_image_and_fixed() -> None:
    maps = torch.tensor([[[0.0, 1.0], [2.0, 4.0]], [[1.0, 1.0], [1.0, 3.0]]])
    per = normalize_for_display(maps, "per-image")
    torch.testing.assert_close(per[0], torch.tensor([[0.0, 0.25], [0.5, 1.0]]))
    torch.testing.assert_close(per[1], torch.tensor([[0.0, 0.0], [0.0, 1.0]]))
    fixed = normalize_for_display(maps, "fixed")  # shared scale: the largest value, 4
    torch.testing.assert_close(fixed[1], torch.tensor([[0.25, 0.25], [0.25, 0.75]]))
    torch.testing.assert_close(normalize_for_display(maps, "fixed", vmax=2.0)[0], torch.tensor([[0, 0.5], [1, 1.0]]))
    assert normalize_for_display(torch.zeros(1, 2, 2)).sum() == 0  # a flat map stays blue, no division by zero
    with pytest.raises(ValueError, match="--normalize"):
        normalize_for_display(maps, "global")


def test_minmax_scales_each_map_by_its_own_range() -> None:
    maps = torch.tensor([[[1.0, 3.0], [2.0, 5.0]], [[7.0, 7.0], [7.0, 7.0]]])
    torch.testing.assert_close(minmax(maps)[0], torch.tensor([[0.0, 0.5], [0.25, 1.0]]))
    assert minmax(maps)[1].abs().sum() == 0  # a constant map: zeros, not NaN
    heat = np.array([[2.0, 4.0], [6.0, 10.0]], dtype=np.float32)
    out = minmax_np(heat)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.0, 0.25], [0.5, 1.0]])


@pytest.mark.parametrize(
    ("hw", "size"), [((7, 7), (224, 224)), ((8, 5), (256, 100)), ((3, 4), (3, 4)), ((6, 6), (4, 9))]
)
def test_upsample_is_pytorchs_bilinear_resize(hw: tuple[int, int], size: tuple[int, int]) -> None:
    from mieruka.explain.upsample import interpolation_matrix, upsample

    maps = torch.rand(2, 3, *hw, generator=torch.Generator().manual_seed(0))
    expected = torch.nn.functional.interpolate(maps, size=size, mode="bilinear", align_corners=False)
    torch.testing.assert_close(upsample(maps, size), expected, rtol=0, atol=1e-6)
    # the weights by hand for 2 → 4: output pixel i samples the input at (i + 0.5) / 2 - 0.5, clamped at the edges
    expected_2_4 = torch.tensor([[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]])
    torch.testing.assert_close(interpolation_matrix(2, 4), expected_2_4)
    assert upsample(maps.double(), size).dtype == torch.float64
