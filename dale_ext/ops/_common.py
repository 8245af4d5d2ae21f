"""Argument helpers shared by the op wrappers."""
from __future__ import annotations

import numbers
import warnings

import torch

from dale_ext._extension import has_kernel

_warned: set[tuple[str, str]] = set()


def pair(value, name: str, op: str) -> tuple[int, int]:
    """An int or a pair of ints -> (a, b); anything else is a TypeError naming ``name``."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value), int(value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value
    ):
        return int(value[0]), int(value[1])
    raise TypeError(f"{op}: `{name}` must be an int or a pair of ints; got {value!r}")


def real(value, name: str, op: str) -> float:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    raise TypeError(f"{op}: `{name}` must be a real number; got {value!r}")


def integer(value, name: str, op: str) -> int:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    raise TypeError(f"{op}: `{name}` must be an int; got {value!r}")


def tensor(value, name: str, op: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{op}: `{name}` must be a torch.Tensor; got {type(value).__name__}")
    return value


def use_reference(op: str, device: torch.device) -> bool:
    """True when no compiled kernel serves ``device`` (e.g. CUDA tensors with a CPU-only build):
    the wrapper then runs the pure-PyTorch reference, and says so once."""
    if has_kernel(op, device):
        return False
    key = (op, device.type)
    if key not in _warned:
        _warned.add(key)
        warnings.warn(
            f"dale_ext.{op}: no compiled kernel for {device.type} tensors in this build; "
            "using the pure-PyTorch reference (slower).",
            RuntimeWarning,
            stacklevel=3,
        )
    return True
