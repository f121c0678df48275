from __future__ import annotations

import torch

from mieruka.augment import AugmentConfig, augment_batch

OFF = AugmentConfig(hflip=False, vflip=False, rot90=False, degrees=0, scale=0, translate=0, brightness=0, contrast=0)


def _batch() -> torch.Tensor:
    return torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def test_seeded_and_does_not_mutate_input() -> None:
    x = _batch()
    before = x.clone()
    a = augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(3))
    b = augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(3))
    c = augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(4))
    torch.testing.assert_close(x, before)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    assert a.min() >= 0 and a.max() <= 1


def test_all_off_is_identity() -> None:
    x = _batch()
    torch.testing.assert_close(augment_batch(x, OFF, torch.Generator()), x)


def test_geometric_only_permutes_pixels() -> None:
    # flips and 90° turns move pixels but never change their values
    x = _batch()
    cfg = AugmentConfig(degrees=0, scale=0, translate=0, brightness=0, contrast=0)
    y = augment_batch(x, cfg, torch.Generator().manual_seed(1))
    for i in range(len(x)):
        torch.testing.assert_close(y[i].flatten().sort().values, x[i].flatten().sort().values)
    assert not torch.equal(x, y)


def test_default_contrast_jitter_spans_a_change_of_exposure() -> None:
    # The default must cover a tile shot at a much darker exposure (0.4 × the contrast) and a brighter one (1.6 ×).
    x = torch.rand(512, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.25  # no clamping at 0 or 1
    cfg = AugmentConfig(hflip=False, vflip=False, rot90=False, degrees=0, scale=0, translate=0, brightness=0)
    y = augment_batch(x, cfg, torch.Generator().manual_seed(0))
    ratio = y.std(dim=(1, 2, 3)) / x.std(dim=(1, 2, 3))
    assert 0.4 <= float(ratio.min()) < 0.45 and 1.55 < float(ratio.max()) <= 1.6
    torch.testing.assert_close(y.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)))  # contrast keeps each image's mean
