"""Training configuration: one dataclass, validated, loadable from a dict (YAML) with unknown
keys and wrong types rejected. Defaults are the paper's (Sec. 4.1): Adam lr 3e-4, batch 24,
tau 0.9, alpha 0.05, K = 1, 16 x 16 patches, omega optimiser lr 0.1."""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field


@dataclass
class TrainConfig:
    method: str = "dale"             # "dale" or "standard"
    num_classes: int = 2             # label classes incl. background; 2 = binary (one logit)
    epochs: int = 50
    batch_size: int = 24
    lr: float = 3e-4                 # Adam, model
    weight_decay: float = 0.0
    seed: int = 0
    # fuzzy split (Eqs. 3-7)
    tau: float = 0.9
    patch_size: int = 16
    bins: int = 256
    label_mode: str = "soft"         # "soft": Eq. 7's M * Y targets; "weighted": Y, masks weight the loss
    mask_images: bool = True         # Eq. 7's M * X inputs (False: plain images; a diagnostic)
    use_entropy: bool = True         # AE  (ablation, Tab. 4)
    use_edges: bool = True           # ER
    # confidence (Eqs. 8-11)
    use_omega: bool = True
    omega_steps: int = 1             # K
    omega_lr: float = 0.1
    omega_optimizer: str = "adam"    # "adam" or "sgd"
    inner_lr: float | None = None    # virtual SGD step; None = lr
    confidence_method: str = "jvp"   # or "double_backward" (a check: another fuzzy forward; one process)
    # calibration (Eqs. 12-15)
    use_alignment: bool = True
    alpha: float = 0.05
    eps_max: float = 1e-3            # perturbation epsilon ~ U(0, eps_max) (Eq. 13)
    ridge: float = 1e-5              # added to both covariances
    min_count: float = 2.0
    # losses
    loss: str = "ce"                 # "ce" (BCE / CE) or "gce"
    gce_q: float = 0.7
    dice_weight: float = 0.0
    # engineering
    amp: str | None = None           # None, "bf16" or "fp16" (autocast)
    compile: bool | str = False      # torch.compile the model (True = inductor, or a backend name);
    #                                  a DALE trainer then resets torch._dynamo and guards on hooks
    grad_clip: float | None = None
    feature_module: str | None = "segmentation_head"  # None: the model returns (logits, features)
    num_workers: int = 0
    checkpoint_every: int = 0        # steps; 0 = at epoch ends only
    extra: dict = field(default_factory=dict)  # free-form notes saved with the run

    def __post_init__(self) -> None:
        checks = [
            (self.method in ("dale", "standard"), "method must be 'dale' or 'standard'"),
            (self.num_classes >= 2, "num_classes must be >= 2"),
            (self.epochs >= 0 and self.batch_size >= 1, "epochs >= 0 and batch_size >= 1"),
            (self.lr > 0 and self.omega_lr > 0, "lr and omega_lr must be > 0"),
            (0.0 <= self.tau <= 1.0, "tau must be in [0, 1]"),
            (self.patch_size >= 1 and 2 <= self.bins <= 65536, "patch_size >= 1, bins in [2, 65536]"),
            (self.use_entropy or self.use_edges, "at least one of use_entropy / use_edges"),
            (self.label_mode in ("soft", "weighted"), "label_mode must be 'soft' or 'weighted'"),
            (self.omega_steps >= 1, "omega_steps (K) must be >= 1"),
            (self.omega_optimizer in ("adam", "sgd"), "omega_optimizer must be 'adam' or 'sgd'"),
            (self.inner_lr is None or self.inner_lr > 0, "inner_lr must be > 0"),
            (self.confidence_method in ("jvp", "double_backward"), "confidence_method: 'jvp' or 'double_backward'"),
            (self.alpha >= 0 and self.eps_max >= 0 and self.ridge >= 0, "alpha, eps_max, ridge must be >= 0"),
            (self.loss in ("ce", "gce") and 0 < self.gce_q <= 1, "loss must be 'ce' or 'gce', gce_q in (0, 1]"),
            (self.amp in (None, "bf16", "fp16"), "amp must be null, 'bf16' or 'fp16'"),
            (self.grad_clip is None or self.grad_clip > 0, "grad_clip must be > 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"TrainConfig: {message}")

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        """Strict: unknown keys and values of the wrong type raise ValueError/TypeError."""
        return dataclass_from_dict(cls, data, "TrainConfig")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def dataclass_from_dict(cls, data: dict, what: str, nested: dict | None = None):
    """``cls(**data)``, strictly: ``data`` must be a mapping, unknown keys raise ValueError and
    values of the wrong type TypeError (messages start with ``what``); ints are accepted for float
    fields. ``nested`` maps a field to the parser of its (mapping) value."""
    if not isinstance(data, dict):
        raise TypeError(f"{what}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{what}: unknown key(s) {unknown}; known: {sorted(names)}")
    kw = {}
    for key, value in data.items():
        if nested and key in nested:
            kw[key] = nested[key](value or {})
        elif not _type_ok(value, hints[key]):
            raise TypeError(f"{what}: `{key}` must be {hints[key]}; got {value!r}")
        else:
            kw[key] = float(value) if hints[key] is float and isinstance(value, int) else value
    return cls(**kw)


def _type_ok(value, hint) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return isinstance(value, hint)
