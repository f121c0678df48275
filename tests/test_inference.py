from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mieruka.data.store import ImageStore
from mieruka.inference import batches, model_input, predict_logits, predict_probs, predict_probs_and_features
from mieruka.models import build_model
from mieruka.tta import tta_views


def _noise_store(folder: Path, n: int = 3) -> ImageStore:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        paths.append(folder / f"{i}.png")
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(paths[-1])
    return ImageStore(paths, 32, progress=False)


def test_predict_probs_averages_softmax_over_views(tmp_path: Path) -> None:
    store = _noise_store(tmp_path)
    torch.manual_seed(0)
    model = build_model("resnet18", 3).eval()
    torch.nn.init.normal_(model.fc.weight, std=0.5)
    mean, std = (0.5,) * 3, (0.5,) * 3
    plain = predict_probs(model, store, [0, 1, 2], mean=mean, std=std)
    logits = predict_logits(model, store, [0, 1, 2], mean=mean, std=std)
    np.testing.assert_allclose(plain, torch.from_numpy(logits).softmax(1).numpy(), atol=1e-6)
    d4 = predict_probs(model, store, [0, 1, 2], mean=mean, std=std, tta="d4", batch_size=2)
    from mieruka.data.store import normalize

    x = normalize(store.get([0, 1, 2]), mean, std)
    with torch.no_grad():
        expected = torch.stack([model(v).softmax(1) for v in tta_views(x, "d4")]).mean(0)
    np.testing.assert_allclose(d4, expected.numpy(), atol=1e-5)
    np.testing.assert_allclose(d4.sum(1), 1.0, atol=1e-5)
    assert not np.allclose(d4, plain, atol=1e-3)


@pytest.mark.parametrize("arch", ["resnet18", "tf_efficientnet_lite0"])
def test_probs_and_features_come_from_one_pass_and_match_the_separate_ones(tmp_path: Path, arch: str) -> None:
    from mieruka.data.store import normalize
    from mieruka.neighbors import pooled_features

    store = _noise_store(tmp_path, 5)
    torch.manual_seed(0)
    model = build_model(arch, 4).eval()
    torch.nn.init.normal_(model.get_classifier().weight, std=0.5)
    mean, std = (0.5,) * 3, (0.5,) * 3
    passes: list[int] = []  # batch size of every pass through the network's first convolution
    stem = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    stem.register_forward_hook(lambda _m, args, _out: passes.append(args[0].shape[0]))
    for tta, views in (("none", 1), ("d4", 8)):
        passes.clear()
        probs, features = predict_probs_and_features(model, store, [4, 0, 2], mean=mean, std=std, tta=tta, batch_size=2)
        assert sorted(passes) == sorted([2, 1] * views)  # every view of each batch through the network once
        expected = predict_probs(model, store, [4, 0, 2], mean=mean, std=std, tta=tta)
        np.testing.assert_allclose(probs, expected, atol=1e-5)
        assert not np.allclose(probs, 1 / 4, atol=1e-2)  # the classifier was really applied
    x = normalize(store.get([4, 0, 2]), mean, std)
    with torch.no_grad():
        direct = torch.nn.functional.normalize(model.forward_head(model.forward_features(x), pre_logits=True), dim=1)
    torch.testing.assert_close(features, direct, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pooled_features(model, store, [4, 0, 2], mean=mean, std=std), direct)
    torch.testing.assert_close(features.norm(dim=1), torch.ones(3))


