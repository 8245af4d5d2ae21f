"""confidence_gradient: the JVP form equals an independent double backward through one virtual
SGD step (float64, with and without BatchNorm in train mode), and the model is left untouched."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import dale_ext
from dale_ext.train import PixelLoss


def small_net(batchnorm: bool) -> nn.Module:
    layers = [nn.Conv2d(2, 6, 3, padding=1)]
    if batchnorm:
        layers.append(nn.BatchNorm2d(6))
    layers += [nn.Tanh(), nn.Conv2d(6, 1, 1)]
    return nn.Sequential(*layers).double()


def independent_meta_gradient(model, pixel_loss, xf, yf, xn, yn, inner_lr, omega):
    """Textbook meta-gradient on a deep copy: omega -> theta' = theta - lr grad(mean(omega l)),
    L_val(theta'), d/domega by double backward (torch.func.functional_call for theta')."""
    m = copy.deepcopy(model)
    names = [n for n, p in m.named_parameters()]
    params = [p for _, p in m.named_parameters()]
    w = omega.clone().requires_grad_()
    losses = pixel_loss(m(xf), yf)
    grads = torch.autograd.grad((w * losses).mean(), params, create_graph=True)
    new = {n: p - inner_lr * g for n, p, g in zip(names, params, grads)}
    new.update({n: b for n, b in m.named_buffers()})
    val = pixel_loss(torch.func.functional_call(m, new, (xn,)), yn).mean()
    return torch.autograd.grad(val, w)[0]


def snapshot(model):
    return ({n: p.detach().clone() for n, p in model.named_parameters()},
            {n: b.clone() for n, b in model.named_buffers()},
            {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()})


def inputs(gen):
    xf = torch.randn(3, 2, 7, 6, generator=gen, dtype=torch.float64)
    xn = torch.randn(3, 2, 7, 6, generator=gen, dtype=torch.float64)
    yf = (torch.rand(3, 7, 6, generator=gen, dtype=torch.float64) > 0.5).double() * 0.8
    yn = (torch.rand(3, 7, 6, generator=gen, dtype=torch.float64) > 0.5).double()
    return xf, yf, xn, yn


@pytest.mark.parametrize("batchnorm", [False, True])
@pytest.mark.parametrize("omega", ["ones", "random"])
def test_jvp_equals_double_backward_and_model_untouched(gen, batchnorm, omega):
    torch.manual_seed(0)
    model = small_net(batchnorm).train()
    model(torch.randn(4, 2, 5, 5, dtype=torch.float64))          # non-trivial running stats
    for p in model.parameters():
        p.grad = torch.randn_like(p)                               # .grad must survive as is
    xf, yf, xn, yn = inputs(gen)
    loss = PixelLoss()
    w = torch.ones(3, 7, 6, dtype=torch.float64) if omega == "ones" else torch.rand(3, 7, 6, generator=gen, dtype=torch.float64) * 2
    before = snapshot(model)
    g_jvp = dale_ext.confidence_gradient(model, loss, xf, yf, xn, yn, inner_lr=0.3,
                                         omega=None if omega == "ones" else w)
    g_db = dale_ext.confidence_gradient(model, loss, xf, yf, xn, yn, inner_lr=0.3, omega=w, method="double_backward")
    after = snapshot(model)
    want = independent_meta_gradient(model, loss, xf, yf, xn, yn, 0.3, w)
    assert g_jvp.shape == (3, 7, 6)
    torch.testing.assert_close(g_jvp, want, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(g_db, want, rtol=1e-6, atol=1e-12)
    assert g_jvp.abs().max() > 0
    for a, b in zip(before, after):
        for k in a:
            assert (a[k] is None and b[k] is None) or torch.equal(a[k], b[k]), k


def test_eq11_sign_flags_mislabelled_pixels(gen):
    """A pixel whose fuzzy label contradicts the non-fuzzy data gets -dL_val/domega < 0."""
    torch.manual_seed(1)
    model = nn.Conv2d(1, 1, 1).double()
    x = torch.randn(1, 1, 16, 16, generator=gen, dtype=torch.float64)
    y = (x[:, 0] > 0).double()                                     # the rule: label = [x > 0]
    noisy = y.clone()
    flip = torch.zeros_like(y, dtype=torch.bool)
    flip[0, :4] = True
    noisy[flip] = 1 - noisy[flip]
    g = dale_ext.confidence_gradient(model, PixelLoss(), x, noisy, x, y, inner_lr=0.5)
    assert (-g[flip] < 0).float().mean() > 0.8 and (-g[~flip] > 0).float().mean() > 0.8


def test_bad_arguments(gen):
    model = small_net(False)
    xf, yf, xn, yn = inputs(gen)
    with pytest.raises(ValueError, match="inner_lr"):
        dale_ext.confidence_gradient(model, PixelLoss(), xf, yf, xn, yn, inner_lr=0.0)
    with pytest.raises(ValueError, match="method"):
        dale_ext.confidence_gradient(model, PixelLoss(), xf, yf, xn, yn, inner_lr=0.1, method="higher")


def test_dropout_masks_are_shared_by_the_inner_step_and_the_jvp(gen):
    """With dropout in train mode the JVP's forward must see the masks of the forward that gave
    the inner step's per-pixel gradients: under the same seed, the JVP form equals the textbook
    double backward (one fuzzy forward, then the validation forward)."""
    model = nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), nn.Tanh(), nn.Dropout(0.5), nn.Conv2d(6, 1, 1)).double().train()
    xf, yf, xn, yn = inputs(gen)
    loss = PixelLoss()
    w = torch.ones(3, 7, 6, dtype=torch.float64)
    torch.manual_seed(7)
    want = independent_meta_gradient(model, loss, xf, yf, xn, yn, 0.3, w)
    torch.manual_seed(7)
    g_jvp = dale_ext.confidence_gradient(model, loss, xf, yf, xn, yn, inner_lr=0.3)
    torch.manual_seed(7)
    g_db = dale_ext.confidence_gradient(model, loss, xf, yf, xn, yn, inner_lr=0.3, method="double_backward")
    torch.testing.assert_close(g_jvp, want, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(g_db, want, rtol=1e-6, atol=1e-12)
    torch.manual_seed(8)
    other = independent_meta_gradient(model, loss, xf, yf, xn, yn, 0.3, w)
    assert not torch.allclose(other, want)        # the masks matter at this size
