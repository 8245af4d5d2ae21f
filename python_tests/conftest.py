"""Shared test helpers: device parametrisation (CUDA cases are skipped, never deleted, where no
GPU exists) and seeded random generators."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import pytest
import torch

import dale_ext


def cuda_available() -> bool:
    return torch.cuda.is_available() and dale_ext.cuda_built()


def cpu_and_cuda():
    return ("cpu", pytest.param("cuda", marks=pytest.mark.needs_cuda))


def pytest_collection_modifyitems(config, items):
    if cuda_available():
        return
    reason = "needs a CUDA GPU and a CUDA build of dale_ext (torch.cuda.is_available() is False here)"
    for item in items:
        if "needs_cuda" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def gen():
    """A fresh, seeded torch.Generator per test (tests draw new random inputs, never zeros)."""
    return torch.Generator().manual_seed(1234)


def results_under_each_cpu_isa(code: str, isas=("baseline", "avx2", "best")) -> tuple:
    """Runs ``code`` once per CPU kernel set in ``isas``, each in a fresh process (the set is
    chosen once per process): DALE_EXT_CPU_ISA=baseline forces the portable kernels, =avx2 caps
    them at AVX2 (no AVX-512), =best takes the best this CPU has; on a CPU without a set, the
    cap falls back to the next one down. ``code`` saves its result with
    ``torch.save(result, sys.argv[1])``. Returns the results in the order of ``isas``."""
    outs = []
    with tempfile.TemporaryDirectory() as tmp:
        for isa in isas:
            path = os.path.join(tmp, f"{isa}.pt")
            subprocess.run([sys.executable, "-c", code, path], check=True, env=dict(os.environ, DALE_EXT_CPU_ISA=isa))
            outs.append(torch.load(path))
    return tuple(outs)
