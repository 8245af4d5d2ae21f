"""What users' models and data bring to the trainers (CPU): two-channel binary heads, dict outputs,
uint8 images, bad label maps, saturated logits (tiny confidence gradients), SGD on omega, fp16
loss scaling, parameters frozen after the trainer was built, resuming onto another device."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from dale_ext.data import SyntheticDataset
from dale_ext.models import UNet
from dale_ext.train import DaleTrainer, PixelLoss, TrainConfig, Trainer, check_labels, head_targets


@pytest.fixture(scope="module")
def xy():
    ds = SyntheticDataset("train", n=4, size=32, seed=3)
    return next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))


def unet(out_channels=1, seed=0):
    torch.manual_seed(seed)
    return UNet(3, out_channels, base_channels=8, depth=2)


def config(**kw):
    base = dict(epochs=1, batch_size=4, patch_size=8, lr=1e-3)
    base.update(kw)
    return TrainConfig(**base)


HEAD = "inner.segmentation_head"


class NoAttr(torch.nn.Module):
    """A user's model: no ``num_classes`` attribute, optionally a dict output (torchvision)."""

    def __init__(self, inner, as_dict=False):
        super().__init__()
        self.inner, self.as_dict = inner, as_dict

    def forward(self, x):
        out = self.inner(x)
        return {"out": out, "aux": out} if self.as_dict else out


# ----------------------------------------------------------------- heads and targets
def test_head_targets_two_channels_are_the_masked_one_hot():
    labels = torch.tensor([[[0, 1], [1, 0]]])
    mask = torch.tensor([[[0.5, 1.0], [0.25, 0.0]]])
    t = head_targets(labels, mask, 2)
    want = torch.stack([(labels == 0).float() * mask, (labels == 1).float() * mask], dim=1)
    assert t.shape == (1, 2, 2, 2) and torch.equal(t, want)
    assert torch.equal(head_targets(labels, mask, 1), labels.float() * mask)


@pytest.mark.parametrize("batch", [2, 4])
def test_standard_trainer_two_channel_head_minimises_softmax_cross_entropy(xy, batch):
    x, y = xy[0][:batch], xy[1][:batch]
    m = NoAttr(unet(2))
    before = copy.deepcopy(m)
    t = Trainer(m, config(method="standard"), device="cpu")
    out = t.train_step(x, y)
    want = F.cross_entropy(before(x), y).item()   # independent: torch's CE on hard labels
    assert abs(out["loss"] - want) <= 1e-5 * max(1.0, want)


@pytest.mark.parametrize("batch", [2, 4])
def test_dale_trainer_two_channel_head(xy, batch):
    x, y = xy[0][:batch], xy[1][:batch]
    t = DaleTrainer(NoAttr(unet(2)), config(feature_module=HEAD), device="cpu")
    out = t.train_step(x, y)
    assert t.head_channels == 2
    assert all(torch.isfinite(torch.tensor(v)) for v in out.values()), out
    s = t.split(x, y, t.head_channels)
    onehot = torch.stack([(y == 0).float(), (y == 1).float()], dim=1)
    assert torch.equal(s.y_fuzzy, onehot * s.fuzzy_mask[:, None])     # Eq. 7, one channel per class
    t.close()


def test_dale_trainer_rejects_a_head_that_does_not_match_num_classes(xy):
    t = DaleTrainer(NoAttr(unet(3)), config(feature_module=HEAD), device="cpu")
    with pytest.raises(ValueError, match="3 logit channels.*num_classes is 2"):
        t.train_step(*xy)
    t.close()


def test_pixel_loss_rejects_a_target_that_would_broadcast():
    logits = torch.randn(2, 2, 4, 4)
    with pytest.raises(ValueError, match=r"`target` must have shape \(2, 2, 4, 4\)"):
        PixelLoss()(logits, torch.rand(2, 4, 4))     # B == C == 2: broadcasting would not fail


