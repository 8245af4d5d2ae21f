"""Python wrappers of the compiled ops: argument handling, result types, fake kernels, autograd."""
from dale_ext.ops.fuzzy_split import FuzzySplit, fuzzy_split
from dale_ext.ops.wasserstein import ClassGaussians, class_gaussians, gaussian_w2, wasserstein_loss

__all__ = ["ClassGaussians", "FuzzySplit", "class_gaussians", "fuzzy_split", "gaussian_w2", "wasserstein_loss"]
