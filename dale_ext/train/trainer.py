"""Standard training and DALE (paper Algorithm 1) on any segmentation model.

One DALE iteration, readable against the paper (data flow in DESIGN.md):

    split            fuzzy_split -> M^f, M^n, X^f = M^f X, X^n = M^n X, Y^f, Y^n      Eqs. 3-7
    nonfuzzy_step    logits, F_n = model(X^n); L(logits, Y^n); theta <- theta_n       Eq. 1
    fuzzy forward    logits_f, F_f = model(X^f) at theta_n (shared by the next two)
    confidence_step  g = dL_val/domega (exact, one JVP); K optimiser steps on omega   Eqs. 8-11
                     (init 1, omega >= 0); clean = pixels whose omega moved up
    fuzzy_step       L_W = wasserstein_loss(F_f on clean pixels, F_n.detach(), eps)  Eqs. 12-14
                     L_f = mean(omega* M^f l) + alpha mean(omega* M^f) L_W; theta <- theta_f   Eq. 15

Design notes:
* The statistics of L_W are weighted by the soft masks: the fuzzy side by ``clean * M^f``, the
  non-fuzzy side by ``M^n``, so each Gaussian describes its own region (features of the dimmed
  rest of a masked image are not representative of it).
* Multi-class soft labels are ``M * onehot(Y)`` (cross-entropy then equals ``M * CE``).
* The confidence gradient runs outside autocast, in the model's dtype.
* Randomness is owned: the trainer's generator draws eps; the epoch order comes from
  ``seed`` and the epoch; checkpoints carry every RNG state, so a resumed run continues
  bit-identically on the CPU.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch

from dale_ext.train import distributed as dist_utils
from dale_ext.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from dale_ext.train.confidence import RngState, _double_backward, _Functional, _jvp_step, logits_of
from dale_ext.train.config import TrainConfig
from dale_ext.train.evaluate import evaluate, model_input
from dale_ext.train.features import FeatureCapture
from dale_ext.train.losses import PixelLoss, check_head, check_labels, head_targets, soft_dice_loss


class Split(NamedTuple):
    labels: torch.Tensor          # (B, H, W) hard labels
    fuzzy_mask: torch.Tensor      # (B, H, W) M^f
    nonfuzzy_mask: torch.Tensor   # (B, H, W) M^n
    x_fuzzy: torch.Tensor
    x_nonfuzzy: torch.Tensor
    y_fuzzy: torch.Tensor         # soft targets M^f * Y
    y_nonfuzzy: torch.Tensor


@dataclass
class Confidence:
    omega: torch.Tensor           # omega* (B, H, W)
    clean: torch.Tensor           # bool (B, H, W): omega moved up (at K = 1: -dL_val/domega > 0)
    gradient: torch.Tensor        # dL_val/domega at omega = 1


class Trainer:
    """Standard training: the baseline DALE is compared with (one phase, the pixel loss)."""

    def __init__(self, model: torch.nn.Module, config: TrainConfig, *, device=None,
                 optimizer: torch.optim.Optimizer | None = None):
        self.config = config
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device)
        self.optimizer = optimizer or torch.optim.Adam(self.model.parameters(), lr=config.lr,
                                                       weight_decay=config.weight_decay)
        self.pixel_loss = PixelLoss(config.loss, config.gce_q)
        # fp16 autocast needs loss scaling (small fp16 gradients underflow); bf16 does not
        self.scaler = torch.amp.GradScaler(self.device.type) if config.amp == "fp16" else None
        self.generator = torch.Generator().manual_seed(config.seed)
        self.run = self.model
        # Data parallelism (under torchrun): DDP averages the updates' gradients; each rank sees
        # batch_size / world_size images of every global batch.
        self.distributed = dist_utils.active()
        if self.distributed:
            w = dist_utils.world_size()
            if config.batch_size % w:
                raise ValueError(f"TrainConfig: batch_size ({config.batch_size}, the global batch) must be "
                                 f"divisible by the number of processes ({w})")
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.run = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        # compiled last, around the DDP wrapper (as PyTorch recommends: its DDP optimiser then
        # splits the graph at the gradient buckets)
        backend = "inductor" if config.compile is True else config.compile
        if backend:
            self.run = torch.compile(self.run, backend=backend)
        self.step = self.epoch = self.step_in_epoch = 0
        self.history: list[dict] = []

    # ------------------------------------------------------------------ helpers
    def autocast(self):
        if self.config.amp is None:
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.config.amp == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def targets(self, labels: torch.Tensor, mask: torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor:
        return head_targets(labels, mask, logits.shape[1])

    def seg_loss(self, logits, target, weight=None) -> torch.Tensor:
        pixel = self.pixel_loss(logits.float(), target)
        loss = (pixel if weight is None else pixel * weight).mean()
        if self.config.dice_weight > 0:
            loss = loss + self.config.dice_weight * soft_dice_loss(logits.float(), target)
        return loss

    def update(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)  # clip (and step) on the true gradients
        if self.config.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        if self.scaler is None:
            self.optimizer.step()
        else:
            self.scaler.step(self.optimizer)  # skipped when a gradient is inf/NaN
            self.scaler.update()

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return logits_of(self.run(x))

    # ------------------------------------------------------------------ one iteration
    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        self.model.train()
        images, labels = images.to(self.device), labels.to(self.device)
        labels = check_labels(labels, self.config.num_classes)
        with self.autocast():
            logits = self.logits(model_input(images))
        check_head(logits.shape[1], self.config.num_classes)
        loss = self.seg_loss(logits, self.targets(labels, None, logits))
        self.update(loss)
        return {"loss": loss.item()}

    # ------------------------------------------------------------------ loop
    def epoch_batches(self, n: int, epoch: int) -> list[list[int]]:
        """This process's batches of the epoch: a permutation seeded by (seed, epoch); a last
        batch of one image is dropped (BatchNorm in train mode needs two). Under torchrun,
        DistributedSampler's shard of the epoch in batches of batch_size / world_size."""
        if self.distributed:
            sampler = torch.utils.data.DistributedSampler(range(n), shuffle=True, seed=self.config.seed, drop_last=True)
            sampler.set_epoch(epoch)
            order = list(sampler)
            bs = self.config.batch_size // dist_utils.world_size()
            return [order[i:i + bs] for i in range(0, len(order) - bs + 1, bs)]
        g = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        order = torch.randperm(n, generator=g).tolist()
        bs = self.config.batch_size
        batches = [order[i:i + bs] for i in range(0, n, bs)]
        if batches and len(batches[-1]) < 2 and len(batches) > 1:
            batches.pop()
        return batches

    def fit(self, dataset, epochs: int | None = None, *, val_dataset=None, checkpoint: str | None = None,
            resume: bool = False, max_steps: int | None = None, progress: bool = True,
            on_epoch_end: Callable[[dict], None] | None = None) -> list[dict]:
        """Train for ``epochs`` (config.epochs). With ``checkpoint``, state is saved at epoch
        ends (and every ``config.checkpoint_every`` steps) and, with ``resume``, restored first.
        ``max_steps`` stops early (after saving), as an interrupted run would. Under torchrun only
        rank 0 shows progress, evaluates, logs and writes checkpoints; every rank resumes."""
        epochs = self.config.epochs if epochs is None else epochs
        self._augment_generator = _transform_generator(dataset)
        if resume and checkpoint and os.path.exists(checkpoint):
            self.load(checkpoint)
        main = dist_utils.is_main()
        bar = _progress(progress and main, total=epochs * len(self.epoch_batches(len(dataset), 0)), initial=self.step)
        try:
            while self.epoch < epochs:
                batches = self.epoch_batches(len(dataset), self.epoch)
                # its own generator: a loader draws a base seed, which from the global generator
                # would shift the stream a resumed run continues (dropout masks) by one draw
                loader = torch.utils.data.DataLoader(
                    dataset, batch_sampler=batches[self.step_in_epoch:], num_workers=self.config.num_workers,
                    generator=torch.Generator().manual_seed(self.config.seed * 1_000_003 + self.epoch + 1))
                sums: dict[str, float] = {}
                for images, labels in loader:
                    out = self.train_step(images, labels)
                    for k, v in out.items():
                        sums[k] = sums.get(k, 0.0) + v
                    self.step += 1
                    self.step_in_epoch += 1
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{out['loss']:.4f}")
                    every = self.config.checkpoint_every
                    if checkpoint and every and self.step % every == 0:
                        self.save(checkpoint)
                    if max_steps is not None and self.step >= max_steps:
                        if checkpoint:
                            self.save(checkpoint)
                        return self.history
                record = {"epoch": self.epoch + 1, "step": self.step,
                          **{k: v / max(1, self.step_in_epoch) for k, v in sums.items()}}
                if val_dataset is not None and main:
                    record.update({f"val_{k}": v for k, v in self.evaluate(val_dataset).items()})
                self.epoch += 1
                self.step_in_epoch = 0
                self.history.append(record)
                if on_epoch_end is not None and main:
                    on_epoch_end(record)
                if checkpoint:
                    self.save(checkpoint)
        finally:
            if bar is not None:
                bar.close()
        return self.history

    def evaluate(self, dataset, **kwargs) -> dict[str, float]:
        return evaluate(self.model, dataset, self.config.num_classes, device=self.device, **kwargs)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "rng": rng_state(),
            "step": self.step, "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
            "history": self.history,
            "config": self.config.to_dict(),
        }
        gen = getattr(self, "_augment_generator", None)
        if gen is not None:  # a random augmentation's stream continues where it stopped
            state["augment_generator"] = gen.get_state()
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        set_rng_state(state["rng"])
        self.step, self.epoch, self.step_in_epoch = state["step"], state["epoch"], state["step_in_epoch"]
        self.history = list(state["history"])
        gen = getattr(self, "_augment_generator", None)
        if gen is not None and "augment_generator" in state:
            gen.set_state(state["augment_generator"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])

    def save(self, path: str) -> None:
        """Write a checkpoint (rank 0 only under torchrun; the others wait for it)."""
        if dist_utils.is_main():
            save_checkpoint(path, self.state_dict())
        dist_utils.barrier()

    def load(self, path: str) -> None:
        # onto the CPU: the RNG states must stay CPU ByteTensors (set_state rejects CUDA ones);
        # load_state_dict copies the model's and the optimiser's tensors to their devices
        self.load_state_dict(load_checkpoint(path, map_location="cpu"))

    def close(self) -> None:
        """Release what the trainer attached to the model (nothing for standard training)."""


