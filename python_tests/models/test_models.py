"""Built-in models (UNet, UNet++, Attention U-Net), the smp adapter, wrap_model and the registry:
shapes at odd sizes, the feature contract DALE relies on (pre-hook on ``segmentation_head``),
gradients to every parameter, train/eval, determinism, sizes, a short overfit, and errors."""
from __future__ import annotations

import sys
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dale_ext.models import (
    AttentionGate,
    AttentionUNet,
    SegmentationModel,
    UNet,
    UNetPlusPlus,
    available_models,
    build_model,
    smp_model,
    wrap_model,
)
from dale_ext.models._base import crop_padding, pad_to_multiple

MODEL_CLASSES = (UNet, UNetPlusPlus, AttentionUNet)
SMALL = dict(base_channels=8, depth=3)  # keeps every test well under a second on 2 CPU cores


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """These models are tiny: one intra-op thread is about as fast on an idle machine and far
    steadier when other processes share the two cores (OpenMP threads then wait on each other)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def small(cls, in_channels: int = 1, num_classes: int = 1, **kwargs) -> SegmentationModel:
    torch.manual_seed(0)
    return cls(in_channels=in_channels, num_classes=num_classes, **{**SMALL, **kwargs})


def bce_loss(logits: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    target = (torch.rand(logits.shape, generator=gen) > 0.5).float()
    return F.binary_cross_entropy_with_logits(logits, target)


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- shapes and the feature contract
@pytest.mark.parametrize("cls", MODEL_CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    "in_channels,num_classes,height,width,extra",
    [
        (1, 1, 32, 32, {}),
        (3, 2, 50, 37, {}),
        (2, 4, 17, 64, {"upsampling": "bilinear"}),
        (1, 3, 5, 9, {"depth": 4}),
        (4, 1, 23, 11, {"depth": 1}),
    ],
    ids=["1to1-32x32", "3to2-50x37", "2to4-17x64-bilinear", "1to3-5x9-depth4", "4to1-23x11-depth1"],
)
def test_output_and_feature_shapes(cls, in_channels, num_classes, height, width, extra, gen):
    model = small(cls, in_channels, num_classes, **extra).eval()
    x = torch.randn(2, in_channels, height, width, generator=gen)
    logits, features = model(x, return_features=True)
    assert logits.shape == (2, num_classes, height, width)
    assert features.shape == (2, model.feature_channels, height, width)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    assert model(x).shape == logits.shape


@pytest.mark.parametrize("cls", MODEL_CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_pre_hook_on_feature_module_sees_the_returned_features(cls, train, gen):
    model = small(cls, in_channels=3, num_classes=2).train(train)
    assert type(model).feature_module == "segmentation_head" == model.feature_module
    assert model.feature_channels == SMALL["base_channels"]
    captured: list[torch.Tensor] = []
    hook = model.get_submodule(model.feature_module).register_forward_pre_hook(
        lambda module, args: captured.append(args[0])
    )
    x = torch.randn(2, 3, 50, 37, generator=gen)
    logits, features = model(x, return_features=True)
    plain_logits = model(x)  # the hook fires without return_features too
    hook.remove()

    assert len(captured) == 2
    assert torch.equal(captured[0], features)
    assert captured[0].shape == (2, model.feature_channels, 50, 37) and captured[0].is_contiguous()
    assert torch.equal(model.segmentation_head(features), logits)
    if not train:  # in train mode BatchNorm statistics moved between the two calls
        assert torch.equal(captured[1], features) and torch.equal(plain_logits, logits)


@pytest.mark.parametrize("cls", MODEL_CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("upsampling", ["transpose", "bilinear"])
def test_every_parameter_gets_a_gradient(cls, upsampling, gen):
    model = small(cls, in_channels=2, num_classes=3, upsampling=upsampling).train()
    x = torch.randn(2, 2, 24, 19, generator=gen)
    bce_loss(model(x), gen).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"parameters without gradient: {missing}"


# ---------------------------------------------------------------- modes, determinism, sizes
@pytest.mark.parametrize("cls", MODEL_CLASSES, ids=lambda c: c.__name__)
def test_train_and_eval_modes(cls, gen):
    model = small(cls)
    x = torch.randn(2, 1, 37, 50, generator=gen)
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    before = bn.running_mean.clone()

    train_out = model.train()(x)  # batch statistics, running stats updated
    assert not torch.equal(bn.running_mean, before)
    model.eval()
    with torch.no_grad():
        batch_out = model(x)
        single_out = model(x[1:])
    assert not torch.allclose(train_out, batch_out)
    # eval mode: running statistics, so a sample's logits do not depend on its batch
    torch.testing.assert_close(single_out, batch_out[1:], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cls", MODEL_CLASSES, ids=lambda c: c.__name__)
def test_same_seed_same_model_and_outputs(cls, gen):
    x = torch.randn(2, 1, 21, 30, generator=gen)
    first, second = small(cls), small(cls)  # small() seeds torch with 0
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name
    assert torch.equal(first.train()(x), second.train()(x))
    torch.manual_seed(1)
    other = cls(**SMALL)
    assert not torch.equal(other.segmentation_head.weight, first.segmentation_head.weight)


@pytest.mark.parametrize(
    "cls,expected",
    [(UNet, 7_762_465), (UNetPlusPlus, 9_045_249), (AttentionUNet, 8_112_069)],
    ids=["UNet-7.76M", "UNetPlusPlus-9.05M", "AttentionUNet-8.11M"],
)
def test_parameter_counts_at_default_settings(cls, expected):
    # Defaults: 1 -> 1 channels, base 32, depth 4, transposed-conv upsampling. UNet is the
    # original's 31M at a quarter of the width; UNet++ matches Zhou et al.'s 9.04M.
    count = n_parameters(cls())
    print(f"{cls.__name__}: {count:,} parameters")
    assert abs(count - expected) <= 0.01 * expected
    # width doubles -> roughly 4x the parameters; bilinear upsampling is lighter
    assert 3.5 < n_parameters(cls(base_channels=64)) / count < 4.1
    assert n_parameters(cls(upsampling="bilinear")) < count


@pytest.mark.parametrize("cls", MODEL_CLASSES, ids=lambda c: c.__name__)
def test_overfits_one_tiny_batch(cls):
    torch.manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    centres = torch.randint(10, 22, (2, 2)).float()
    radii = torch.randint(5, 9, (2,)).float()
    mask = torch.stack([((yy - cy) ** 2 + (xx - cx) ** 2 <= r**2).float() for (cy, cx), r in zip(centres, radii)])
    mask = mask[:, None]
    image = mask * 0.6 + 0.3 * torch.randn(2, 1, 32, 32)  # a noisy bright disk

    model = cls(base_channels=16, depth=3).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        optimiser.zero_grad()
        loss = F.binary_cross_entropy_with_logits(model(image), mask)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    print(f"{cls.__name__}: BCE {losses[0]:.3f} -> {losses[-1]:.3f}")
    assert losses[-1] < 0.4 * losses[0], losses


# ---------------------------------------------------------------- model-specific behaviour
def test_unet_plus_plus_deep_supervision(gen):
    model = small(UNetPlusPlus, num_classes=2, deep_supervision=True).train()
    x = torch.randn(2, 1, 33, 20, generator=gen)
    logits, features, auxiliary = model(x, return_features=True, return_auxiliary=True)
    assert len(auxiliary) == SMALL["depth"] - 1
    assert all(a.shape == logits.shape == (2, 2, 33, 20) for a in auxiliary)
    assert torch.equal(model.segmentation_head(features), logits)
    # the deep-supervision loss (all heads) reaches every parameter
    sum(bce_loss(out, gen) for out in [logits, *auxiliary]).backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model(x).shape == logits.shape  # plain forward still returns logits only
    with pytest.raises(ValueError, match="deep_supervision"):
        small(UNetPlusPlus)(x, return_auxiliary=True)


def test_attention_gate_coefficients(gen):
    gate = AttentionGate(skip_channels=8, gating_channels=16, inter_channels=4)
    x = torch.randn(2, 8, 12, 10, generator=gen)
    g = torch.randn(2, 16, 6, 5, generator=gen)
    alpha = gate.coefficients(x, g)
    assert alpha.shape == (2, 1, 12, 10)
    assert ((alpha > 0) & (alpha < 1)).all()
    assert gate(x, g).shape == x.shape


def test_pad_and_crop_round_trip(gen):
    x = torch.randn(1, 2, 50, 37, generator=gen)
    padded, padding = pad_to_multiple(x, 16)
    assert padded.shape[-2:] == (64, 48)
    assert torch.equal(crop_padding(padded, padding), x)
    same, no_padding = pad_to_multiple(padded, 16)
    assert same is padded and no_padding == (0, 0, 0, 0)


@pytest.mark.parametrize("cls", MODEL_CLASSES, ids=lambda c: c.__name__)
def test_bad_arguments_and_inputs(cls, gen):
    for bad in (dict(depth=0), dict(base_channels=0), dict(num_classes=0), dict(in_channels=1.5)):
        with pytest.raises(ValueError):
            cls(**bad)
    with pytest.raises(ValueError, match="upsampling"):
        cls(upsampling="nearest")
    model = small(cls, in_channels=3)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.randn(2, 1, 16, 16, generator=gen))
    with pytest.raises(ValueError):
        model(torch.randn(3, 16, 16, generator=gen))


# ---------------------------------------------------------------- registry
@pytest.mark.parametrize(
    "name,cls",
    [
        ("unet", UNet),
        ("UNet", UNet),
        ("unet++", UNetPlusPlus),
        ("unetplusplus", UNetPlusPlus),
        ("unet-plus-plus", UNetPlusPlus),
        ("attention_unet", AttentionUNet),
        ("attention-unet", AttentionUNet),
    ],
)
def test_build_model_by_name(name, cls):
    model = build_model(name, in_channels=3, num_classes=2, base_channels=8, depth=2)
    assert type(model) is cls
    assert (model.in_channels, model.num_classes, model.base_channels, model.depth) == (3, 2, 8, 2)


def test_registry_lists_and_rejects():
    assert available_models() == ["attention_unet", "unet", "unet++"]
    with pytest.raises(ValueError, match="unknown model 'segnet'") as info:
        build_model("segnet", 1, 1)
    for choice in ("unet", "unet++", "attention_unet", "unetplusplus", "smp:<arch>[:<encoder>]"):
        assert repr(choice) in str(info.value)
    with pytest.raises(ValueError, match="smp:<arch>"):
        build_model("smp:", 1, 1)
    with pytest.raises(TypeError):
        build_model("unet", 1, 1, not_an_option=3)


# ---------------------------------------------------------------- smp adapter (smp is faked)
class FakeSmpModel(nn.Module):
    """Same module tree as an smp model: encoder -> decoder -> segmentation_head (a Sequential of
    conv, upsampling, activation), the head's input being the decoder output."""

    def __init__(self, in_channels: int, classes: int, decoder_channels: int = 16) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU())
        self.decoder = nn.Sequential(nn.Conv2d(8, decoder_channels, 3, padding=1), nn.ReLU())
        self.segmentation_head = nn.Sequential(
            nn.Conv2d(decoder_channels, classes, 3, padding=1), nn.Identity(), nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.segmentation_head(self.decoder(self.encoder(x)))


@pytest.fixture
def fake_smp(monkeypatch):
    """Put a fake ``segmentation_models_pytorch`` into sys.modules; returns its call log."""
    calls: list[dict] = []
    module = types.ModuleType("segmentation_models_pytorch")

    def create_model(arch, encoder_name="resnet34", encoder_weights="imagenet", in_channels=3, classes=1, **kwargs):
        calls.append(dict(arch=arch, encoder_name=encoder_name, encoder_weights=encoder_weights,
                          in_channels=in_channels, classes=classes, **kwargs))
        return FakeSmpModel(in_channels, classes)

    module.create_model = create_model
    monkeypatch.setitem(sys.modules, "segmentation_models_pytorch", module)
    return calls


def test_smp_model_builds_and_annotates(fake_smp, gen):
    model = smp_model("Unet", "resnet18", in_channels=3, num_classes=2, decoder_attention_type=None)
    assert fake_smp == [dict(arch="Unet", encoder_name="resnet18", encoder_weights=None, in_channels=3,
                             classes=2, decoder_attention_type=None)]
    assert model.feature_module == "segmentation_head" and model.feature_channels == 16
    captured = []
    model.get_submodule(model.feature_module).register_forward_pre_hook(lambda m, args: captured.append(args[0]))
    x = torch.randn(2, 3, 32, 32, generator=gen)
    logits = model(x)
    assert logits.shape == (2, 2, 32, 32)
    assert torch.equal(captured[0], model.decoder(model.encoder(x)))


def test_registry_builds_smp_names(fake_smp):
    model = build_model("smp:UnetPlusPlus:efficientnet-b0", in_channels=1, num_classes=3)
    assert isinstance(model, FakeSmpModel) and model.feature_channels == 16
    build_model("smp:FPN", in_channels=1, num_classes=1, encoder_weights="imagenet")
    assert [(c["arch"], c["encoder_name"], c["encoder_weights"]) for c in fake_smp] == [
        ("UnetPlusPlus", "efficientnet-b0", None),
        ("FPN", "resnet34", "imagenet"),
    ]


def test_smp_model_refuses_non_logit_outputs(fake_smp):
    with pytest.raises(ValueError, match="activation"):
        smp_model("Unet", activation="sigmoid")
    with pytest.raises(ValueError, match="aux_params"):
        smp_model("Unet", aux_params={"classes": 2})
    assert fake_smp == []


def test_smp_missing_raises_import_error_with_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "segmentation_models_pytorch", None)  # import now fails
    with pytest.raises(ImportError, match="pip install segmentation-models-pytorch"):
        smp_model("Unet")
    with pytest.raises(ImportError, match="pip install segmentation-models-pytorch"):
        build_model("smp:Unet:resnet34", 3, 1)


