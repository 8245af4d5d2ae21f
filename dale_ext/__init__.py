"""dale_ext: DALE (CVPR 2025, "Minding Fuzzy Regions") for lesion segmentation under noisy labels.

Fused C++/CUDA ops with Python wrappers (``fuzzy_split`` ...), pure-PyTorch references of every op
(``dale_ext.reference``), and, imported on first use, the trainer, models, metrics and data tools.
Importing ``dale_ext`` loads only torch and the compiled extension.
"""
from __future__ import annotations

import importlib

from dale_ext._extension import build_info, cuda_built
from dale_ext.ops import (
    ClassGaussians,
    FuzzySplit,
    class_gaussians,
    fuzzy_split,
    gaussian_w2,
    wasserstein_loss,
)
from dale_ext.output_cache import empty_output_cache, output_cache_info, set_output_cache_limit

__version__ = "0.1.0"

# Heavier parts load on first attribute access, so `import dale_ext` stays light.
_LAZY_MODULES = ("reference", "metrics", "models", "train", "data", "cli")


_LAZY_ATTRIBUTES = {"confidence_gradient": "dale_ext.train.confidence"}


def __getattr__(name: str):
    if name in _LAZY_MODULES:
        return importlib.import_module(f"dale_ext.{name}")
    if name in _LAZY_ATTRIBUTES:
        return getattr(importlib.import_module(_LAZY_ATTRIBUTES[name]), name)
    raise AttributeError(f"module 'dale_ext' has no attribute {name!r}")


__all__ = [
    "ClassGaussians", "FuzzySplit", "class_gaussians", "fuzzy_split", "gaussian_w2", "wasserstein_loss",
    "build_info", "cuda_built", "__version__",
    "empty_output_cache", "output_cache_info", "set_output_cache_limit",
]