def test_dict_output_model_trains_and_a_dict_without_out_is_named(xy):
    t = DaleTrainer(NoAttr(unet(1), as_dict=True), config(feature_module=HEAD), device="cpu")
    out = t.train_step(*xy)
    assert all(torch.isfinite(torch.tensor(v)) for v in out.values()), out
    t.close()

    class Keys(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = unet(1)

        def forward(self, x):
            return {"logits": self.inner(x)}

    with pytest.raises(TypeError, match="dict with keys \\['logits'\\].*'out'"):
        Trainer(Keys(), config(method="standard"), device="cpu").train_step(*xy)


# ----------------------------------------------------------------- images and labels
def test_uint8_images_train_and_evaluate_as_their_float_scaling(xy):
    x, y = xy
    x8 = (x * 255).round().to(torch.uint8)
    xf = x8.float() / 255
    a = Trainer(unet(), config(method="standard"), device="cpu")
    b = Trainer(unet(), config(method="standard"), device="cpu")
    assert a.train_step(x8, y) == b.train_step(xf, y)
    ds8 = torch.utils.data.TensorDataset(x8, y)
    dsf = torch.utils.data.TensorDataset(xf, y)
    assert a.evaluate(ds8) == a.evaluate(dsf)


@pytest.mark.parametrize("bad, err, match", [
    (lambda y: y * 255, ValueError, r"\[0, 255\].*0/255 mask"),
    (lambda y: y - 1, ValueError, r"\[-1, 0\]"),
    (lambda y: y.float() * 0.5, TypeError, "not whole numbers"),
])
@pytest.mark.parametrize("method", ["standard", "dale"])
def test_bad_label_maps_are_named(xy, bad, err, match, method):
    x, y = xy
    t = (Trainer if method == "standard" else DaleTrainer)(unet(), config(method=method), device="cpu")
    with pytest.raises(err, match=match):
        t.train_step(x, bad(y))
    with pytest.raises(err, match=match):
        check_labels(bad(y), 2)


@pytest.mark.parametrize("method", ["standard", "dale"])
def test_whole_number_float_and_bool_label_maps_train_as_integers(xy, method):
    x, y = xy
    cls = Trainer if method == "standard" else DaleTrainer
    ref = cls(unet(), config(method=method), device="cpu").train_step(x, y)
    assert cls(unet(), config(method=method), device="cpu").train_step(x, y.float()) == ref
    assert cls(unet(), config(method=method), device="cpu").train_step(x, y.bool()) == ref


def test_standard_trainer_rejects_a_head_that_does_not_match_num_classes(xy):
    with pytest.raises(ValueError, match="1 logit channels.*num_classes is 3"):
        Trainer(unet(1), config(method="standard", num_classes=3), device="cpu").train_step(*xy)


def test_volumetric_logits_pass_through_predict():
    from dale_ext.train import predict
    m = torch.nn.Conv3d(1, 1, 3, padding=1)
    x = torch.rand(2, 1, 4, 8, 8)
    assert predict(m, x).shape == (2, 4, 8, 8)


def test_images_outside_unit_range_warn_once(xy):
    x, y = xy
    t = DaleTrainer(unet(), config(), device="cpu")
    z = (x - x.mean()) / x.std()                     # z-scored: fuzzy_split would clip it
    with pytest.warns(UserWarning, match="rescale them to \\[0, 1\\]"):
        t.split(z, y, 1)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t.split(z, y, 1)                             # once per trainer
    t.close()


# ----------------------------------------------------------------- the confidence step
def saturated(bias=-30.0):
    m = unet()
    with torch.no_grad():
        m.segmentation_head.bias.fill_(bias)
    return m


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_omega_stays_bounded_and_clean_is_the_gradient_sign_for_tiny_gradients(xy, optimizer):
    """A confidently-background model makes dL_val/domega ~1e-23 at some pixels: in float32 Adam's
    squared gradient underflowed and omega reached ~1e7; SGD's step was lost against 1."""
    x, y = xy
    c = config(omega_optimizer=optimizer)
    t = DaleTrainer(saturated(), c, device="cpu")
    s = t.split(x, y, 1)
    logits, _ = t.forward(s.x_fuzzy)
    conf = t.confidence_step(s, t.pixel_loss(logits.float(), s.y_fuzzy))
    g = conf.gradient.double()
    assert g.abs()[g != 0].min() < 1e-20                      # the regime this test is about
    assert torch.equal(conf.clean, -g > 0)                    # K = 1: omega moved up <=> -g > 0
    if optimizer == "adam":                                  # Adam's first step: lr * sign(-g)
        want = 1 + c.omega_lr * torch.sign(-g)
        assert torch.allclose(conf.omega.double(), want, rtol=0, atol=1e-6)
    else:                                                    # SGD: 1 - lr * g, omega >= 0
        assert torch.allclose(conf.omega.double(), (1 - c.omega_lr * g).clamp(min=0), rtol=0, atol=1e-6)
    out = t.train_step(x, y)
    assert out["omega_mean"] < 1 + c.omega_lr + 1e-6, out
    t.close()


def test_double_backward_confidence_matches_the_jvp(xy, monkeypatch):
    import dale_ext.train.trainer as trainer_module

    calls = []
    real = trainer_module._double_backward
    monkeypatch.setattr(trainer_module, "_double_backward", lambda *a, **k: calls.append(1) or real(*a, **k))
    x, y = xy
    omegas = {}
    for method in ("jvp", "double_backward"):
        t = DaleTrainer(unet(), config(confidence_method=method, omega_optimizer="sgd", omega_lr=1e6), device="cpu")
        s = t.split(x, y, 1)
        logits, _ = t.forward(s.x_fuzzy)
        omegas[method] = t.confidence_step(s, t.pixel_loss(logits.float(), s.y_fuzzy))
        t.close()
        assert len(calls) == (method == "double_backward")     # the setting is honoured
    a, b = omegas["jvp"].gradient, omegas["double_backward"].gradient
    assert torch.allclose(a, b, rtol=1e-3, atol=1e-4 * a.abs().max().item())
    assert a.abs().max() > 0


def test_parameters_frozen_after_the_trainer_was_built(xy):
    t = DaleTrainer(unet(), config(), device="cpu")
    t.train_step(*xy)
    for name, p in t.model.named_parameters():
        if not name.startswith("segmentation_head"):
            p.requires_grad_(False)                  # fine-tune the head only
    frozen = {n: p.detach().clone() for n, p in t.model.named_parameters() if not p.requires_grad}
    out = t.train_step(*xy)
    assert all(torch.isfinite(torch.tensor(v)) for v in out.values()), out
    assert all(torch.equal(p, frozen[n]) for n, p in t.model.named_parameters() if n in frozen)
    t.close()


# ----------------------------------------------------------------- fp16 and checkpoints
def test_fp16_uses_a_grad_scaler_that_is_checkpointed(xy, tmp_path):
    t = Trainer(unet(), config(method="standard", amp="fp16"), device="cpu")
    assert t.scaler is not None and t.scaler.is_enabled()
    before = [p.detach().clone() for p in t.model.parameters()]
    for _ in range(3):
        t.train_step(*xy)
    assert t.scaler.state_dict()["_growth_tracker"] == 3      # three finite steps went through it
    after = list(t.model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before))
    assert all(torch.isfinite(p).all() for p in after)
    path = str(tmp_path / "fp16.pt")
    t.save(path)
    r = Trainer(unet(seed=5), config(method="standard", amp="fp16"), device="cpu")
    r.load(path)
    assert r.scaler.state_dict() == t.scaler.state_dict()
    assert Trainer(unet(), config(method="standard", amp="bf16"), device="cpu").scaler is None
    d = DaleTrainer(unet(), config(amp="fp16"), device="cpu")  # two updates per iteration
    out = d.train_step(*xy)
    assert all(torch.isfinite(torch.tensor(v)) for v in out.values()), out
    assert d.scaler.state_dict()["_growth_tracker"] == 2
    d.close()


def test_checkpoints_load_onto_the_cpu_first(monkeypatch, tmp_path, xy):
    """RNG states must reach Generator.set_state as CPU tensors: the checkpoint is read onto the
    CPU whatever the trainer's device (load_state_dict moves the rest)."""
    import dale_ext.train.trainer as trainer_module

    t = Trainer(unet(), config(method="standard"), device="cpu")
    t.train_step(*xy)
    path = str(tmp_path / "ckpt.pt")
    t.save(path)
    seen = []
    real = trainer_module.load_checkpoint
    monkeypatch.setattr(trainer_module, "load_checkpoint",
                        lambda p, map_location: seen.append(map_location) or real(p, map_location=map_location))
    t.load(path)
    assert seen == ["cpu"]


@pytest.mark.needs_cuda
def test_resume_on_cuda(xy, tmp_path):
    t = DaleTrainer(unet(), config(), device="cuda")
    t.train_step(*xy)
    path = str(tmp_path / "ckpt.pt")
    t.save(path)
    r = DaleTrainer(unet(seed=3), config(), device="cuda")
    r.load(path)
    assert all(torch.equal(a, b) for a, b in zip(r.model.parameters(), t.model.parameters()))
    assert torch.isfinite(torch.tensor(list(r.train_step(*xy).values()))).all()


class DropNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Dropout(0.5))
        self.segmentation_head = torch.nn.Conv2d(8, 1, 1)

    def forward(self, x):
        return self.segmentation_head(self.body(x))


def test_rng_replay_repeats_the_draws_and_leaves_the_stream_as_it_was():
    from dale_ext.train.confidence import RngState

    torch.manual_seed(3)
    rng = RngState("cpu")
    first = torch.rand(5)
    torch.rand(7)                                  # the stream moves on past the replayed draws
    after = torch.get_rng_state()
    with rng.replay():
        again = torch.rand(5)
    assert torch.equal(first, again)
    assert torch.equal(torch.get_rng_state(), after)


def test_train_step_confidence_with_dropout_is_the_meta_gradient_of_its_own_masks(xy, monkeypatch):
    """Through the real train_step, with dropout: the confidence gradient equals an independent
    textbook meta-gradient (one fuzzy forward, its graph for the virtual step and for d/domega)
    computed at the parameters and random state the step's shared fuzzy forward started from.
    A large inner_lr makes the inner step's masks matter."""
    import dale_ext.train.trainer as trainer_module

    x, y = xy
    t = DaleTrainer(DropNet(), config(inner_lr=1.0), device="cpu")
    seen = {}
    real_forward = t.forward
    calls = []

    def forward(inp):
        calls.append(1)
        if len(calls) == 2:   # the shared fuzzy forward (after the non-fuzzy step's)
            seen["params"] = {n: p.detach().clone() for n, p in t.model.named_parameters()}
            seen["rng"] = torch.get_rng_state()
        return real_forward(inp)

    monkeypatch.setattr(t, "forward", forward)
    real_step = trainer_module.DaleTrainer.confidence_step

    def confidence_step(self, s, losses, rng=None):
        conf = real_step(self, s, losses, rng)
        seen["conf"], seen["split"] = conf, s
        return conf

    monkeypatch.setattr(trainer_module.DaleTrainer, "confidence_step", confidence_step)
    torch.manual_seed(21)
    t.train_step(x, y)
    s, m = seen["split"], t.model
    torch.set_rng_state(seen["rng"])
    names = list(seen["params"])
    params = [seen["params"][n].requires_grad_() for n in names]
    call = lambda ps, inp: torch.func.functional_call(m, dict(zip(names, ps)), (inp,))  # noqa: E731
    w = torch.ones_like(s.fuzzy_mask).requires_grad_()
    losses = t.pixel_loss(call(params, s.x_fuzzy).float(), s.y_fuzzy)
    grads = torch.autograd.grad((w * losses).mean(), params, create_graph=True)
    new = [p - 1.0 * g for p, g in zip(params, grads)]
    val = t.pixel_loss(call(new, s.x_nonfuzzy), s.y_nonfuzzy).mean()
    want = torch.autograd.grad(val, w)[0]
    got = seen["conf"].gradient
    assert want.abs().max() > 0
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-4 * want.abs().max().item())
    t.close()


def test_resume_with_dropout_is_bit_identical(tmp_path):
    """The data loader must not draw from the global generator, which dropout uses."""
    train = SyntheticDataset("train", n=12, size=32, seed=3)
    ck = str(tmp_path / "drop.pt")
    torch.manual_seed(5)
    full = DaleTrainer(DropNet(), config(epochs=2), device="cpu")
    full.fit(train, progress=False)
    torch.manual_seed(5)
    killed = DaleTrainer(DropNet(), config(epochs=2), device="cpu")
    killed.fit(train, checkpoint=ck, max_steps=4, progress=False)
    torch.manual_seed(77)                                  # the state must come from the checkpoint
    resumed = DaleTrainer(DropNet(), config(epochs=2), device="cpu")
    resumed.fit(train, checkpoint=ck, resume=True, progress=False)
    for (n, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), n


def test_inductor_dale_step_with_dropout_matches_eager(xy):
    """Compiled with inductor, dropout masks come from torch's generator (fallback_random), so the
    step (and the JVP's replay of the shared forward's masks) equals the eager one."""
    x, y = xy
    out = {}
    for comp in (False, True):
        t = DaleTrainer(DropNet(), config(compile=comp, inner_lr=1.0), device="cpu")
        torch.manual_seed(4)
        out[comp] = t.train_step(x, y)
        t.close()
    for k, v in out[False].items():
        assert abs(out[True][k] - v) <= 1e-5 * max(1.0, abs(v)), (k, out[True][k], v)
