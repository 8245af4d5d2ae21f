"""The DALE and standard trainers on the synthetic benchmark (CPU): finite losses, omega moves,
L_W trains the model, resume-after-kill is bit-identical, hooks are removed, ablations, options."""
from __future__ import annotations

import pytest
import torch

import dale_ext
from dale_ext.data import SyntheticDataset
from dale_ext.models import UNet
from dale_ext.train import DaleTrainer, TrainConfig, Trainer, build_trainer


@pytest.fixture(scope="module")
def data():
    return SyntheticDataset("train", n=12, size=32, seed=3), SyntheticDataset("test", n=4, size=32, seed=3)


def model(seed=0):
    torch.manual_seed(seed)
    return UNet(3, 1, base_channels=8, depth=2)


def config(**kw):
    base = dict(epochs=1, batch_size=4, patch_size=8, lr=1e-3)
    base.update(kw)
    return TrainConfig(**base)


def batch(ds, n=4):
    return next(iter(torch.utils.data.DataLoader(ds, batch_size=n)))


def test_dale_steps_are_finite_and_omega_moves(data):
    train, _ = data
    t = DaleTrainer(model(), config(), device="cpu")
    x, y = batch(train)
    for _ in range(3):
        out = t.train_step(x, y)
        assert all(torch.isfinite(torch.tensor(v)) for v in out.values()), out
    s = t.split(x, y, 1)
    logits, feats = t.forward(s.x_fuzzy)
    conf = t.confidence_step(s, t.pixel_loss(logits.float(), s.y_fuzzy))
    assert (conf.omega != 1).float().mean() > 0.5          # omega moved for most pixels
    assert 0 < conf.clean.float().mean() < 1                 # both directions occur
    assert torch.equal(conf.clean, -conf.gradient > 0)       # DESIGN departure 3
    t.close()


def test_alignment_loss_sends_gradient_into_the_model(data):
    train, _ = data
    t = DaleTrainer(model(), config(), device="cpu")
    x, y = batch(train)
    s = t.split(x, y, 1)
    _, fn = t.forward(s.x_nonfuzzy)
    logits, ff = t.forward(s.x_fuzzy)
    lw = dale_ext.wasserstein_loss(ff, s.labels, fn.detach(), s.labels, 2, input_weights=s.fuzzy_mask,
                                   target_weights=s.nonfuzzy_mask, perturbation=1e-4)
    t.model.zero_grad()
    lw.backward()
    grads = [p.grad.abs().sum().item() for n, p in t.model.named_parameters()
             if p.grad is not None and not n.startswith("segmentation_head")]
    assert lw.item() > 0 and sum(grads) > 0 and len(grads) > 4
    t.close()


def test_hooks_are_removed_and_model_unchanged_by_capture(data):
    m = model()
    t = DaleTrainer(m, config(), device="cpu")
    assert len(m.segmentation_head._forward_pre_hooks) == 1
    t.close()
    assert len(m.segmentation_head._forward_pre_hooks) == 0


def test_feature_module_errors_and_tuple_models(data):
    with pytest.raises(ValueError, match="feature_module"):
        DaleTrainer(model(), config(feature_module="no_such_module"), device="cpu")

    class TupleModel(torch.nn.Module):  # returns (logits, features) as the authors' models do
        def __init__(self):
            super().__init__()
            self.net = UNet(3, 1, base_channels=8, depth=2)

        def forward(self, x):
            return self.net(x, return_features=True)

    t = DaleTrainer(TupleModel(), config(feature_module=None), device="cpu")
    out = t.train_step(*batch(data[0]))
    assert out["loss_w"] > 0


def test_resume_after_kill_is_bit_identical(data, tmp_path):
    train, _ = data
    ck = str(tmp_path / "run.pt")
    full = DaleTrainer(model(), config(epochs=2), device="cpu")
    full.fit(train, progress=False)
    killed = DaleTrainer(model(), config(epochs=2), device="cpu")
    killed.fit(train, checkpoint=ck, max_steps=4, progress=False)   # 3 steps per epoch: stops mid-epoch 2
    assert killed.step == 4
    resumed = DaleTrainer(model(seed=99), config(epochs=2), device="cpu")  # other init: state must come from disk
    resumed.fit(train, checkpoint=ck, resume=True, progress=False)
    assert resumed.step == full.step == 6
    for (n, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), n
    ckpt = torch.load(ck, weights_only=True)   # a checkpoint is data: loads with weights_only
    assert ckpt["step"] == 6 and ckpt["config"]["method"] == "dale"


def test_resume_with_random_augmentation_is_bit_identical(tmp_path):
    from dale_ext.data import Augment

    def data():
        return SyntheticDataset("train", n=8, size=32, seed=5, transform=Augment(seed=11, p_scale=0.5))

    ck = str(tmp_path / "aug.pt")
    full = Trainer(model(), config(method="standard", epochs=2), device="cpu")
    full.fit(data(), progress=False)
    killed = Trainer(model(), config(method="standard", epochs=2), device="cpu")
    killed.fit(data(), checkpoint=ck, max_steps=3, progress=False)
    assert killed.step == 3                     # really stopped mid-run: the resume has work to do
    resumed = Trainer(model(seed=7), config(method="standard", epochs=2), device="cpu")
    resumed.fit(data(), checkpoint=ck, resume=True, progress=False)
    assert resumed.step == full.step > 3
    for (n, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), n