def test_cpu_forward_passes_are_split_by_pixels_with_the_same_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mieruka.inference as inference

    store = _noise_store(tmp_path, 7)
    torch.manual_seed(0)
    model = build_model("resnet18", 3).eval()
    torch.nn.init.normal_(model.fc.weight, std=0.5)
    mean, std = (0.5,) * 3, (0.5,) * 3
    whole = predict_probs(model, store, list(range(7)), mean=mean, std=std, tta="flip")
    whole_logits = predict_logits(model, store, list(range(7)), mean=mean, std=std)
    passes: list[int] = []
    model.conv1.register_forward_hook(lambda _m, args, _out: passes.append(args[0].shape[0]))
    monkeypatch.setattr(inference, "CPU_PIXELS_PER_PASS", 3 * 32 * 32 + 5)  # 3 images of the store's 32 × 32
    split = predict_probs(model, store, list(range(7)), mean=mean, std=std, tta="flip", batch_size=64)
    assert passes == [3, 3, 1] * 2  # each of the two views in slices of 3
    np.testing.assert_allclose(split, whole, atol=1e-6)
    passes.clear()
    probs, features = predict_probs_and_features(model, store, list(range(7)), mean=mean, std=std, batch_size=5)
    assert passes == [3, 2, 2]  # batches of 5 and 2, the first split in 3 + 2
    np.testing.assert_allclose(probs, torch.from_numpy(whole_logits).softmax(1).numpy(), atol=1e-6)
    assert features.shape == (7, model.num_features)
    passes.clear()
    logits = predict_logits(model, store, list(range(7)), mean=mean, std=std)
    assert passes == [3, 3, 1]
    np.testing.assert_allclose(logits, whole_logits, atol=1e-5)


def test_batches_cover_the_indices_in_order_once() -> None:
    got = list(batches([5, 1, 4, 2, 3], 2, desc="x", progress=False))
    assert got == [[5, 1], [4, 2], [3]]
    assert list(batches([], 4, desc="x", progress=False)) == []
    with pytest.raises(ValueError, match="--batch-size"):
        list(batches([1], 0, desc="x", progress=False))


def test_model_input_is_the_normalized_channels_last_batch(tmp_path: Path) -> None:
    pixels = np.full((8, 8, 3), 255, dtype=np.uint8)
    pixels[..., 1] = 0
    Image.fromarray(pixels).save(tmp_path / "a.png")
    store = ImageStore([tmp_path / "a.png"], 8, progress=False)
    x = model_input(store, [0], torch.device("cpu"), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert x.is_contiguous(memory_format=torch.channels_last) and x.dtype == torch.float32
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor([1.0, -1.0, 1.0]))


def test_classify_files_in_chunks_equals_one_store_and_isolates_bad_files(
    tiny_run: Path, synth_dir: Path, tmp_path: Path
) -> None:
    import shutil

    from mieruka.checkpoint import load_checkpoint
    from mieruka.inference import ClassifyOptions, classify_files

    model, info, _ = load_checkpoint(tiny_run / "model.safetensors")
    folder = tmp_path / "imgs"
    shutil.copytree(synth_dir / "crack", folder)
    paths = sorted(folder.iterdir())
    (folder / "crack_0003.png").write_bytes(b"garbage")
    probs, feats, bad = classify_files(model, paths, info, ClassifyOptions(with_features=True, chunk=3))
    assert set(bad) == {3} and "crack_0003" not in bad[3]  # the reason, without the path again
    assert np.isnan(probs[3]).all() and feats is not None and torch.isnan(feats[3]).all()
    good = [i for i in range(len(paths)) if i != 3]
    store = ImageStore([paths[i] for i in good], info.image_size, progress=False)
    expected, expected_feats = predict_probs_and_features(
        model, store, list(range(len(good))), mean=info.mean, std=info.std
    )
    np.testing.assert_allclose(probs[good], expected, atol=1e-6)
    torch.testing.assert_close(feats[good], expected_feats, atol=1e-6, rtol=1e-5)
    # a chunk of nothing but bad files keeps the rows aligned
    probs2, _, bad2 = classify_files(model, [paths[3], paths[0]], info, ClassifyOptions(chunk=1))
    assert set(bad2) == {0} and np.isnan(probs2[0]).all() and np.allclose(probs2[1], expected[0], atol=1e-6)
