"""Reading single image / mask files into numpy arrays.

Every failure (missing, unreadable, truncated or corrupt file) raises an error whose message
names the file, so a bad sample in a dataset of thousands can be found at once.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

# File types treated as images when listing a folder; anything else (notes, .DS_Store, xlsx
# text annotations in LViT's folders) is not a sample.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif"})


def _open(path: Path) -> Image.Image:
    """Open and fully decode ``path`` (PIL decodes lazily, so truncation shows only on load)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        img = Image.open(path)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"cannot read image file {path}: {err}") from err
    try:
        img.load()  # also closes the file for single-frame images
    except (OSError, SyntaxError, ValueError) as err:
        img.close()
        raise ValueError(f"cannot read image file {path}: {err}") from err
    return img


def read_image(path: str | Path, channels: int = 3) -> np.ndarray:
    """Read an image file as float32 ``(channels, H, W)`` in [0, 1].

    ``channels=3`` converts to RGB, ``channels=1`` to grey (``L``). 16-bit greyscale files are
    scaled by 65535 so that CT exports keep their full range.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    img = _open(Path(path))
    if img.mode in ("I;16", "I;16B", "I;16L", "I") and channels == 1:
        arr = np.asarray(img, dtype=np.float32) / 65535.0
        return np.clip(arr, 0.0, 1.0)[None]
    arr = np.asarray(img.convert("RGB" if channels == 3 else "L"), dtype=np.float32) / 255.0
    return arr.transpose(2, 0, 1).copy() if channels == 3 else arr[None].copy()


def read_mask(path: str | Path) -> np.ndarray:
    """Read a mask file as a 2-D integer array of its stored values.

    Palette (``P``) images give their palette indices, grey images their grey levels (0..255 or
    0..65535), 1-bit images 0/255, colour images their luminance (a binary mask saved as RGB).
    """
    img = _open(Path(path))
    if img.mode == "P":
        return np.asarray(img, dtype=np.int64)
    if img.mode in ("L", "I", "I;16", "I;16B", "I;16L"):
        return np.asarray(img).astype(np.int64)
    return np.asarray(img.convert("L")).astype(np.int64)


def read_binary_mask(path: str | Path, threshold: float = 127) -> np.ndarray:
    """Read a mask and binarise it: ``1`` where the grey level is ``> threshold``.

    Palette masks are converted to grey through their colours first, so a black/white palette
    behaves like a grey mask. ``threshold=127`` removes JPEG ringing around 0/255 masks;
    ``threshold=0`` suits masks stored as 0/1.
    """
    img = _open(Path(path))
    if img.mode in ("I", "I;16", "I;16B", "I;16L"):
        grey = np.asarray(img)
    else:
        grey = np.asarray(img.convert("L"))
    return (grey > threshold).astype(np.int64)


def is_image_file(path: Path) -> bool:
    """A visible regular file with an image extension."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS
