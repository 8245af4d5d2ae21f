"""Python wrappers of the compiled ops: argument handling, result types, fake kernels, autograd."""
from dale_ext.ops.fuzzy_split import FuzzySplit, fuzzy_split

__all__ = ["FuzzySplit", "fuzzy_split"]
