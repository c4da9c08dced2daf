"""ResNetRewardModel: preprocessing, shapes, gradients, checkpoints, pretrained weights."""

import pytest
import torch
import torchvision

from torchrl_reward.models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ResNetRewardModel,
    imagenet_weights_path,
)
from torchrl_reward.models.resnet import and_logit, preprocess_frames


def _images(n: int = 4, size: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=generator)


@pytest.fixture(scope="module")
def model() -> ResNetRewardModel:
    torch.manual_seed(0)
    return ResNetRewardModel(image_size=32).eval()


def test_preprocess_normalises_once_and_is_channels_last(model):
    images = _images()
    x = model.preprocess(images)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    expected = (images.permute(0, 3, 1, 2).float() / 255 - mean) / std
    torch.testing.assert_close(x, expected)
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_preprocess_frames_is_the_one_preprocessing(model):
    """The backends' layouts and dtypes come from the same pass as the model's input."""
    images = _images()
    x = model.preprocess(images)
    nchw = preprocess_frames(images, 1, model.mean, model.std, channels_last=False)
    assert nchw.is_contiguous() and torch.equal(nchw, x)
    half = model.preprocess(images, dtype=torch.float16)
    assert half.dtype == torch.float16 and half.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(half.float(), x, atol=1e-2, rtol=1e-3)
    tiled = preprocess_frames(torch.cat([images, images.flip(0)], 2), 2, model.mean, model.std)
    assert torch.equal(tiled[0::2], x) and torch.equal(tiled[1::2], x.flip(0))


def test_preprocess_resizes_to_image_size(model):
    x = model.preprocess(_images(size=48))
    assert x.shape == (4, 3, 32, 32)


def test_forward_accepts_both_layouts_and_leading_dims(model):
    images = _images()
    logits = model(images)
    assert logits.shape == (4,) and logits.dtype == torch.float32
    torch.testing.assert_close(model(images.permute(0, 3, 1, 2)), logits)
    torch.testing.assert_close(model(images.view(2, 2, 32, 32, 3)), logits.view(2, 2))
    torch.testing.assert_close(model.backbone_forward(model.preprocess(images)), logits)


def test_predict_proba_and_predict(model):
    images = _images(n=5)
    probs = model.predict_proba(images)
    assert probs.shape == (5,) and not probs.requires_grad
    assert ((probs >= 0) & (probs <= 1)).all()
    torch.testing.assert_close(model.predict_proba(images, chunk_size=2), probs)
    with pytest.raises(ValueError, match="chunk_size must be >= 1 or None, got 0"):
        model.predict_proba(images, chunk_size=0)
    with pytest.raises(ValueError, match="no pixels"):  # an empty batch is refused, chunked or not
        model.predict_proba(images[:0], chunk_size=2)
    torch.testing.assert_close(probs, torch.sigmoid(model(images)).detach())
    model.threshold = float(probs.median())
    assert torch.equal(model.predict(images), probs >= model.threshold)
    model.threshold = 0.5