class DaleTrainer(Trainer):
    """DALE (Algorithm 1): non-fuzzy step, confidence, fuzzy step with distribution alignment."""

    def __init__(self, model: torch.nn.Module, config: TrainConfig, **kwargs):
        super().__init__(model, config, **kwargs)
        if self.distributed and config.confidence_method != "jvp":
            raise ValueError("TrainConfig: confidence_method 'double_backward' (a check of the JVP) runs in one "
                             "process only; use 'jvp' under torchrun")
        self.capture = FeatureCapture(self.model, config.feature_module)
        if config.compile:
            # By default Dynamo does not guard on module hooks: a graph of this model's class
            # compiled without DALE's feature hook (earlier, or later by another trainer or the
            # user) would be reused and capture nothing. Guard on hooks from now on (process-wide)
            # and drop the graphs compiled before, which lack those guards.
            torch._dynamo.config.skip_nnmodule_hook_guards = False
            torch._dynamo.reset()
        self.functional = _Functional(self.model)
        self.head_channels: int | None = None  # the model's logit channels, from its first output
        self._warned_range = False

    def close(self) -> None:
        self.capture.close()

    def logit_channels(self, images: torch.Tensor) -> int:
        """The model's logit channels (1: binary with BCE; C: softmax over C classes), from one
        image through the model in eval mode without gradients, once (the split's targets are
        needed before the step's first forward). Checked against ``num_classes``."""
        if self.head_channels is None:
            was_training = self.model.training
            self.model.eval()
            try:
                with torch.no_grad(), self.autocast():
                    self.capture.features = None
                    out = self.model(model_input(images[:1]))
            finally:
                self.model.train(was_training)
                self.capture.features = None
            k = int(logits_of(out).shape[1])
            check_head(k, self.config.num_classes)
            self.head_channels = k
        return self.head_channels

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        with self.autocast():
            self.capture.features = None
            out = self.run(x)
        if isinstance(out, (tuple, list)):
            return logits_of(out[0]), out[1]
        return logits_of(out), self.capture.features

    # ------------------------------------------------------------------ Eqs. 3-7
    def split(self, images: torch.Tensor, labels: torch.Tensor, channels: int) -> Split:
        """Eqs. 3-7 for a model with ``channels`` logit channels (1: binary targets (B, H, W),
        else one-hot (B, channels, H, W))."""
        from dale_ext import fuzzy_split

        c = self.config
        if images.is_floating_point() and not self._warned_range:
            lo, hi = torch.aminmax(images.detach())
            if lo < -1e-3 or hi > 1 + 1e-3:
                self._warned_range = True
                warnings.warn(f"DaleTrainer: image values span [{float(lo):.3g}, {float(hi):.3g}]; fuzzy_split bins "
                              "grey levels in [0, 1] and clips the rest into the end bins, so the fuzzy split of "
                              "z-scored or HU-valued images is not meaningful: rescale them to [0, 1] (e.g. "
                              "per-image min-max, or a CT window) before training", stacklevel=3)
        fs = fuzzy_split(images, labels, patch_size=c.patch_size, tau=c.tau, bins=c.bins)
        fm, nm = fs.fuzzy_mask, fs.nonfuzzy_mask
        if not (c.use_entropy and c.use_edges):  # ablation (Tab. 4): one criterion only
            fm, nm = _masks_from(fs.entropy if c.use_entropy else fs.edge_ratio, c.tau, c.patch_size, images.shape)
        x = model_input(images)
        soft = c.label_mode == "soft"   # Eq. 7: Y^f = M^f Y; "weighted": hard Y, masks weight the losses
        if not c.mask_images:
            xf, xn = x, x
        elif c.use_entropy and c.use_edges:  # the op's masked images are M^f X and M^n X already
            xf, xn = fs.fuzzy_image, fs.nonfuzzy_image
        else:
            xf, xn = (fm * x).to(x.dtype), (nm * x).to(x.dtype)
        return Split(labels, fm[:, 0], nm[:, 0], xf, xn,
                     head_targets(labels, fm[:, 0] if soft else None, channels),
                     head_targets(labels, nm[:, 0] if soft else None, channels))

    # ------------------------------------------------------------------ Eq. 1
    def nonfuzzy_step(self, s: Split) -> tuple[float, torch.Tensor | None]:
        logits, features = self.forward(s.x_nonfuzzy)
        weight = s.nonfuzzy_mask if self.config.label_mode == "weighted" else None
        loss = self.seg_loss(logits, s.y_nonfuzzy, weight)
        self.update(loss)
        return loss.item(), None if features is None else features.detach()

    # ------------------------------------------------------------------ Eqs. 8-11
    def confidence_step(self, s: Split, fuzzy_losses: torch.Tensor, rng: RngState | None = None) -> Confidence:
        """K optimiser steps on omega along dL_val/domega, each exact (one JVP). ``fuzzy_losses``
        are the per-pixel losses of the shared fuzzy forward (their graph gives the virtual
        step's gradient without another forward); ``rng``, the random state that forward started
        from, is replayed for the JVP's forward so both draw the same dropout masks."""
        c = self.config
        f = self.functional
        params = dict(self.model.named_parameters())
        trainable = [params[n] for n in f.names]
        theta = f.params()
        # omega = 1 + delta, delta optimised in float64 from 0: dL_val/domega is tiny (it carries
        # inner_lr / n; ~1e-23 seen for saturated logits), so in float32 Adam's squared gradient would
        # underflow to 0 and its step blow up to ~1e7, and an SGD step of lr * g would be lost
        # against 1 (omega > 1 then misses most clean pixels); delta keeps the step's sign exactly.
        delta = torch.zeros_like(fuzzy_losses, dtype=torch.float64, requires_grad=True)
        # Adam's eps is ~0 here: with the usual 1e-8 the first step's size would depend on batch
        # and image size instead of being ~lr.
        opt = (torch.optim.Adam([delta], lr=c.omega_lr, eps=1e-30) if c.omega_optimizer == "adam"
               else torch.optim.SGD([delta], lr=c.omega_lr))
        inner_lr = c.inner_lr or c.lr
        first = None
        # with data parallelism the virtual step and L_val are those of the global batch: both
        # gradients are averaged over ranks, and dL_val/domega_i carries 1 / (all ranks' pixels)
        reduce = dist_utils.average_ if self.distributed else None
        n = fuzzy_losses.numel() * dist_utils.world_size()
        self.capture.enabled = False
        try:
            for _ in range(c.omega_steps):
                omega = (1 + delta.detach()).to(fuzzy_losses.dtype)
                if c.confidence_method == "double_backward":  # the check of the JVP (one process)
                    g = _double_backward(f, theta, self.pixel_loss, s.x_fuzzy, s.y_fuzzy, s.x_nonfuzzy,
                                         s.y_nonfuzzy, inner_lr, omega, rng=rng)
                else:
                    inner = list(torch.autograd.grad((omega * fuzzy_losses).mean(), trainable, retain_graph=True))
                    if reduce is not None:
                        reduce(inner)
                    g = _jvp_step(f, theta, dict(zip(f.names, inner)), self.pixel_loss, s.x_fuzzy, s.y_fuzzy,
                                  s.x_nonfuzzy, s.y_nonfuzzy, inner_lr, n, reduce=reduce, rng=rng)
                first = g if first is None else first
                opt.zero_grad(set_to_none=True)
                delta.grad = g.to(delta.dtype)
                opt.step()
                with torch.no_grad():
                    delta.clamp_(min=-1)  # omega >= 0
        finally:
            self.capture.enabled = True
        delta = delta.detach()
        return Confidence((1 + delta).to(fuzzy_losses.dtype), delta > 0, first)

    # ------------------------------------------------------------------ Eqs. 12-15
    def fuzzy_step(self, s: Split, logits: torch.Tensor, features: torch.Tensor | None, fuzzy_losses: torch.Tensor,
                   conf: Confidence | None, features_n: torch.Tensor | None) -> dict[str, float]:
        from dale_ext import wasserstein_loss

        c = self.config
        omega = conf.omega if conf is not None else torch.ones_like(fuzzy_losses)
        weight = omega * s.fuzzy_mask
        loss_seg = (weight * fuzzy_losses).mean()
        if c.dice_weight > 0:
            loss_seg = loss_seg + c.dice_weight * soft_dice_loss(logits.float(), s.y_fuzzy)
        out = {"loss_fuzzy": loss_seg.item(), "loss_w": 0.0}
        loss = loss_seg
        if c.use_alignment and c.alpha > 0:
            if features is None or features_n is None:
                raise RuntimeError("DALE: no features captured; set TrainConfig.feature_module to the module "
                                   "before the segmentation head, or return (logits, features) from the model")
            clean = conf.clean if conf is not None else torch.ones_like(s.fuzzy_mask, dtype=torch.bool)
            size = features.shape[-2:]
            lab = _resize_labels(s.labels, size)
            w_in = _resize_weights(clean.float() * s.fuzzy_mask, size)
            w_t = _resize_weights(s.nonfuzzy_mask, size)
            eps = float(torch.rand((), generator=self.generator)) * c.eps_max
            lw = wasserstein_loss(features.float(), lab, features_n.float(), lab, c.num_classes, input_weights=w_in,
                                  target_weights=w_t, perturbation=eps, eps=c.ridge, min_count=c.min_count,
                                  process_group=True if self.distributed else None)
            loss = loss + c.alpha * weight.mean() * lw
            out["loss_w"] = lw.item()
        self.update(loss)
        return out

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        # the compiled graph's forward and its (lazily compiled) backward both under the switches
        with _compiled_step_config() if self.config.compile else contextlib.nullcontext():
            return self._train_step(images, labels)

    def _train_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        self.model.train()
        images, labels = images.to(self.device), labels.to(self.device)
        labels = check_labels(labels, self.config.num_classes)
        s = self.split(images, labels, self.logit_channels(images))
        loss_n, features_n = self.nonfuzzy_step(s)
        rng = RngState(self.device) if self.config.use_omega else None
        logits_f, features_f = self.forward(s.x_fuzzy)
        fuzzy_losses = self.pixel_loss(logits_f.float(), s.y_fuzzy)
        conf = self.confidence_step(s, fuzzy_losses, rng) if self.config.use_omega else None
        out = self.fuzzy_step(s, logits_f, features_f, fuzzy_losses, conf, features_n)
        out.update(loss=loss_n + out["loss_fuzzy"], loss_nonfuzzy=loss_n)
        if conf is not None:
            out["clean_fraction"] = conf.clean.float().mean().item()
            out["omega_mean"] = conf.omega.mean().item()
        return out


