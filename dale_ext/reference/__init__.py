"""Pure-PyTorch versions of every op: the test oracle, the benchmark baseline, and the fallback
for devices without a compiled kernel. Vectorised: no Python loop over patches or pixels."""
from dale_ext.reference.fuzzy_split import fuzzy_split

__all__ = ["fuzzy_split"]
