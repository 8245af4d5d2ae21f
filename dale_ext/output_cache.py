"""The CPU output cache of the compiled ops.

fuzzy_split's four pixel-resolution outputs and class_gaussians' feature gradient are large
and written on every training iteration. With glibc, an allocation that large gets fresh pages
from the kernel on every call (its mmap threshold follows the size of the last freed block, and
a block of exactly that size is still mapped afresh), and the op then pays a page fault and a
page clear for each 4 KiB it writes: on the development VM up to ~19 ms per fuzzy_split call at
B=24, 3x224x224, four times the kernel itself. The ops therefore take these outputs from a
small cache: when the caller frees an output, its block is kept (up to the limit) and the next
call of the same shape reuses it. Blocks under 256 KiB and all CUDA memory are not involved.

The default limit is 256 MiB, or ``DALE_EXT_CPU_CACHE_MB`` (read at the first allocation);
``set_output_cache_limit(0)`` turns the cache off.
"""
from __future__ import annotations

from dale_ext import _C


def output_cache_info() -> dict:
    """``{"held_bytes": ..., "limit_bytes": ...}``: freed blocks kept now, and the most kept."""
    return {"held_bytes": int(_C.output_cache_bytes()), "limit_bytes": int(_C.output_cache_limit())}


def set_output_cache_limit(nbytes: int) -> None:
    """Keep at most ``nbytes`` of freed output blocks (0: keep none). Blocks beyond a lowered
    limit are freed at once."""
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
        raise ValueError(f"set_output_cache_limit: `nbytes` must be an int >= 0; got {nbytes!r}")
    _C.set_output_cache_limit(nbytes)


def empty_output_cache() -> None:
    """Free every cached block (tensors still in use are not affected)."""
    _C.empty_output_cache()
