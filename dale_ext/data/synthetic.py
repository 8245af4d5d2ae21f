"""A built-in, download-free noisy-label lesion benchmark that reproduces DALE's premise.

The paper (Sec. 1, 3.1) argues that lesion labels are noisiest in *fuzzy regions*: stretches of
boundary with little contrast, blur and irregular shape, where annotators cannot see the edge.
This generator makes that explicit and measurable. Each image holds a few lesion-like blobs with
irregular (harmonic) outlines and thin protrusions, textured on a textured background. On every
lesion an arc of the boundary is *fuzzy*: there the edge is blurred (a wide transition ramp) and
the lesion fades into the background (reduced contrast). Two masks come with each image:

* ``clean_masks``: the exact ground truth the image was rendered from (for validation/testing);
* ``noisy_masks``: what a tired annotator would draw (for training). The outline is displaced
  by ``delta(x)`` pixels, ``delta = noise_level * scale * (F * (3 b + 1.5 j) + (1 - F) * 0.2 j)``,
  with ``scale = size / 64``, ``F`` the fuzziness of the nearest visible outline, ``b ~ U(-1,
  1)`` a per-lesion bias (dilation when positive, erosion when negative) and ``j`` a smooth
  unit-variance jitter field; each thin protrusion is missed (left out) with probability
  ``noise_level * (0.05 + 0.9 F)``, ``F`` taken at its root; background specks enclosed by the
  noisy outline where the truth is lesion are filled (annotators draw closed outlines).
  Errors therefore concentrate where the image is fuzzy, and the clear parts of the boundary
  stay almost exact.

Images, clean masks and fuzziness depend only on ``(seed, index)`` and the shape parameters, not
on ``noise_level``, and the noise grows with ``noise_level`` (the same random draws are
scaled), so sweeps over the noise level compare like with like. ``noise_level=0`` gives
``noisy_masks == clean_masks``.

Parameters of :func:`make_synthetic`:

* ``n``: number of images.
* ``size``: side length in pixels (square images). Lengths scale with ``size / 64``.
* ``seed``: non-negative int; image ``i`` is drawn from ``numpy.random.default_rng([seed, stream,
  i, k])``, so a sample does not depend on ``n`` or on how many samples precede it.
* ``num_classes``: classes including background. 2 gives binary masks (0/1); more places blobs of
  classes ``1..num_classes-1``, each class with its own colour (8 hues, then they repeat; a
  grey level when ``channels=1``) and texture grain (3 scales, cycling); overlapping blobs are
  painted in order, the later on top.
* ``lesions``: ``(low, high)`` inclusive range of blobs per image.
* ``noise_level``: annotation-noise strength, >= 0 (0 = none, 1 = strong; larger values grow the
  displacement further).
* ``fuzzy_fraction``: share of each lesion's boundary (as an angle about its centre) that is
  fuzzy, in [0, 1].
* ``channels``: 3 (dermoscopy-like RGB) or 1 (CT-like grey).

Outputs (:class:`SyntheticData`, torch tensors): ``images`` (N, C, H, W) float32 in [0, 1];
``clean_masks`` / ``noisy_masks`` (N, H, W) int64; ``noise_masks`` (N, H, W) bool, where noisy !=
clean; ``fuzziness`` (N, H, W) float32 in [0, 1], the map ``F(x) * exp(-dist_to_boundary / (3
scale))`` (``F``: 1 on each lesion's fuzzy arc, 0 off it, blended smoothly between the visible
outlines) that set the contrast loss (lesion opacity times ``1 - 0.8 fuzziness``) when the
image was rendered; ``F`` also set the edge blur (ramp width ``scale * (0.5 + 4 F)`` px).

:class:`SyntheticDataset` wraps one split: ``"train"`` yields the *noisy* masks (what a model is
trained on), ``"val"`` and ``"test"`` the *clean* masks (what it is judged by); each split has
its own random stream, so the splits never share images. ``masks="clean"|"noisy"`` overrides.

Measured by ``python -m dale_ext.data.synthetic`` (``seed=0``, 400 images of 64 x 64, 1..3
lesions, ``fuzzy_fraction=0.5``; see :func:`noise_statistics`):

==============  ===============  ===============  ================  ==================
noise_level     mislabelled px   in 3-px band     in fuzzier half   noisy-vs-clean Dice
==============  ===============  ===============  ================  ==================
0.5             1.4%             99.9%            90.7%             0.942
1.0             2.5%             97.4%            86.5%             0.895
==============  ===============  ===============  ================  ==================

so the noise rate in the fuzzier half of the boundary band is 8-10 times that in the clearer
half, and with ``fuzzy_fraction=0`` almost no noise remains. Generating 400 images of 64 x 64
takes about 1-1.5 s on 2 CPU cores.

The figure ``docs/figures/synthetic_benchmark.png`` (made by :func:`plot_examples`; 5 samples of
96 x 96 at ``noise_level=1.0``) shows, per sample, the image, the clean mask, the noisy mask, the
noise overlaid on the image (red: pixels the annotator added, blue: pixels missed; light line:
true boundary) and the fuzziness map with the true boundary in cyan: the noise sits on the
bright (fuzzy) arcs, where the image edge is faint and blurred, and missed thin protrusions
show as blue spikes there.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset

from dale_ext.data.base import PairTransform

MAX_PROTRUSIONS = 3  # thin protrusion slots per lesion (each present with probability 0.4)

# Lesion colours per class (RGB): distinct hues so multi-class blobs look different.
CLASS_COLOURS = np.array(
    [
        [0.42, 0.26, 0.18],  # brown (class 1, the binary lesion)
        [0.74, 0.22, 0.25],  # red
        [0.30, 0.33, 0.60],  # blue
        [0.22, 0.50, 0.30],  # green
        [0.62, 0.55, 0.15],  # ochre
        [0.16, 0.16, 0.18],  # near black
        [0.58, 0.30, 0.62],  # purple
        [0.25, 0.58, 0.62],  # teal
    ],
    dtype=np.float32,
)
TEXTURE_SIGMAS = (0.7, 1.6, 3.0)  # texture grain per class (px at size 64), cycling

BACKGROUND_RGB = np.array([0.86, 0.66, 0.56], dtype=np.float32)  # skin-like
BACKGROUND_GREY = 0.28  # lung-parenchyma-like for channels=1


@dataclass
class SyntheticData:
    """A generated benchmark; see the module docstring for every field."""

    images: torch.Tensor
    clean_masks: torch.Tensor
    noisy_masks: torch.Tensor
    noise_masks: torch.Tensor
    fuzziness: torch.Tensor
    num_classes: int
    params: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])


# ------------------------------------------------------------------------- random draws
def _draw_params(n: int, seed: int, stream: int, lesions: tuple[int, int], num_classes: int) -> dict[str, np.ndarray]:
    """Per-image scalar parameters, each image from its own generator (fixed draw order)."""
    L, P = lesions[1], MAX_PROTRUSIONS
    keys = ("count", "cx", "cy", "r0", "amp", "phase", "cls", "arc", "bias", "colour",
            "p_on", "p_angle", "p_len", "p_width", "p_tilt", "p_drop", "bg")
    out: dict[str, list] = {k: [] for k in keys}
    for i in range(n):
        rng = np.random.default_rng([seed, stream, i, 0])
        out["count"].append(rng.integers(lesions[0], lesions[1] + 1))
        out["cx"].append(rng.uniform(0.25, 0.75, L))
        out["cy"].append(rng.uniform(0.25, 0.75, L))
        out["r0"].append(rng.uniform(0.12, 0.22, L))
        out["amp"].append(rng.uniform(0.0, 1.0, (L, 5)) * (0.16 / np.arange(2, 7) ** 0.5))
        out["phase"].append(rng.uniform(0.0, 2 * np.pi, (L, 5)))
        out["cls"].append(rng.integers(1, num_classes, L))
        out["arc"].append(rng.uniform(0.0, 2 * np.pi, L))
        out["bias"].append(rng.uniform(-1.0, 1.0, L))
        out["colour"].append(rng.uniform(-1.0, 1.0, (L, 3)))
        out["p_on"].append(rng.uniform(size=(L, P)) < 0.4)
        out["p_angle"].append(rng.uniform(0.0, 2 * np.pi, (L, P)))
        out["p_len"].append(rng.uniform(0.5, 1.0, (L, P)))
        out["p_width"].append(rng.uniform(0.6, 1.2, (L, P)))
        out["p_tilt"].append(rng.uniform(-0.35, 0.35, (L, P)))
        out["p_drop"].append(rng.uniform(size=(L, P)))
        out["bg"].append(rng.uniform(-1.0, 1.0, 3))
    arrays = {k: np.asarray(v) for k, v in out.items()}
    # float32 throughout: halves the work of the per-pixel arithmetic.
    return {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in arrays.items()}


def _draw_fields(indices: range, seed: int, stream: int, size: int, channels: int) -> np.ndarray:
    """White-noise fields per image: shading, texture, jitter, then ``channels`` sensor planes."""
    return np.stack([
        np.random.default_rng([seed, stream, i, 1]).standard_normal((3 + channels, size, size), dtype=np.float32)
        for i in indices
    ])


def _smooth(noise: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-filter each image of ``(N, H, W)`` and rescale to unit standard deviation."""
    out = ndimage.gaussian_filter(noise, sigma=(0, sigma, sigma), mode="reflect")
    return out / (out.std(axis=(1, 2), keepdims=True) + 1e-8)


