"""``timm:`` and ``clip:`` encoders: mechanics only.

Every model here has seeded RANDOM weights (``pretrained=False`` / ``pretrained=None``) or weights
this test saved itself: the tests check shapes, normalisation, batching, devices, weight loading,
preprocessing precedence and error paths, never embedding quality. No network is used.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import encoders
from encoders.errors import EncoderError, UnknownEncoderError

timm = pytest.importorskip("timm")


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        for h, w in [(90, 120), (64, 64), (200, 80)]
    ]


@pytest.fixture(scope="module")
def resnet() -> encoders.Encoder:
    return encoders.create("timm:resnet18", pretrained=False, device="cpu")


def pooled(model: torch.nn.Module, encoder: encoders.Encoder, image: Image.Image) -> np.ndarray:
    """What the encoder should return for ``image``: the source model's normalised pre-logits."""
    pixels = torch.from_numpy(encoder.prepare(image).copy()).permute(2, 0, 1)[None].float() / 255
    mean = torch.tensor(encoder.preprocess.mean).view(1, 3, 1, 1)
    std = torch.tensor(encoder.preprocess.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        features = model.forward_head(model.eval().forward_features((pixels - mean) / std), pre_logits=True)
    return torch.nn.functional.normalize(features, dim=1).numpy()


# -------------------------------------------------------------------------------------------- timm


def test_random_timm_model_gives_normalised_vectors(
    resnet: encoders.Encoder, images: list[Image.Image]
) -> None:
    """Random weights: checks shape, dtype and unit norm only."""
    vectors = resnet.embed(images)
    assert resnet.name == "timm:resnet18" and resnet.dim == 512 and resnet.version == "random-init-seed0"
    assert vectors.shape == (3, 512) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_batch_size_does_not_change_vectors(resnet: encoders.Encoder, images: list[Image.Image]) -> None:
    """Random weights: batching mechanics."""
    np.testing.assert_allclose(
        resnet.embed(images, batch_size=1), resnet.embed(images, batch_size=3), atol=1e-5
    )
    assert resnet.embed([]).shape == (0, 512)


def test_random_init_is_seeded_and_keeps_callers_rng(images: list[Image.Image]) -> None:
    """Random weights: two builds agree, and the global torch RNG is left where it was."""
    state = torch.random.get_rng_state()
    first = encoders.create("timm:test_vit", pretrained=False, device="cpu")
    assert torch.equal(state, torch.random.get_rng_state())
    second = encoders.create("timm:test_vit", pretrained=False, device="cpu")
    np.testing.assert_array_equal(first.embed(images), second.embed(images))


@pytest.mark.parametrize(("model", "dim"), [("resnet18", 512), ("test_vit", 64), ("test_efficientnet", 256)])
def test_dim_is_the_pooled_feature_width(model: str, dim: int, images: list[Image.Image]) -> None:
    """Random weights: the declared dim matches what the model outputs."""
    encoder = encoders.create(f"timm:{model}", pretrained=False, device="cpu")
    assert encoder.dim == dim
    assert encoder.embed(images[:1]).shape == (1, dim)


def test_preprocessing_precedence_argument_then_model_config() -> None:
    """Random weights: test_vit's pretrained config says 160 px, mean/std 0.5, bicubic, crop 0.95."""
    default = encoders.create("timm:test_vit", pretrained=False, device="cpu").preprocess
    assert default.input_size == 160 and default.mean == pytest.approx((0.5,) * 3)
    assert default.interpolation == "bicubic" and default.crop_pct == pytest.approx(0.95)
    assert default.resize == "shorter_center_crop"
    custom = encoders.create(
        "timm:test_vit",
        pretrained=False,
        device="cpu",
        input_size=96,
        mean=(0.1, 0.2, 0.3),
        interpolation="bilinear",
        resize="squash",
    ).preprocess
    assert custom.input_size == 96 and custom.mean == pytest.approx((0.1, 0.2, 0.3))
    assert custom.std == pytest.approx((0.5,) * 3)  # not given: still the model's
    assert custom.interpolation == "bilinear" and custom.resize == "squash"


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_checkpoint_is_loaded(tmp_path, suffix: str, images: list[Image.Image]) -> None:
    """Weights saved here (random, seed 123) come back out exactly, classifier dropped."""
    torch.manual_seed(123)
    source = timm.create_model("test_vit", pretrained=False, num_classes=1000)
    path = tmp_path / f"test_vit{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(source.state_dict(), str(path))
    else:
        torch.save({"state_dict": source.state_dict(), "epoch": 3}, path)
    encoder = encoders.create("timm:test_vit", weights=path, device="cpu")
    assert encoder.version.startswith(f"file:{path.name}:")
    np.testing.assert_allclose(encoder.embed(images[:1]), pooled(source, encoder, images[0]), atol=1e-5)


def test_checkpoint_of_another_model_is_refused(tmp_path) -> None:
    path = tmp_path / "resnet.pth"
    torch.save(timm.create_model("test_resnet", pretrained=False).state_dict(), path)
    with pytest.raises(EncoderError) as info:
        encoders.create("timm:test_vit", weights=path, device="cpu")
    assert info.value.reason == "weights_mismatch"


def test_checkpoint_with_wrong_shapes_is_refused(tmp_path) -> None:
    path = tmp_path / "vit2.pth"
    torch.save(timm.create_model("test_vit2", pretrained=False).state_dict(), path)
    with pytest.raises(EncoderError) as info:
        encoders.create("timm:test_vit", weights=path, device="cpu")
    assert info.value.reason == "weights_mismatch"


class _Payload:
    """Not a tensor: a weights_only load must refuse to unpickle it."""


def test_pickled_objects_in_checkpoint_are_refused(tmp_path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "extra": _Payload()}, path)
    with pytest.raises(EncoderError) as info:
        encoders.create("timm:test_vit", weights=path, device="cpu")
    assert info.value.reason == "missing_weights"


