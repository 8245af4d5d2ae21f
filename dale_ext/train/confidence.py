"""The label-confidence gradient of DALE (paper Eqs. 8-11), exact and without copying the model.

Inner objective ``L_in(theta, omega) = mean(omega * l(theta))`` with ``l`` the per-pixel losses of
the fuzzy batch; one plain SGD step ``theta' = theta - inner_lr * grad_theta L_in``; validation
loss ``L_val(theta') = mean(l_val(theta'))`` on the non-fuzzy batch. Then (Eq. 11)

    dL_val/domega_i = -inner_lr / n * < grad L_val(theta'), grad l_i(theta) >,

i.e. one forward-mode JVP of the per-pixel losses along ``grad L_val(theta')``. ``method=
"double_backward"`` differentiates through the virtual step instead (the textbook meta-gradient);
both agree to rounding.

Everything runs through ``torch.func.functional_call`` on detached parameters and *cloned*
buffers, so the model's parameters, buffers (BatchNorm running statistics) and ``.grad`` are
never touched, and BatchNorm in train mode behaves as in a real step (batch statistics).

Dropout: the per-pixel gradients of the inner step come from one forward of the fuzzy batch,
and the JVP runs another; the JVP's forward replays the random state the first one started
from (``RngState``), so both see the same dropout masks (one sub-network, as Eq. 11's products
of gradients assume). Under autocast the first forward runs in reduced precision and the JVP
does not; whether a CUDA dropout kernel then draws the same masks is not checked. A compiled
model must draw its masks from torch's generator (Inductor's ``fallback_random``, which the DALE
trainer sets); generators of other devices (MPS) are not replayed.
"""
from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch.func import functional_call, jvp

PixelLoss = Callable[[torch.Tensor, object], torch.Tensor]


