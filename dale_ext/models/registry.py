"""Build a model from its name, for configs and the command line."""
from __future__ import annotations

from typing import Callable

from torch import nn

from dale_ext.models.attention_unet import AttentionUNet
from dale_ext.models.smp import smp_model
from dale_ext.models.unet import UNet
from dale_ext.models.unet_plus_plus import UNetPlusPlus

SMP_PREFIX = "smp:"
SMP_PATTERN = "smp:<arch>[:<encoder>]"

_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "unet": UNet,
    "unet++": UNetPlusPlus,
    "attention_unet": AttentionUNet,
}
_ALIASES: dict[str, str] = {
    "unetplusplus": "unet++",
    "unet_plus_plus": "unet++",
    "nested_unet": "unet++",
    "attunet": "attention_unet",
    "att_unet": "attention_unet",
    "attentionunet": "attention_unet",
}


def available_models() -> list[str]:
    """Canonical built-in names (aliases and ``smp:<arch>[:<encoder>]`` are accepted too)."""
    return sorted(_BUILDERS)


def _canonical(name: str) -> str | None:
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    return key if key in _BUILDERS else None


def build_model(name: str, in_channels: int, num_classes: int, **kwargs) -> nn.Module:
    """Build ``name`` for ``in_channels`` inputs and ``num_classes`` output logits.

    ``kwargs`` go to the constructor (e.g. ``base_channels``, ``depth``, ``upsampling``).
    ``"smp:<arch>[:<encoder>]"`` builds segmentation_models_pytorch's ``<arch>`` (default
    encoder resnet34) through :func:`~dale_ext.models.smp.smp_model`.
    """
    if not isinstance(name, str):
        raise TypeError(f"build_model: `name` must be a str; got {type(name).__name__}")
    if name.strip().lower().startswith(SMP_PREFIX):
        arch, _, encoder = name.strip()[len(SMP_PREFIX) :].partition(":")
        if not arch:
            raise ValueError(f"build_model: smp model names look like {SMP_PATTERN!r}; got {name!r}")
        if encoder:
            kwargs["encoder_name"] = encoder
        return smp_model(arch, in_channels=in_channels, num_classes=num_classes, **kwargs)
    canonical = _canonical(name)
    if canonical is None:
        choices = available_models() + sorted(_ALIASES) + [SMP_PATTERN]
        raise ValueError(f"build_model: unknown model {name!r}; choose one of {choices}")
    return _BUILDERS[canonical](in_channels=in_channels, num_classes=num_classes, **kwargs)