# ---------------------------------------------------------------- wrap_model
class UserModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU())
        self.decoder = nn.ModuleDict({"fuse": nn.Conv2d(6, 6, 1), "head": nn.Conv2d(6, 2, 1)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder["head"](self.decoder["fuse"](self.backbone(x)))


def test_wrap_model_accepts_dotted_names(gen):
    user = UserModel()
    assert wrap_model(user, "decoder.head") is user
    assert user.feature_module == "decoder.head" and user.feature_channels == 6
    assert wrap_model(UserModel(), "decoder.head", feature_channels=7).feature_channels == 7
    wrapped = wrap_model(nn.Sequential(nn.Conv2d(1, 3, 1), nn.Identity()), "1")
    assert wrapped.feature_channels is None  # nothing inside to infer from
    # a built-in model can be re-pointed at another module
    unet = wrap_model(small(UNet), "decoder.2")
    assert unet.feature_module == "decoder.2" and UNet.feature_module == "segmentation_head"


def test_wrap_model_errors():
    with pytest.raises(ValueError, match=r"no submodule named 'decoder\.haed'.*'decoder\.head'"):
        wrap_model(UserModel(), "decoder.haed")  # a typo: the similar name is suggested
    with pytest.raises(ValueError, match=r"close matches: \['decoder\.head', "):
        wrap_model(UserModel(), "model.decoder.head")  # stray prefix: the same last component comes first
    with pytest.raises(ValueError, match="top-level modules: \\['backbone', 'decoder'\\]"):
        wrap_model(UserModel(), "xyzzy")
    with pytest.raises(ValueError, match="non-empty"):
        wrap_model(UserModel(), "")
    with pytest.raises(ValueError, match="feature_channels"):
        wrap_model(UserModel(), "decoder.head", feature_channels=0)
    with pytest.raises(TypeError, match="nn.Module"):
        wrap_model(lambda x: x, "head")