# ------------------------------------------------------------------------- geometry
def _segment_distance(x, y, x0, y0, x1, y1):
    """Distance from points to segments and the position ``t`` in [0, 1] along each segment."""
    vx, vy = x1 - x0, y1 - y0
    t = np.clip(((x - x0) * vx + (y - y0) * vy) / (vx * vx + vy * vy + 1e-9), 0.0, 1.0)
    return np.hypot(x - x0 - t * vx, y - y0 - t * vy), t


def _arc_weight(cos_delta: np.ndarray, fraction: float) -> np.ndarray:
    """1 on the fuzzy arc (angular distance < pi * fraction from its centre), 0 off it, with a
    smooth 0.3-rad edge so fuzziness fades in along the boundary instead of switching."""
    delta = np.arccos(np.clip(cos_delta, -1.0, 1.0))
    edge = min(0.3, np.pi * fraction, np.pi * (1.0 - fraction))
    if edge <= 0:
        return (delta < np.pi * fraction).astype(np.float32)
    t = np.clip((np.pi * fraction - delta) / (2 * edge) + 0.5, 0.0, 1.0)
    return (t * t * (3 - 2 * t)).astype(np.float32)


def _radius_wave(amp: np.ndarray, phase: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """``sum_k a_k cos(k angle + phi_k)`` for one angle per image (the outline at a protrusion)."""
    k = np.arange(2, 7, dtype=np.float32)
    return (amp * np.cos(k * angle[:, None] + phase)).sum(axis=1)


def _lesion_geometry(p: dict[str, np.ndarray], l: int, size: int, scale: float, fuzzy_fraction: float,
                     noise_level: float, yy: np.ndarray, xx: np.ndarray) -> tuple[np.ndarray, ...]:
    """Signed distance to lesion ``l``'s outline (negative inside), the same without the
    protrusions the annotator missed, and the arc fuzziness; for the images given in ``p``."""
    amp, phase = p["amp"][:, l], p["phase"][:, l]
    cx, cy = p["cx"][:, l] * size, p["cy"][:, l] * size
    r0 = p["r0"][:, l] * size / p["count"] ** 0.25  # blobs shrink a little when there are several
    dx, dy = xx - cx[:, None, None], yy - cy[:, None, None]
    rho = np.hypot(dx, dy)
    z = (dx + 1j * dy) / np.maximum(rho, 1e-6)  # e^{i theta}: harmonics by products, no trig
    zk = z.copy()
    wave, dwave = np.zeros_like(rho), np.zeros_like(rho)
    for k in range(2, 7):  # radius r(theta) = r0 (1 + sum_k a_k cos(k theta + phi_k))
        zk *= z
        term = zk * np.exp(1j * phase[:, k - 2])[:, None, None]
        a = amp[:, k - 2, None, None]
        wave += a * term.real
        dwave -= (k * a) * term.imag
    radius = r0[:, None, None] * (1.0 + wave)
    # Radial gap over sqrt(1 + (r'/r)^2) approximates the Euclidean distance to the outline.
    d_clean = (rho - radius) / np.sqrt(1.0 + (dwave / (1.0 + wave)) ** 2)
    arc = p["arc"][:, l]
    fuzzy = _arc_weight(z.real * np.cos(arc)[:, None, None] + z.imag * np.sin(arc)[:, None, None], fuzzy_fraction)

    d_noisy = d_clean.copy()
    for q in range(MAX_PROTRUSIONS):
        sel = np.flatnonzero(p["p_on"][:, l, q])
        if sel.size == 0:
            continue
        ang = p["p_angle"][sel, l, q]
        root = 0.85 * r0[sel] * (1.0 + _radius_wave(amp[sel], phase[sel], ang))
        x0, y0 = cx[sel] + root * np.cos(ang), cy[sel] + root * np.sin(ang)
        direction = ang + p["p_tilt"][sel, l, q]
        length = p["p_len"][sel, l, q] * r0[sel]
        x1, y1 = x0 + length * np.cos(direction), y0 + length * np.sin(direction)
        dist, t = _segment_distance(xx, yy, *(v[:, None, None] for v in (x0, y0, x1, y1)))
        d_cap = dist - scale * p["p_width"][sel, l, q, None, None] * (1.0 - 0.5 * t)  # tapers
        d_clean[sel] = np.minimum(d_clean[sel], d_cap)
        # The annotator misses a protrusion mostly when it sits on the fuzzy arc.
        arc_w = _arc_weight(np.cos(ang - arc[sel]), fuzzy_fraction)
        kept = p["p_drop"][sel, l, q] >= noise_level * (0.05 + 0.9 * arc_w)
        d_noisy[sel[kept]] = np.minimum(d_noisy[sel[kept]], d_cap[kept])
    return d_clean, d_noisy, fuzzy


def _label_edges(labels: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` bool: pixels whose label differs from a 4-neighbour's (both sides)."""
    edge = np.zeros(labels.shape, bool)
    dv, dh = labels[:, 1:] != labels[:, :-1], labels[:, :, 1:] != labels[:, :, :-1]
    edge[:, 1:] |= dv
    edge[:, :-1] |= dv
    edge[:, :, 1:] |= dh
    edge[:, :, :-1] |= dh
    return edge


def _boundary_distance(labels: np.ndarray) -> np.ndarray:
    """Euclidean distance (px) of every pixel to the nearest label change, per image."""
    out = np.full(labels.shape, np.inf, np.float32)  # an image without any boundary: infinitely far
    for i, edge in enumerate(_label_edges(labels)):
        if edge.any():
            out[i] = ndimage.distance_transform_edt(~edge)
    return out


def _fill_interior_holes(noisy: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """Annotators draw closed outlines: background enclosed by the noisy foreground, where the
    truth is lesion, takes the true label (erosion at a notch between two blobs leaves such
    specks, which no annotator would draw)."""
    fg = noisy > 0
    # No connectivity along the sample axis: each image is filled on its own.
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = ndimage.generate_binary_structure(2, 1)
    holes = ndimage.binary_fill_holes(fg, structure=structure) & ~fg & (clean > 0)
    return np.where(holes, clean, noisy)


def _visible_outline_fuzziness(d_clean: np.ndarray, arc_fuzz: np.ndarray, cls: np.ndarray, scale: float) -> np.ndarray:
    """Arc fuzziness of the nearest *visible* lesion outline, as a smooth per-pixel field.

    A soft-min over lesions of the distance to their outline, where an outline hidden inside a
    lesion painted over it (or inside another lesion of its class) is down-weighted by a soft
    inside-indicator, so seams between overlapping blobs do not count as boundary.
    """
    slots = cls.shape[1]
    order = np.arange(slots)
    same_class = (cls[:, :, None] == cls[:, None, :]) & (order[:, None] != order[None, :])[None]
    covers = ((order[:, None] > order[None, :])[None] | same_class).astype(np.float32)  # [n, m, l]
    log_outside = -np.logaddexp(0.0, -d_clean / scale)  # log sigmoid(d): 0 outside, << 0 inside
    logits = np.einsum("nml,nmhw->nlhw", covers, log_outside) - np.abs(d_clean) / scale
    logits -= logits.max(axis=1, keepdims=True)  # inactive slots hold -inf and get weight 0
    weight = np.exp(logits)
    return ((weight * arc_fuzz).sum(axis=1) / weight.sum(axis=1)).astype(np.float32)


# ------------------------------------------------------------------------- rendering
def _class_appearance(cls: np.ndarray, jitter: np.ndarray, channels: int, num_classes: int) -> np.ndarray:
    """``(N, C)`` lesion colour per image for one lesion slot."""
    if channels == 3:
        return np.clip(CLASS_COLOURS[(cls - 1) % len(CLASS_COLOURS)] + 0.05 * jitter, 0.0, 1.0)
    levels = np.linspace(0.62, 0.92, max(num_classes - 1, 1), dtype=np.float32)
    return np.clip(levels[cls - 1, None] + 0.04 * jitter[:, :1], 0.0, 1.0)


def _render_chunk(p: dict[str, np.ndarray], fields: np.ndarray, size: int, num_classes: int, noise_level: float,
                  fuzzy_fraction: float, channels: int) -> tuple[np.ndarray, ...]:
    n, slots = p["cls"].shape
    scale = size / 64.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    shading = _smooth(fields[:, 0], 8.0 * scale)
    textures = np.stack([_smooth(fields[:, 1], s * scale) for s in TEXTURE_SIGMAS])  # (S, N, H, W)
    jitter = _smooth(fields[:, 2], 2.5 * scale)
    active = np.arange(slots)[None, :] < p["count"][:, None]
    cls = p["cls"]

    # Geometry per lesion slot, computed only for the images where that slot holds a lesion.
    d_clean = np.full((n, slots, size, size), np.inf, np.float32)
    d_noisy = np.full_like(d_clean, np.inf)
    arc_fuzz = np.zeros_like(d_clean)
    for l in range(slots):
        rows = np.flatnonzero(active[:, l])
        sub = {k: v[rows] for k, v in p.items()}
        d_clean[rows, l], d_noisy[rows, l], arc_fuzz[rows, l] = _lesion_geometry(
            sub, l, size, scale, fuzzy_fraction, noise_level, yy, xx)

    clean = np.zeros((n, size, size), np.int64)
    for l in range(slots):  # painter's order: later lesions on top
        clean = np.where(d_clean[:, l] < 0, cls[:, l, None, None], clean)

    fuzzy = _visible_outline_fuzziness(d_clean, arc_fuzz, cls, scale)
    fuzziness = fuzzy * np.exp(-_boundary_distance(clean) / (3.0 * scale))

    if channels == 3:
        bg_colour = BACKGROUND_RGB[None] + 0.04 * p["bg"]
    else:
        bg_colour = BACKGROUND_GREY + 0.04 * p["bg"][:, :1]
    image = bg_colour[:, :, None, None] * (1.0 + 0.08 * shading[:, None]) + 0.02 * textures[0][:, None]
    noisy = np.zeros((n, size, size), np.int64)
    width = scale * (0.5 + 4.0 * fuzzy)  # blurred edge where fuzzy
    contrast = 1.0 - 0.8 * fuzziness  # the lesion fades into the background where fuzzy
    for l in range(slots):
        alpha = contrast / (1.0 + np.exp(np.clip(d_clean[:, l] / width, -30, 30)))  # 0 where no lesion
        colour = _class_appearance(cls[:, l], p["colour"][:, l], channels, num_classes)
        grain = textures[(cls[:, l] - 1) % len(TEXTURE_SIGMAS), np.arange(n)]
        core = np.exp(-np.clip(-d_clean[:, l], 0, None) / (6.0 * scale))  # darker centre, pigment-like
        lesion = colour[:, :, None, None] * (1.0 + 0.12 * grain[:, None] - 0.12 * (1.0 - core[:, None]))
        image = image * (1.0 - alpha[:, None]) + lesion * alpha[:, None]
        # The annotator's outline, displaced by delta mostly on the fuzzy arc (module docstring).
        delta = noise_level * scale * (
            fuzzy * (3.0 * p["bias"][:, l, None, None] + 1.5 * jitter) + (1.0 - fuzzy) * 0.2 * jitter)
        noisy = np.where(d_noisy[:, l] < delta, cls[:, l, None, None], noisy)
    noisy = _fill_interior_holes(noisy, clean)
    image = image + 0.012 * fields[:, 3:]
    return np.clip(image, 0.0, 1.0).astype(np.float32), clean, noisy, fuzziness.astype(np.float32)


def _check_args(n: int, size: int, seed: int, num_classes: int, lesions: Sequence[int], noise_level: float,
                fuzzy_fraction: float, channels: int) -> None:
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if size < 16:
        raise ValueError(f"size must be >= 16, got {size}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (background + lesion), got {num_classes}")
    if len(lesions) != 2 or not 1 <= lesions[0] <= lesions[1]:
        raise ValueError(f"lesions must be (low, high) with 1 <= low <= high, got {lesions}")
    if noise_level < 0:
        raise ValueError(f"noise_level must be >= 0, got {noise_level}")
    if not 0.0 <= fuzzy_fraction <= 1.0:
        raise ValueError(f"fuzzy_fraction must lie in [0, 1], got {fuzzy_fraction}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")


def generate(n: int, *, size: int = 64, seed: int = 0, stream: int = 0, num_classes: int = 2,
             lesions: tuple[int, int] = (1, 3), noise_level: float = 0.5, fuzzy_fraction: float = 0.5,
             channels: int = 3) -> SyntheticData:
    """:func:`make_synthetic` with an explicit random ``stream`` (used to separate splits)."""
    lesions = (int(lesions[0]), int(lesions[1]))
    _check_args(n, size, seed, num_classes, lesions, noise_level, fuzzy_fraction, channels)
    params = _draw_params(n, seed, stream, lesions, num_classes)
    chunk = max(1, 2_000_000 // (size * size * lesions[1]))  # bounds memory, not the result
    parts = []
    for start in range(0, n, chunk):
        idx = range(start, min(n, start + chunk))
        p = {k: v[idx.start: idx.stop] for k, v in params.items()}
        fields = _draw_fields(idx, seed, stream, size, channels)
        parts.append(_render_chunk(p, fields, size, num_classes, noise_level, fuzzy_fraction, channels))
    if parts:
        images, clean, noisy, fuzz = (np.concatenate(x) for x in zip(*parts))
    else:
        images = np.zeros((0, channels, size, size), np.float32)
        clean = noisy = np.zeros((0, size, size), np.int64)
        fuzz = np.zeros((0, size, size), np.float32)
    settings = dict(n=n, size=size, seed=seed, stream=stream, num_classes=num_classes, lesions=lesions,
                    noise_level=noise_level, fuzzy_fraction=fuzzy_fraction, channels=channels)
    return SyntheticData(
        images=torch.from_numpy(images), clean_masks=torch.from_numpy(clean),
        noisy_masks=torch.from_numpy(noisy), noise_masks=torch.from_numpy(noisy != clean),
        fuzziness=torch.from_numpy(fuzz), num_classes=num_classes, params=settings,
    )


def make_synthetic(n: int, size: int = 64, seed: int = 0, num_classes: int = 2, lesions: tuple[int, int] = (1, 3),
                   noise_level: float = 0.5, fuzzy_fraction: float = 0.5, channels: int = 3) -> SyntheticData:
    """Generate ``n`` synthetic lesion images with clean and noisy masks (module docstring)."""
    return generate(n, size=size, seed=seed, stream=0, num_classes=num_classes, lesions=lesions,
                    noise_level=noise_level, fuzzy_fraction=fuzzy_fraction, channels=channels)


# ------------------------------------------------------------------------- dataset
class SyntheticDataset(Dataset):
    """One split of the synthetic benchmark as ``(image (C, H, W), mask (H, W))`` pairs.

    ``split="train"`` yields the noisy masks, ``"val"`` / ``"test"`` the clean ones (override with
    ``masks="clean"|"noisy"``). The splits use different random streams of the same ``seed``.
    ``n`` defaults to 400 / 100 / 100. The full data (including ``noise_masks`` and
    ``fuzziness``) is in ``.data``. Other keywords go to :func:`make_synthetic`.
    """

    STREAMS = {"train": 1, "val": 2, "test": 3}
    DEFAULT_N = {"train": 400, "val": 100, "test": 100}

    def __init__(self, split: str = "train", n: int | None = None, *, size: int | tuple[int, int] = 64,
                 seed: int = 0, masks: str | None = None, transform: PairTransform | None = None,
                 **kwargs: Any) -> None:
        if split not in self.STREAMS:
            raise ValueError(f"split must be one of {list(self.STREAMS)}, got {split!r}")
        if not isinstance(size, int):
            if len(size) != 2 or size[0] != size[1]:
                raise ValueError(f"synthetic images are square; got size={size}")
            size = int(size[0])
        masks = masks or ("noisy" if split == "train" else "clean")
        if masks not in ("clean", "noisy"):
            raise ValueError(f"masks must be 'clean' or 'noisy', got {masks!r}")
        self.split, self.masks, self.transform = split, masks, transform
        self.data = generate(self.DEFAULT_N[split] if n is None else n, size=size, seed=seed,
                             stream=self.STREAMS[split], **kwargs)
        self._masks = self.data.noisy_masks if masks == "noisy" else self.data.clean_masks
        self.ids = [f"synthetic_{split}_{i:05d}" for i in range(len(self.data))]
        self.num_classes = self.data.num_classes

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.data.images[index], self._masks[index]
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return image, mask


# ------------------------------------------------------------------------- measurement
def boundary_band(masks: np.ndarray | torch.Tensor, width: float) -> np.ndarray:
    """Pixels within ``width`` px (Euclidean) of a label change in ``(N, H, W)`` masks; the
    pixels on both sides of a change are at distance 0."""
    return _boundary_distance(np.asarray(masks)) <= width


def noise_statistics(data: SyntheticData, band_width: float = 3.0) -> dict[str, float]:
    """How much label noise there is and where it lies.

    Returns ``noisy_fraction`` (mislabelled share of all pixels), ``in_band_share`` (share of the
    mislabelled pixels within ``band_width`` px of the true boundary), ``fuzzy_half_share``
    (share of the mislabelled pixels that lie in the fuzzier half of that band, the band's
    pixels ranked by ``fuzziness`` per image), ``fuzzy_to_clear_rate`` (noise rate in the
    fuzzier half over that in the clearer half) and ``noisy_vs_clean_dice`` (mean per-image
    foreground Dice of the noisy masks against the clean ones).
    """
    noise = data.noise_masks.numpy()
    fuzz = data.fuzziness.numpy()
    band = boundary_band(data.clean_masks.numpy(), band_width)
    fuzzy_half = np.zeros_like(band)
    for i in range(len(data)):
        where = np.flatnonzero(band[i])
        order = np.argsort(-fuzz[i].ravel()[where], kind="stable")
        fuzzy_half[i].ravel()[where[order[: (len(where) + 1) // 2]]] = True
    clear_half = band & ~fuzzy_half
    fg_clean, fg_noisy = data.clean_masks.numpy() > 0, data.noisy_masks.numpy() > 0
    overlap = (fg_clean & fg_noisy).sum(axis=(1, 2))
    sizes = fg_clean.sum(axis=(1, 2)) + fg_noisy.sum(axis=(1, 2))
    dice = np.where(sizes > 0, 2.0 * overlap / np.maximum(sizes, 1), 1.0)
    total = max(int(noise.sum()), 1)
    rate_fuzzy = noise[fuzzy_half].mean() if fuzzy_half.any() else 0.0
    rate_clear = noise[clear_half].mean() if clear_half.any() else 0.0
    return {
        "noisy_fraction": float(noise.mean()) if noise.size else 0.0,
        "in_band_share": float((noise & band).sum() / total),
        "fuzzy_half_share": float((noise & fuzzy_half).sum() / total),
        "fuzzy_to_clear_rate": float(rate_fuzzy / rate_clear) if rate_clear > 0 else float("nan"),
        "noisy_vs_clean_dice": float(dice.mean()) if dice.size else 1.0,
    }


# ------------------------------------------------------------------------- figure
def plot_examples(data: SyntheticData, path: str | Path, indices: Sequence[int] | None = None) -> Path:
    """Save a grid: per sample (row) image, clean mask, noisy mask, noise overlay, fuzziness.

    Noise overlay: red = labelled lesion by the annotator but background in truth, blue = lesion
    missed by the annotator; the white line is the true boundary. Uses matplotlib's Agg canvas
    directly, so the global backend is left untouched.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    indices = list(range(min(4, len(data)))) if indices is None else list(indices)
    noise_title = "noise: red added, blue missed" + ("\nyellow wrong class" if data.num_classes > 2 else "")
    cols = ["image", "clean mask", "noisy (training) mask", noise_title, "fuzziness"]
    fig = Figure(figsize=(2.3 * len(cols), 2.3 * len(indices) + 0.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(indices), len(cols), squeeze=False)
    # Background black; lesion classes white (binary) or in distinct tab10 colours.
    tab = matplotlib.colormaps["tab10"].colors
    classes = [(1.0, 1.0, 1.0)] if data.num_classes == 2 else [tab[(c - 1) % 10] for c in range(1, data.num_classes)]
    label_cmap = ListedColormap([(0.0, 0.0, 0.0)] + classes)
    for row, i in enumerate(indices):
        img = data.images[i].permute(1, 2, 0).numpy()
        img_rgb = np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img
        clean, noisy = data.clean_masks[i].numpy(), data.noisy_masks[i].numpy()
        edge = _label_edges((clean > 0)[None])[0] & (clean > 0)
        overlay = img_rgb.copy() * 0.6
        overlay[(noisy > 0) & (clean == 0)] = (1.0, 0.1, 0.1)
        overlay[(noisy == 0) & (clean > 0)] = (0.1, 0.4, 1.0)
        overlay[(noisy > 0) & (clean > 0) & (noisy != clean)] = (1.0, 0.8, 0.0)
        overlay[edge] = 0.5 * overlay[edge] + 0.5
        label_kw = dict(cmap=label_cmap, vmin=-0.5, vmax=data.num_classes - 0.5)
        panels = [(img_rgb, {}), (clean, label_kw), (noisy, label_kw), (overlay, {}),
                  (data.fuzziness[i].numpy(), dict(cmap="magma", vmin=0, vmax=1))]
        for col, (arr, kw) in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(arr, interpolation="nearest", **kw)
            if col == 4:
                ax.contour(clean > 0, levels=[0.5], colors="cyan", linewidths=0.6)
            ax.set_xticks([]), ax.set_yticks([])
            if row == 0:
                ax.set_title(cols[col], fontsize=9)
        axes[row, 0].set_ylabel(f"sample {i}", fontsize=9)
    p = data.params
    fig.suptitle(f"synthetic noisy-label benchmark: noise_level={p.get('noise_level')}, "
                 f"fuzzy_fraction={p.get('fuzzy_fraction')}, seed={p.get('seed')}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return path


def _main() -> None:
    import argparse
    import time

    parser = argparse.ArgumentParser(description="Measure the synthetic benchmark and draw its figure.")
    parser.add_argument("--figure", default="docs/figures/synthetic_benchmark.png")
    parser.add_argument("--n", type=int, default=400)
    args = parser.parse_args()
    for level in (0.0, 0.25, 0.5, 1.0):
        t0 = time.perf_counter()
        data = make_synthetic(args.n, noise_level=level)
        dt = time.perf_counter() - t0
        stats = noise_statistics(data)
        print(f"noise_level={level:<5} " + "  ".join(f"{k}={v:.4f}" for k, v in stats.items()) + f"  ({dt:.2f} s)")
    # Larger images and the strongest noise level make the figure readable at a glance.
    print("figure:", plot_examples(make_synthetic(5, size=96, noise_level=1.0), args.figure, indices=range(5)))


if __name__ == "__main__":
    _main()