@pytest.mark.parametrize(
    ("images", "error"),
    [
        (torch.rand(2, 32, 32, 3), TypeError),
        (torch.zeros(2, 32, 32, 4, dtype=torch.uint8), ValueError),
        (torch.zeros(32, 32, dtype=torch.uint8), ValueError),
    ],
)
def test_bad_images_raise(model, images, error):
    with pytest.raises(error, match="ResNetRewardModel expects"):
        model(images)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"arch": "vgg16"},
        {"image_size": 8},
        {"threshold": 1.5},
        {"std": (0.0, 1.0, 1.0)},
        {"stages": 5},
    ],
)
def test_bad_config_raises(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        ResNetRewardModel(**kwargs)


@pytest.mark.parametrize(
    ("arch", "stages", "features", "millions"),
    [("resnet10", 3, 256, 1.2), ("resnet18", 2, 128, 0.7), ("resnet18", 4, 512, 11.2)],
)
def test_fewer_stages_make_a_smaller_trunk_that_round_trips(
    tmp_path, arch, stages, features, millions
):
    """A truncated trunk pools its last kept stage's features; the checkpoint rebuilds it."""
    torch.manual_seed(4)
    model = ResNetRewardModel(arch=arch, stages=stages, image_size=32).eval()
    assert model.head[0].in_features == features
    trunk = sum(p.numel() for p in model.backbone.parameters()) / 1e6
    assert trunk == pytest.approx(millions, abs=0.1)
    loaded = ResNetRewardModel.load(model.save(tmp_path / "small.pt"))
    assert loaded.config()["stages"] == stages
    images = _images(n=3, seed=5)
    assert torch.equal(loaded.predict_proba(images), model.predict_proba(images))


def test_resnet10_has_no_imagenet_weights():
    with pytest.raises(ValueError, match="resnet10 has no ImageNet weights"):
        ResNetRewardModel(arch="resnet10", pretrained_weights="imagenet")


def test_every_trainable_parameter_gets_gradient():
    torch.manual_seed(0)
    model = ResNetRewardModel(image_size=32).train()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(
        model(_images(n=4)), torch.tensor([0.0, 1.0, 0.0, 1.0])
    )
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert param.grad.abs().sum() > 0, name


def test_checkpoint_round_trip_reproduces_predictions(tmp_path):
    torch.manual_seed(1)
    model = ResNetRewardModel(arch="resnet18", image_size=32, threshold=0.3, dropout=0.2).eval()
    model.checkpoint_metadata = {"note": "kept"}
    path = model.save(tmp_path / "model.pt", val_metrics={"roc_auc": 0.9}, epoch=3)
    loaded = ResNetRewardModel.load(path)
    assert not loaded.training
    assert loaded.config() == model.config()
    assert loaded.checkpoint_metadata == {
        "note": "kept",
        "val_metrics": {"roc_auc": 0.9},
        "epoch": 3,
    }
    images = _images(n=6, seed=3)
    assert torch.equal(loaded.predict_proba(images), model.predict_proba(images))
    assert not list(tmp_path.glob(".*.tmp")), "the atomic write left a temporary file"


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ResNetRewardModel.load(tmp_path / "missing.pt")
    good = ResNetRewardModel(image_size=32).save(tmp_path / "good.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="unreadable"):
        ResNetRewardModel.load(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.save(torchvision.models.resnet18().state_dict(), foreign)
    with pytest.raises(ValueError, match="not a ResNetRewardModel checkpoint"):
        ResNetRewardModel.load(foreign)
    checkpoint = torch.load(good, weights_only=True)
    checkpoint["config"]["arch"] = "resnet34"
    other = tmp_path / "other_arch.pt"
    torch.save(checkpoint, other)
    with pytest.raises(ValueError, match="do not fit resnet34"):
        ResNetRewardModel.load(other)
    checkpoint["config"]["future_setting"] = True  # written by a newer version
    torch.save(checkpoint, other)
    with pytest.raises(ValueError, match=r"does not know: \['future_setting'\]"):
        ResNetRewardModel.load(other)


def test_pretrained_weights_from_local_file(tmp_path):
    torch.manual_seed(2)
    reference = torchvision.models.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    model = ResNetRewardModel(image_size=32, pretrained_weights=str(path))
    torch.testing.assert_close(model.backbone.conv1.weight, reference.conv1.weight)
    torch.testing.assert_close(model.backbone.layer4[1].bn2.bias, reference.layer4[1].bn2.bias)
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        ResNetRewardModel(pretrained_weights=tmp_path / "absent.pth")
    torch.save(torchvision.models.resnet34().state_dict(), path)
    with pytest.raises(ValueError, match="does not fit torchvision's resnet18"):
        ResNetRewardModel(pretrained_weights=path)


def test_imagenet_weights_come_from_torchs_cache_only(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = imagenet_weights_path("resnet18")
    assert path.parent == tmp_path / "hub" / "checkpoints"
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        ResNetRewardModel(image_size=32, pretrained_weights="imagenet")
    torch.manual_seed(3)
    reference = torchvision.models.resnet18()
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    model = ResNetRewardModel(image_size=32, pretrained_weights="imagenet")
    torch.testing.assert_close(model.backbone.conv1.weight, reference.conv1.weight)


def test_views_share_one_trunk_and_concatenate_features():
    torch.manual_seed(0)
    model = ResNetRewardModel(image_size=32, num_views=2).eval()
    left, right = _images(seed=1), _images(seed=2)
    frames = torch.cat([left, right], dim=2)  # [4, 32, 64, 3], tiled side by side
    assert model.frame_shape == (32, 64, 3)
    features = [model.backbone(model.preprocess(torch.cat([v, v], 2))[::2]) for v in (left, right)]
    expected = model.head(torch.cat(features, dim=-1)).squeeze(-1)
    torch.testing.assert_close(model(frames), expected)
    with pytest.raises(ValueError, match="do not tile 2 views"):
        model(_images(size=33))


def test_proprio_inputs_are_checked_normalised_and_saved(tmp_path):
    torch.manual_seed(0)
    mean, std = [0.5] * 9, [2.0] * 9
    model = ResNetRewardModel(
        image_size=32, proprio={"qvel": 9}, proprio_mean=mean, proprio_std=std
    ).eval()
    images, qvel = _images(), torch.randn(4, 9)
    probs = model.predict_proba(images, qvel)
    assert not torch.allclose(probs, model.predict_proba(images, qvel + 1))  # it reads them
    loaded = ResNetRewardModel.load(model.save(tmp_path / "m.pt"))
    assert loaded.proprio == {"qvel": 9} and loaded.proprio_std.tolist() == std
    torch.testing.assert_close(loaded.predict_proba(images, qvel), probs)
    torch.testing.assert_close(loaded.predict_proba(images, qvel, chunk_size=3), probs)
    with pytest.raises(ValueError, match=r"needs its proprio inputs \['qvel'\]"):
        model(images)
    with pytest.raises(ValueError, match=r"must be shaped \[4, 9\]"):
        model(images, qvel[:, :8])
    with pytest.raises(TypeError, match="float tensor"):
        model(images, qvel.long())
    with pytest.raises(ValueError, match="NaN"):
        model(images, torch.full((4, 9), float("nan")))
    with pytest.raises(ValueError, match="takes no proprio"):
        ResNetRewardModel(image_size=32)(images, qvel)


def test_and_logit_is_the_logit_of_the_product():
    a = torch.tensor([-30.0, -3.0, 0.0, 2.0, 8.0, 30.0, 30.0]).repeat_interleave(7)
    b = torch.tensor([-30.0, -3.0, 0.0, 2.0, 8.0, 30.0, 12.0]).repeat(7)
    p = torch.sigmoid(a.double()) * torch.sigmoid(b.double())
    # 1 - p without cancellation, in float64: s(-a) + s(a) s(-b).
    q = torch.sigmoid(-a.double()) + torch.sigmoid(a.double()) * torch.sigmoid(-b.double())
    expected = (p.log() - q.log()).float()
    out = and_logit(a, b)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert out[-1] > 11.9  # both near certain: the product's logit stays resolved


def test_factored_head_scores_the_product_of_its_factors(tmp_path):
    torch.manual_seed(0)
    model = ResNetRewardModel(image_size=32, proprio={"qvel": 9}, head="factored").eval()
    images, qvel = _images(), torch.randn(4, 9)
    placed, static = model.factor_logits(images, qvel)
    assert placed.shape == static.shape == (4,)
    logits = model(images, qvel)
    torch.testing.assert_close(logits, and_logit(placed, static))
    probs = torch.sigmoid(placed) * torch.sigmoid(static)
    torch.testing.assert_close(model.predict_proba(images, qvel), probs)
    # Each factor reads only its own input; the static one needs no image at all.
    assert torch.equal(model.factor_logits(images.flip(0), qvel)[1], static)
    assert torch.equal(model.factor_logits(images, qvel.flip(0))[0], placed)
    torch.testing.assert_close(model.proprio_logit(qvel), static)
    loaded = ResNetRewardModel.load(model.save(tmp_path / "m.pt"))
    assert loaded.head_type == "factored" and loaded.config()["head"] == "factored"
    torch.testing.assert_close(loaded(images, qvel), logits)
    with pytest.raises(ValueError, match="head='factored' scores the static half"):
        ResNetRewardModel(image_size=32, head="factored")
    with pytest.raises(ValueError, match="head must be one of"):
        ResNetRewardModel(image_size=32, head="other")
    with pytest.raises(ValueError, match="Only a head='factored' model"):
        ResNetRewardModel(image_size=32, proprio={"qvel": 9}).factor_logits(images, qvel)
    with pytest.raises(ValueError, match="Only a head='factored' model"):
        ResNetRewardModel(image_size=32, proprio={"qvel": 9}).proprio_logit(qvel)


def test_checkpoints_without_a_head_key_load_as_joint(tmp_path):
    torch.manual_seed(0)
    model = ResNetRewardModel(image_size=32, proprio={"qvel": 9}).eval()
    checkpoint = model.checkpoint()
    del checkpoint["config"]["head"]  # written before the key existed
    loaded = ResNetRewardModel.from_checkpoint(checkpoint)
    assert loaded.head_type == "joint"
    images, qvel = _images(), torch.randn(4, 9)
    torch.testing.assert_close(loaded(images, qvel), model(images, qvel))