def test_missing_weights_file_is_an_encoder_error(tmp_path) -> None:
    with pytest.raises(EncoderError, match="no such file"):
        encoders.create("timm:test_vit", weights=tmp_path / "nope.safetensors")


def test_hub_failure_tells_to_pass_weights_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulates an offline hub: timm.create_model(pretrained=True) raising a connection error."""
    real = timm.create_model

    def offline(name: str, pretrained: bool = False, **kwargs: object) -> torch.nn.Module:
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(EncoderError) as info:
        encoders.create("timm:resnet18", device="cpu")
    assert info.value.reason == "weights_unavailable"
    assert "weights=PATH" in str(info.value)


def test_unknown_timm_model_suggests_names() -> None:
    with pytest.raises(UnknownEncoderError, match="resnet18"):
        encoders.create("timm:resnet18x", pretrained=False)


def test_bad_preprocessing_argument_fails_at_build() -> None:
    with pytest.raises(EncoderError, match="resize"):
        encoders.create("timm:test_vit", pretrained=False, resize="zoom")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_within_half_precision(images: list[Image.Image]) -> None:
    """Random weights: the same model on CUDA (fp16, channels_last) agrees with the CPU."""
    cpu = encoders.create("timm:resnet18", pretrained=False, device="cpu")
    gpu = encoders.create("timm:resnet18", pretrained=False, device="cuda")
    assert gpu.device.startswith("cuda")
    assert np.min(np.sum(cpu.embed(images) * gpu.embed(images), axis=1)) > 0.99


# -------------------------------------------------------------------------------------------- clip

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="module")
def open_clip(tmp_path_factory: pytest.TempPathFactory):
    """open_clip with a tiny test architecture registered; skips where the optional extra is missing."""
    module = pytest.importorskip("open_clip", reason="optional extra 'clip' (pip install open_clip_torch)")
    path = tmp_path_factory.mktemp("clip") / "dupstream-test-clip.json"
    path.write_text(json.dumps(TINY_CLIP))
    module.add_model_config(path)
    return module


@pytest.fixture(scope="module")
def clip(open_clip) -> encoders.Encoder:
    return encoders.create("clip:dupstream-test-clip", pretrained=None, device="cpu")


def test_clip_text_and_images_share_one_normalised_space(clip, images: list[Image.Image]) -> None:
    """Random weights: image and text vectors have the same dim and unit norm."""
    image_vectors = clip.embed(images)
    text_vectors = clip.embed_text(["a photo of a cat", "a cup of coffee", "an astronaut"])
    assert clip.dim == 32 and clip.version == "random-init-seed0"
    assert image_vectors.shape == (3, 32) and text_vectors.shape == (3, 32)
    assert text_vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(image_vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(text_vectors, axis=1), 1.0, atol=1e-5)
    assert (image_vectors @ text_vectors.T).shape == (3, 3)


def test_clip_text_batching_and_single_string(clip) -> None:
    """Random weights: batching mechanics of embed_text."""
    texts = ["one", "two", "three", "four", "five"]
    np.testing.assert_allclose(clip.embed_text(texts, batch_size=2), clip.embed_text(texts), atol=1e-5)
    np.testing.assert_allclose(clip.embed_text("two"), clip.embed_text(texts)[1:2], atol=1e-5)
    assert clip.embed_text([]).shape == (0, 32)


def test_clip_preprocessing_comes_from_open_clip(clip) -> None:
    config = clip.preprocess
    assert config.input_size == 64 and config.resize == "shorter_center_crop" and config.crop_pct == 1.0
    assert config.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    assert config.interpolation == "bicubic"


def test_clip_random_init_is_seeded(open_clip, clip, images: list[Image.Image]) -> None:
    again = encoders.create("clip:dupstream-test-clip", pretrained=None, device="cpu")
    np.testing.assert_array_equal(again.embed(images), clip.embed(images))
    np.testing.assert_array_equal(again.embed_text(["x"]), clip.embed_text(["x"]))


def test_clip_checkpoint_file_is_loaded(open_clip, tmp_path, images: list[Image.Image]) -> None:
    """Weights saved here (random, seed 7) come back out exactly, for images and text."""
    torch.manual_seed(7)
    source = open_clip.create_model("dupstream-test-clip", pretrained=None).eval()
    path = tmp_path / "tiny_clip.pt"
    torch.save(source.state_dict(), path)
    encoder = encoders.create("clip:dupstream-test-clip", pretrained=str(path), device="cpu")
    assert encoder.version.startswith("file:tiny_clip.pt:")
    pixels = torch.from_numpy(encoder.prepare(images[0]).copy()).permute(2, 0, 1)[None].float() / 255
    mean = torch.tensor(encoder.preprocess.mean).view(1, 3, 1, 1)
    std = torch.tensor(encoder.preprocess.std).view(1, 3, 1, 1)
    tokenizer = open_clip.get_tokenizer("dupstream-test-clip")
    with torch.inference_mode():
        image_expected = source.encode_image((pixels - mean) / std, normalize=True).numpy()
        text_expected = source.encode_text(tokenizer(["hello"]), normalize=True).numpy()
    np.testing.assert_allclose(encoder.embed(images[:1]), image_expected, atol=1e-5)
    np.testing.assert_allclose(encoder.embed_text(["hello"]), text_expected, atol=1e-5)


def test_clip_unknown_tag_lists_valid_ones(open_clip) -> None:
    with pytest.raises(EncoderError, match="openai"):
        encoders.create("clip:RN50", pretrained="no-such-tag")


def test_clip_download_failure_tells_to_pass_a_path(open_clip, monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulates an offline hub for a real tag; nothing is downloaded or built."""

    def offline(*_: object, **__: object) -> None:
        raise RuntimeError("Failed to download weights for tag 'openai'")

    monkeypatch.setattr(open_clip, "create_model", offline)
    with pytest.raises(EncoderError) as info:
        encoders.create("clip:RN50", pretrained="openai")
    assert info.value.reason == "weights_unavailable" and "pretrained=PATH" in str(info.value)


def test_clip_without_open_clip_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "open_clip", None)  # import open_clip now fails
    with pytest.raises(EncoderError, match="pip install") as info:
        encoders.create("clip:ViT-B-32", pretrained=None)
    assert info.value.reason == "missing_dependency"
    with pytest.raises(EncoderError, match="pip install"):
        encoders.create("clip:ViT-B-32", backend="open_clip", pretrained=None)


def test_timm_clip_tower_embeds_images_but_not_text(images: list[Image.Image]) -> None:
    """Random weights: a timm CLIP image tower keeps its projection head (512-d); text needs open_clip."""
    tower = encoders.create(
        "clip:vit_xsmall_patch16_clip_224", backend="timm", pretrained=False, device="cpu"
    )
    vectors = tower.embed(images[:2])
    assert tower.dim == 512 and vectors.shape == (2, 512)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    with pytest.raises(EncoderError, match="open_clip"):
        tower.embed_text(["a cat"])


def test_timm_imagenet_fine_tune_is_not_a_clip_space() -> None:
    with pytest.raises(EncoderError, match="fine-tune"):
        encoders.create(
            "clip:vit_base_patch16_clip_224.laion2b_ft_in12k_in1k", backend="timm", pretrained=False
        )
