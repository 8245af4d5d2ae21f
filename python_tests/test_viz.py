"""dale_ext.viz draws every figure without touching the caller's matplotlib state (backend,
pyplot's open figures) and writes a readable PNG of the expected size."""
from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch

import dale_ext
from dale_ext import viz


@pytest.fixture
def pdf_backend():
    before = matplotlib.get_backend()
    matplotlib.use("pdf")  # a backend the user chose; viz must not switch it
    yield
    matplotlib.use(before)


def read_png(path):
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_figures_leave_the_callers_matplotlib_alone(tmp_path, pdf_backend, gen):
    import matplotlib.pyplot as plt

    open_before = plt.get_fignums()
    image = torch.rand(2, 3, 32, 32, generator=gen)
    label = (torch.rand(2, 32, 32, generator=gen) > 0.5).long()
    s = dale_ext.fuzzy_split(image, label, patch_size=8)
    paths = [
        viz.plot_split(image[0], label[0], s, str(tmp_path / "split.png"), 0.9),
        viz.plot_curves({"a": [{"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": 0.5}]}, str(tmp_path / "c.png")),
        viz.plot_overlays(image, label, {"m": label}, str(tmp_path / "o.png"), n=2),
        viz.plot_omega(image, label, label, s.fuzzy_mask[:, 0], torch.ones(2, 32, 32), str(tmp_path / "w.png"), n=2),
    ]
    assert matplotlib.get_backend() == "pdf"
    assert plt.get_fignums() == open_before
    for p in paths:
        px = read_png(p)
        assert px.ndim == 3 and px.shape[0] > 100 and px.shape[1] > 100
        assert px.std() > 0  # something was drawn