@pytest.mark.parametrize("ablation", [
    dict(use_entropy=False), dict(use_edges=False), dict(use_omega=False), dict(use_alignment=False),
    dict(omega_steps=2, omega_optimizer="sgd"), dict(loss="gce"), dict(dice_weight=0.5),
    dict(confidence_method="double_backward"), dict(label_mode="weighted"), dict(mask_images=False),
])
def test_switches_run(data, ablation):
    t = DaleTrainer(model(), config(**ablation), device="cpu")
    out = t.train_step(*batch(data[0]))
    assert torch.isfinite(torch.tensor(out["loss"]))
    if not ablation.get("use_alignment", True):
        assert out["loss_w"] == 0.0


def test_standard_and_gce_baselines_learn(data):
    train, test = data
    for loss in ("ce", "gce"):
        t = build_trainer(model(), config(method="standard", loss=loss, epochs=4, lr=3e-3), device="cpu")
        assert type(t) is Trainer
        hist = t.fit(train, progress=False)
        assert hist[-1]["loss"] < hist[0]["loss"]
        m = t.evaluate(test)
        assert set(m) == {"dice", "iou", "hd95", "asd"} and 0 <= m["dice"] <= 1


def test_bf16_autocast_on_cpu(data):
    t = DaleTrainer(model(), config(amp="bf16"), device="cpu")
    out = t.train_step(*batch(data[0]))
    assert torch.isfinite(torch.tensor(out["loss"]))


def test_config_from_dict_is_strict():
    c = TrainConfig.from_dict({"tau": 0.8, "epochs": 3, "lr": 1})
    assert c.tau == 0.8 and isinstance(c.lr, float)
    with pytest.raises(ValueError, match="unknown key"):
        TrainConfig.from_dict({"tua": 0.8})
    with pytest.raises(TypeError, match="`epochs`"):
        TrainConfig.from_dict({"epochs": "3"})
    with pytest.raises(ValueError, match="tau"):
        TrainConfig(tau=2.0)


def test_torch_compile_option_on_cpu(data):
    """config.compile wraps the model in torch.compile; the compiled trainer takes the same first
    step as the eager one (the aot_eager backend keeps this test fast; inductor works the same
    way and takes ~50 s to compile this model on 2 cores)."""
    x, y = batch(data[0])
    eager = Trainer(model(), config(method="standard"), device="cpu")
    compiled = Trainer(model(), config(method="standard", compile="aot_eager"), device="cpu")
    a, b = eager.train_step(x, y), compiled.train_step(x, y)
    assert abs(a["loss"] - b["loss"]) < 1e-4


def test_torch_compile_option_for_dale_on_cpu(data):
    """DALE differentiates the compiled fuzzy forward twice (the inner gradient, then the update):
    this raised (AOTAutograd's donated buffers) until the trainer switched them off; now three
    compiled steps match the eager ones."""
    x, y = batch(data[0])
    eager = DaleTrainer(model(), config(), device="cpu")
    compiled = DaleTrainer(model(), config(compile="aot_eager"), device="cpu")
    # a graph of the same model class compiled after the DALE trainer was built, without its
    # feature hook, and run first: the DALE step must not reuse it
    standard = Trainer(model(), config(method="standard", compile="aot_eager"), device="cpu")
    standard.train_step(x, y)
    for _ in range(3):
        a, b = eager.train_step(x, y), compiled.train_step(x, y)
        for k in a:
            assert abs(a[k] - b[k]) <= 1e-4 * max(1.0, abs(a[k])), (k, a[k], b[k])
    eager.close()
    compiled.close()


@pytest.mark.needs_cuda
def test_dale_steps_on_cuda_match_cpu(data):
    """The whole DALE iteration (split, inner step, confidence, Wasserstein alignment) on the GPU
    takes the CPU's first step (TF32 off, so both run float32 arithmetic), and later steps and the
    fp16/bf16 autocast paths stay finite."""
    x, y = batch(data[0])
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        first = {}
        for device in ("cpu", "cuda"):
            t = DaleTrainer(model(), config(), device=device)
            first[device] = t.train_step(x, y)
            for _ in range(2):
                assert all(torch.isfinite(torch.tensor(v)) for v in t.train_step(x, y).values())
            t.close()
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags
    assert first["cpu"].keys() == first["cuda"].keys()
    for key, want in first["cpu"].items():
        assert abs(first["cuda"][key] - want) <= 1e-3 * max(1.0, abs(want)), (key, first["cuda"][key], want)
    for amp in ("bf16", "fp16"):
        t = DaleTrainer(model(), config(amp=amp), device="cuda")
        out = [t.train_step(x, y) for _ in range(2)]
        assert all(torch.isfinite(torch.tensor(v)) for o in out for v in o.values()), (amp, out)
        t.close()
