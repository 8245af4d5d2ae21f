"""Helpers that write small dataset trees with real image files (Pillow, numpy, h5py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def lesion_pair(h: int, w: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An RGB uint8 image and its boolean mask: a dark ellipse (position from ``seed``) on a
    lighter noisy background, so image and mask agree pixel for pixel."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = rng.uniform(0.35, 0.65) * h, rng.uniform(0.35, 0.65) * w
    mask = ((yy - cy) / (0.25 * h)) ** 2 + ((xx - cx) / (0.3 * w)) ** 2 < 1.0
    img = rng.integers(170, 230, (h, w, 3)).astype(np.uint8)
    img[mask] = rng.integers(30, 80, (int(mask.sum()), 3)).astype(np.uint8)
    return img, mask


def save_rgb(path: Path, img: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return path


def save_grey(path: Path, arr: np.ndarray, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8), mode="L").save(path, **kw)
    return path


def save_mask(path: Path, mask: np.ndarray, **kw) -> Path:
    """A boolean mask stored as 0/255 grey (JPEG, PNG or BMP by the file extension)."""
    return save_grey(path, mask.astype(np.uint8) * 255, **kw)


def write_pairs(image_dir: Path, mask_dir: Path, stems: list[str], *, image_ext: str = ".jpg",
                mask_name: str = "{stem}.png", size: tuple[int, int] = (40, 52), seed: int = 0) -> dict[str, np.ndarray]:
    """Write one image/mask pair per stem; returns the true boolean masks by stem."""
    truth = {}
    for i, stem in enumerate(stems):
        img, mask = lesion_pair(*size, seed + i)
        save_rgb(image_dir / f"{stem}{image_ext}", img)
        save_mask(mask_dir / mask_name.format(stem=stem), mask)
        truth[stem] = mask
    return truth


def corrupt(path: Path) -> Path:
    """Overwrite ``path`` with bytes that are no image (keeps the file name)."""
    path.write_bytes(b"this is not an image" * 10)
    return path


def truncate(path: Path) -> Path:
    """Cut an image file in half (a partial download)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path
