from __future__ import annotations

import pytest
import torch

from mieruka.tta import TRAIN_TTA_CHOICES, TTA_CHOICES, tta_views


def test_tta_views() -> None:
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    assert len(tta_views(x, "none")) == 1 and tta_views(x, "none")[0] is x
    flip = tta_views(x, "flip")
    torch.testing.assert_close(flip[1], x.flip(3))
    d4 = tta_views(x, "d4")
    assert len(d4) == 8 and torch.equal(d4[0], x)
    assert len({tuple(v[0, 0].flatten().tolist()) for v in d4}) == 8  # eight distinct views of a generic square
    with pytest.raises(ValueError, match="--tta"):
        tta_views(x, "d8")


def test_train_choices_add_auto_to_the_views() -> None:
    assert ("auto", *TTA_CHOICES) == TRAIN_TTA_CHOICES
