"""Adapters that let DALE train models it did not build.

* :func:`smp_model` builds a model of segmentation_models_pytorch (Iakubovskii, 2019; optional,
  imported only when called). smp models already end in ``segmentation_head`` whose input is
  the decoder output, so only ``feature_module``/``feature_channels`` are added.
* :func:`wrap_model` checks that an arbitrary ``nn.Module`` has the submodule DALE should hook
  and records it on the model.

Unlike the built-in models, smp models do not pad: H and W must be multiples of the encoder's
output stride (32 for most encoders), and some heads upsample (DeepLabV3 x8, DeepLabV3+ x4), so
there the hooked features are coarser than the logits.
"""
from __future__ import annotations

import difflib
import importlib
from types import ModuleType

from torch import nn
from torch.nn.modules.conv import _ConvNd

SMP_PACKAGE = "segmentation_models_pytorch"
SMP_PIP_COMMAND = "pip install segmentation-models-pytorch"
SMP_FEATURE_MODULE = "segmentation_head"


def import_smp() -> ModuleType:
    """Import segmentation_models_pytorch, or raise ImportError saying how to install it."""
    try:
        return importlib.import_module(SMP_PACKAGE)
    except ImportError as error:
        raise ImportError(
            f"smp models need the optional package segmentation_models_pytorch: `{SMP_PIP_COMMAND}` "
            f"(importing it failed: {error})"
        ) from error


def smp_model(
    arch: str,
    encoder_name: str = "resnet34",
    in_channels: int = 3,
    num_classes: int = 1,
    encoder_weights: str | None = None,
    **kwargs,
) -> nn.Module:
    """``segmentation_models_pytorch.create_model(...)`` with DALE's feature attributes set.

    ``encoder_weights`` defaults to None (random init, no download), unlike smp's "imagenet".
    ``activation`` and ``aux_params`` are refused: DALE needs raw logits, and an auxiliary
    classification head makes smp return ``(masks, labels)``, which the trainer would read as
    ``(logits, features)``.
    """
    if kwargs.get("activation") is not None:
        raise ValueError("smp_model: DALE trains on logits; leave `activation` unset (None)")
    if kwargs.get("aux_params") is not None:
        raise ValueError("smp_model: `aux_params` makes smp return (masks, labels); DALE needs logits only")
    smp = import_smp()
    model = smp.create_model(
        arch,
        encoder_name=encoder_name,
        encoder_weights=encoder_weights,
        in_channels=in_channels,
        classes=num_classes,
        **kwargs,
    )
    return wrap_model(model, SMP_FEATURE_MODULE)


def infer_input_channels(module: nn.Module) -> int | None:
    """Input width of the first convolution or linear layer inside ``module``, if any."""
    for layer in module.modules():
        if isinstance(layer, _ConvNd):
            return layer.in_channels
        if isinstance(layer, nn.Linear):
            return layer.in_features
    return None


def _close_matches(name: str, candidates: list[str]) -> list[str]:
    """Similar names, plus those with the same last component (e.g. a missing ``model.`` prefix)."""
    last = name.rsplit(".", 1)[-1]
    same_leaf = [c for c in candidates if c.rsplit(".", 1)[-1] == last]
    similar = difflib.get_close_matches(name, candidates, n=5, cutoff=0.5)
    return list(dict.fromkeys(same_leaf + similar))


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def wrap_model(model: nn.Module, feature_module: str, feature_channels: int | None = None) -> nn.Module:
    """Validate that ``model`` has the submodule ``feature_module`` (a dotted name such as
    ``"decoder.head"``) whose input DALE should capture, and record it on the model.

    Sets ``model.feature_module`` and ``model.feature_channels`` (given, or inferred from the
    first conv/linear layer of that submodule; None when it cannot be inferred) and returns the
    same model. Raises ValueError, listing close matches, when there is no such submodule.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"wrap_model: `model` must be a torch.nn.Module; got {type(model).__name__}")
    if not isinstance(feature_module, str) or not feature_module:
        # The root module's input is the image itself, never the pre-head features.
        raise ValueError(f"wrap_model: `feature_module` must be a non-empty dotted name; got {feature_module!r}")
    if feature_channels is not None and not _is_positive_int(feature_channels):
        raise ValueError(f"wrap_model: `feature_channels` must be a positive int or None; got {feature_channels!r}")
    try:
        target = model.get_submodule(feature_module)
    except AttributeError:
        names = [name for name, _ in model.named_modules() if name]
        matches = _close_matches(feature_module, names)
        if matches:
            hint = f"close matches: {matches}"
        else:
            hint = f"top-level modules: {[name for name, _ in model.named_children()]}"
        owner = type(model).__name__
        raise ValueError(f"wrap_model: {owner} has no submodule named {feature_module!r}; {hint}") from None
    model.feature_module = feature_module
    model.feature_channels = feature_channels if feature_channels is not None else infer_input_channels(target)
    return model
