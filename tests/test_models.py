from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mieruka.data.store import normalize, resize_image
from mieruka.errors import MierukaError
from mieruka.models import build_model, check_arch, feature_layer, load_pretrained, normalization_for

IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def test_pretrained_lite0_mapping_recognizes_a_cat() -> None:
    """The package's tensors, mapped in order onto timm's model, classify a real photograph correctly."""
    data = pytest.importorskip("skimage.data")
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)  # with its 1000-class ImageNet head
    # load_pretrained keeps the head of the model it is given; load the full mapped state to test the head too
    from mieruka.models import _pretrained_state

    model.load_state_dict(_pretrained_state("tf_efficientnet_lite0", "imagenet"))
    model.eval()
    mean, std = normalization_for("tf_efficientnet_lite0")
    x = normalize(torch.from_numpy(resize_image(data.chelsea(), 224))[None], mean, std)
    with torch.no_grad():
        probs = model(x).softmax(1)[0]
    assert int(probs.argmax()) in IMAGENET_CATS
    assert float(probs[list(IMAGENET_CATS)].sum()) > 0.8


def test_load_pretrained_fills_backbone_and_keeps_new_head() -> None:
    model = build_model("tf_efficientnet_lite0", 3)
    head_before = model.get_classifier().weight.clone()
    stem_before = model.conv_stem.weight.clone()
    load_pretrained(model, "tf_efficientnet_lite0", "imagenet")
    torch.testing.assert_close(model.get_classifier().weight, head_before)
    assert not torch.allclose(model.conv_stem.weight, stem_before)
    with pytest.raises(MierukaError, match="no offline ImageNet weights for 'resnet18'"):
        load_pretrained(build_model("resnet18", 3), "resnet18", "imagenet")


def test_unknown_arch_lists_choices() -> None:
    with pytest.raises(MierukaError, match="Close matches: resnet18") as err:
        check_arch("resnet_18")
    assert "--pretrained none" in str(err.value)


@pytest.mark.parametrize(("arch", "layer"), [("tf_efficientnet_lite0", "bn2"), ("resnet18", "layer4")])
def test_head_is_gap_then_linear_and_feature_layer_found(arch: str, layer: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch, 4).eval()
    assert feature_layer(model) == layer
    assert model.training is False
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)  # (B, C, h, w)
        head = model.get_classifier()
        expected = feats.mean(dim=(2, 3)) @ head.weight.T + head.bias
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)


def test_feature_layer_restores_training_mode() -> None:
    model = build_model("resnet18", 2).train()
    feature_layer(model)
    assert model.training


def test_resize_image_shape_and_values() -> None:
    img = np.full((30, 50, 3), 77, dtype=np.uint8)
    out = resize_image(img, 16)
    assert out.shape == (3, 16, 16) and (out == 77).all()
    assert Image.fromarray(img).size == (50, 30)


def test_resize_image_at_input_size_is_the_pixels_channels_first() -> None:
    img = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    out = resize_image(img, 16)
    np.testing.assert_array_equal(out, img.transpose(2, 0, 1))
    assert out.flags["C_CONTIGUOUS"]


def test_normalize_uint8_and_float_inputs_agree_with_the_formula() -> None:
    pixels = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1).repeat(2, 1, 2, 2)
    mean, std = (0.5, 0.25, 0.0), (0.5, 0.5, 2.0)
    expected = (pixels.float() / 255.0 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(normalize(pixels, mean, std), expected, rtol=0, atol=0)
    as_float = pixels.float() / 255.0
    before = as_float.clone()
    torch.testing.assert_close(normalize(as_float, mean, std), expected, rtol=0, atol=0)
    assert torch.equal(as_float, before)  # a float batch (e.g. augmented) is not modified in place
    assert normalize(pixels, mean, std)[0, :, 0, 0].tolist() == pytest.approx([-1.0, -0.1, 0.5])