class RngState:
    """The random state of the CPU generator and, for a CUDA ``device``, of that device's: a
    forward pass run under ``replay()`` draws the same dropout masks as the forward that followed
    the capture; the surrounding random stream is left as it was."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.cuda_index = None
        if self.device.type == "cuda":
            self.cuda_index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(self.cuda_index) if self.cuda_index is not None else None

    @contextlib.contextmanager
    def replay(self):
        with torch.random.fork_rng(devices=[] if self.cuda_index is None else [self.cuda_index]):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda, self.cuda_index)
            yield


def _replaying(rng: RngState | None):
    return rng.replay() if rng is not None else contextlib.nullcontext()


def logits_of(output) -> torch.Tensor:
    """A model's logits (B, K, *spatial): the output itself, the first element of
    ``(logits, features)``, or ``output["out"]`` of a dict (torchvision's segmentation models)."""
    if isinstance(output, (tuple, list)) and output:
        output = output[0]
    elif isinstance(output, dict):
        if "out" not in output:
            raise TypeError(f"the model returned a dict with keys {sorted(output)}; expected its logits under "
                            "'out' (as torchvision's segmentation models), a tensor, or (logits, features)")
        output = output["out"]
    if not (torch.is_tensor(output) and output.dim() >= 3):
        what = f"a tensor of shape {tuple(output.shape)}" if torch.is_tensor(output) else type(output).__name__
        raise TypeError(f"the model must return logits (B, K, *spatial) (or (logits, features), or a dict with "
                        f"'out'); got {what}")
    return output


class _Functional:
    """Calls ``model`` with given trainable parameters, its frozen parameters and fresh copies
    of its buffers (so in-place buffer updates never reach the model)."""

    def __init__(self, model: torch.nn.Module):
        self.model = model

    # read from the model on every use: parameters frozen or unfrozen later (a fine-tuning
    # schedule) and buffers replaced by ``model.to(...)`` must be seen
    @property
    def names(self) -> list[str]:
        return [n for n, p in self.model.named_parameters() if p.requires_grad]

    @property
    def frozen(self) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in self.model.named_parameters() if not p.requires_grad}

    @property
    def buffers(self) -> dict[str, torch.Tensor]:
        return dict(self.model.named_buffers())

    def params(self) -> dict[str, torch.Tensor]:
        named = dict(self.model.named_parameters())
        return {n: named[n].detach() for n in self.names}

    def __call__(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        state = {**params, **self.frozen, **{n: b.clone() for n, b in self.buffers.items()}}
        return logits_of(functional_call(self.model, state, (x,)))


def confidence_gradient(model: torch.nn.Module, pixel_loss: PixelLoss, x_fuzzy: torch.Tensor, y_fuzzy,
                        x_nonfuzzy: torch.Tensor, y_nonfuzzy, *, inner_lr: float,
                        omega: torch.Tensor | None = None, method: str = "jvp") -> torch.Tensor:
    """dL_val/domega at ``omega`` (default ones), shaped like ``pixel_loss``'s output on the fuzzy
    batch; see the module docstring. ``model(x)`` returns logits (or ``(logits, features)``),
    ``pixel_loss(logits, y)`` per-pixel losses (no reduction).

    The model is left untouched (parameters, buffers, ``.grad``); BatchNorm may be in train mode.
    """
    if method not in ("jvp", "double_backward"):
        raise ValueError(f"confidence_gradient: `method` must be 'jvp' or 'double_backward'; got {method!r}")
    if not inner_lr > 0:
        raise ValueError(f"confidence_gradient: `inner_lr` must be > 0; got {inner_lr}")
    f = _Functional(model)
    if not f.names:
        raise ValueError("confidence_gradient: the model has no trainable parameters")
    theta = f.params()
    with torch.enable_grad():
        if method == "double_backward":
            return _double_backward(f, theta, pixel_loss, x_fuzzy, y_fuzzy, x_nonfuzzy, y_nonfuzzy, inner_lr, omega)
        theta_req = {n: p.clone().requires_grad_() for n, p in theta.items()}
        rng = RngState(x_fuzzy.device)  # the JVP's forward replays this forward's dropout masks
        losses = pixel_loss(f(theta_req, x_fuzzy), y_fuzzy)
        w = torch.ones_like(losses) if omega is None else omega.detach().to(losses.dtype)
        grads = torch.autograd.grad((w * losses).mean(), list(theta_req.values()))
        return _jvp_step(f, theta, dict(zip(theta, grads)), pixel_loss, x_fuzzy, y_fuzzy, x_nonfuzzy,
                         y_nonfuzzy, inner_lr, losses.numel(), rng=rng)


def _jvp_step(f: _Functional, theta, inner_grads, pixel_loss, x_fuzzy, y_fuzzy, x_nonfuzzy, y_nonfuzzy,
              inner_lr: float, n: int, reduce=None, rng: RngState | None = None) -> torch.Tensor:
    """Given grad_theta L_in at theta: the virtual step, grad L_val(theta') and the JVP. With data
    parallelism, ``reduce`` averages the validation gradient over ranks in place (the inner
    gradient is passed in already averaged) and ``n`` counts the pixels of all ranks. ``rng``:
    the state the fuzzy forward behind ``inner_grads`` started from (replayed for the JVP)."""
    theta_p = {k: (theta[k] - inner_lr * inner_grads[k]).requires_grad_() for k in theta}
    val = pixel_loss(f(theta_p, x_nonfuzzy), y_nonfuzzy).mean()
    grads = list(torch.autograd.grad(val, list(theta_p.values())))
    if reduce is not None:
        reduce(grads)
    v = dict(zip(theta_p, grads))
    with _replaying(rng):
        _, jv = jvp(lambda p: pixel_loss(f(p, x_fuzzy), y_fuzzy), (theta,), (v,))
    return (-inner_lr / n) * jv.detach()


def _double_backward(f: _Functional, theta, pixel_loss, x_fuzzy, y_fuzzy, x_nonfuzzy, y_nonfuzzy, inner_lr, omega,
                     rng: RngState | None = None):
    theta_req = {n: p.clone().requires_grad_() for n, p in theta.items()}
    with _replaying(rng):
        losses = pixel_loss(f(theta_req, x_fuzzy), y_fuzzy)
    w = (torch.ones_like(losses) if omega is None else omega.detach().to(losses.dtype).clone()).requires_grad_()
    grads = torch.autograd.grad((w * losses).mean(), list(theta_req.values()), create_graph=True)
    theta_p = {k: theta_req[k] - inner_lr * g for k, g in zip(theta_req, grads)}
    val = pixel_loss(f(theta_p, x_nonfuzzy), y_nonfuzzy).mean()
    (gw,) = torch.autograd.grad(val, [w])
    return gw.detach()
