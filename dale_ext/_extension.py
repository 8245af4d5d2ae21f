"""Loads the compiled extension, which registers the ops under ``torch.ops.dale_ext``."""
from __future__ import annotations

import torch  # noqa: F401  (libtorch must be loaded before the extension)

from dale_ext import _C


def cuda_built() -> bool:
    """Whether this build of dale_ext contains the CUDA kernels."""
    return bool(_C.cuda_built())


def build_info() -> dict:
    """How the extension was built (CUDA kernels, torch CUDA version, compiler)."""
    return dict(_C.build_info())


def _registered_kernels() -> frozenset[tuple[str, str]]:
    """(op, device type) pairs served by a compiled kernel; read once at import so that the
    wrappers' device checks are plain Python that torch.compile can trace."""
    found = set()
    for schema in torch._C._jit_get_all_schemas():
        if schema.name.startswith("dale_ext::"):
            op = schema.name.split("::", 1)[1]
            for device, key in (("cpu", "CPU"), ("cuda", "CUDA")):
                if torch._C._dispatch_has_kernel_for_dispatch_key(schema.name, key):
                    found.add((op, device))
    return frozenset(found)


_KERNELS = _registered_kernels()


def has_kernel(op: str, device: torch.device) -> bool:
    """Whether ``torch.ops.dale_ext.<op>`` has a compiled kernel for ``device`` (meta tensors are
    served by the registered fake kernels)."""
    return device.type == "meta" or (op, device.type) in _KERNELS
