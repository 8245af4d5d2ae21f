"""Features "before the segmentation head" (paper Sec. 3.3), from any model, unmodified.

Either a forward pre-hook on a module named by the user (e.g. ``"segmentation_head"`` for the
built-in models and segmentation_models_pytorch, ``"final_conv"`` for MONAI's BasicUNet), or a
model whose forward returns ``(logits, features)``. The hook is removed by :meth:`close`.
"""
from __future__ import annotations

import torch


class FeatureCapture:
    def __init__(self, model: torch.nn.Module, module_name: str | None):
        self.model, self.module_name = model, module_name
        self.features: torch.Tensor | None = None
        self.enabled = True
        self._handle = None
        if module_name:
            modules = dict(model.named_modules())
            if module_name not in modules:
                close = [n for n in modules if module_name.split(".")[-1] in n][:5]
                raise ValueError(f"feature_module {module_name!r} is not a submodule of "
                                 f"{type(model).__name__}; similar names: {close or list(modules)[:8]}")
            self._handle = modules[module_name].register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        if self.enabled:
            self.features = args[0]

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits, features) of one forward pass."""
        self.features = None
        out = self.model(x)
        if isinstance(out, (tuple, list)):
            return out[0], out[1]
        return out, self.features

    def close(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
