"""Shared test helpers: device parametrisation (CUDA cases are skipped, never deleted, where no
GPU exists) and seeded random generators."""
from __future__ import annotations

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