def build_trainer(model: torch.nn.Module, config: TrainConfig, **kwargs) -> Trainer:
    """The trainer for ``config.method``."""
    return (DaleTrainer if config.method == "dale" else Trainer)(model, config, **kwargs)


def _compiled_step_config():
    """Settings for a DALE step through a compiled model (TrainConfig.compile):
    * AOTAutograd must not donate the backward's saved buffers: the confidence step
      differentiates the fuzzy forward's graph twice (inner gradient with retain_graph, then
      the update), and the second backward would raise;
    * Inductor must draw dropout masks from torch's generator (``fallback_random``), or the
      JVP's replay of the shared forward's random state (``RngState``) would not reproduce them."""
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    stack = contextlib.ExitStack()
    if hasattr(functorch_config, "donated_buffer"):
        stack.enter_context(functorch_config.patch(donated_buffer=False))
    stack.enter_context(inductor_config.patch(fallback_random=True))
    return stack


def _masks_from(patch_values: torch.Tensor, tau: float, patch: int, shape) -> tuple[torch.Tensor, torch.Tensor]:
    """Eqs. 5-6 from one criterion (the AE-only / ER-only ablations)."""
    B, _, H, W = shape
    v = patch_values.double().flatten(1)
    lo, hi = v.min(1, keepdim=True).values, v.max(1, keepdim=True).values
    m = torch.where(hi > lo, (v - lo) / torch.where(hi > lo, hi - lo, 1.0), 0.0).view_as(patch_values)
    fm = torch.where(m > tau, 1.0, m).float()
    nm = torch.where(m < tau, 1.0, 1.0 - m).float()
    up = lambda t: t.repeat_interleave(patch, 1)[:, :H].repeat_interleave(patch, 2)[:, :, :W].unsqueeze(1)  # noqa: E731
    return up(fm), up(nm)


def _resize_labels(labels: torch.Tensor, size) -> torch.Tensor:
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    return torch.nn.functional.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()


def _resize_weights(w: torch.Tensor, size) -> torch.Tensor:
    if tuple(w.shape[-2:]) == tuple(size):
        return w
    return torch.nn.functional.interpolate(w[:, None], size=size, mode="area")[:, 0]


def _transform_generator(dataset) -> torch.Generator | None:
    """The torch.Generator of the dataset's random transform (e.g. dale_ext.data.Augment), if any,
    looking through Subset-like wrappers."""
    for _ in range(4):
        gen = getattr(getattr(dataset, "transform", None), "generator", None)
        if isinstance(gen, torch.Generator):
            return gen
        dataset = getattr(dataset, "dataset", None)
        if dataset is None:
            return None
    return None


def _progress(enabled: bool, total: int, initial: int):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, leave=False)

