"""Argument helpers shared by the op wrappers."""
from __future__ import annotations

import numbers
import warnings

import torch

from dale_ext._extension import has_kernel

_warned: set[tuple[str, str]] = set()


_INT64 = (-(2**63), 2**63 - 1)


def _in_int64(value: int, name: str, op: str) -> int:
    """The ops take int64 arguments: a larger Python int is a ValueError naming ``name``."""
    if not _INT64[0] <= value <= _INT64[1]:
        raise ValueError(f"{op}: `{name}` must fit in a signed 64-bit integer; got {value}")
    return value


def pair(value, name: str, op: str) -> tuple[int, int]:
    """An int or a pair of ints -> (a, b); anything else is a TypeError naming ``name``."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return _in_int64(int(value), name, op), _in_int64(int(value), name, op)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value
    ):
        return _in_int64(int(value[0]), name, op), _in_int64(int(value[1]), name, op)
    raise TypeError(f"{op}: `{name}` must be an int or a pair of ints; got {value!r}")


def real(value, name: str, op: str) -> float:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    raise TypeError(f"{op}: `{name}` must be a real number; got {value!r}")


def integer(value, name: str, op: str) -> int:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return _in_int64(int(value), name, op)
    raise TypeError(f"{op}: `{name}` must be an int; got {value!r}")


def device(value, name: str, op: str) -> torch.device:
    """A torch.device or a device string -> torch.device; a TypeError or ValueError naming ``name``."""
    if not isinstance(value, (str, torch.device)):
        raise TypeError(f"{op}: `{name}` must be a device or a device string such as 'cpu'; got {type(value).__name__}")
    try:
        return torch.device(value)
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"{op}: `{name}` must be a device such as 'cpu' or 'cuda:0'; got {value!r}") from e


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
