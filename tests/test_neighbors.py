from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from mieruka.neighbors import nearest


def test_nearest_ranks_by_cosine_and_skips_excluded_pairs() -> None:
    refs = F.normalize(torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]]), dim=1)
    queries = F.normalize(torch.tensor([[1.0, 0.1], [0.0, 1.0]]), dim=1)
    sims, idx = nearest(queries, refs, 2)
    assert idx.tolist() == [[0, 1], [2, 1]]
    np.testing.assert_allclose(sims[1], [1.0, 0.6], atol=1e-6)
    # query 1 is reference 2 itself (an image of the training split): its best match is then the next one
    sims, idx = nearest(queries, refs, 2, exclude=[(1, 2)])
    assert idx.tolist() == [[0, 1], [1, 0]]
    np.testing.assert_allclose(sims[1], [0.6, 0.0], atol=1e-6)
