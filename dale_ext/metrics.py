"""Segmentation metrics as the DALE paper (CVPR 2025) reports them: Dice, IoU/mIoU, HD95, ASD, ASSD.

Inputs are binary masks (numpy arrays or torch tensors on any device, bool or 0/1 numbers, any
number of dims >= 2). Torch tensors are detached and moved to CPU numpy. All results are float64.

Definitions (identical to medpy 0.5's ``medpy.metric.binary`` on non-empty masks)
-------------------------------------------------------------------------------------
Let P be the prediction and R the reference mask.

* ``dice = 2 |P & R| / (|P| + |R|)`` and ``iou = |P & R| / |P | R|`` (Jaccard).
* Surface of a mask M: ``M XOR binary_erosion(M, generate_binary_structure(ndim, connectivity))``
  with scipy's default ``border_value=0``, so foreground touching the image border is surface.
  ``connectivity=1`` is the face neighbourhood (4 in 2-D, 6 in 3-D); ``connectivity=ndim`` the
  full one (8 / 26).
* ``d(P -> R)``: for every surface voxel of P, the Euclidean distance (in physical units when
  ``spacing`` is given) to the nearest surface voxel of R, read from
  ``scipy.ndimage.distance_transform_edt(~surface(R), sampling=spacing)``.
* ``asd = mean(d(P -> R))`` -- one-directional, prediction to reference.
* ``assd = mean(concat(d(P -> R), d(R -> P)))`` -- the mean over the POOLED distances, which
  differs from ``(asd(P, R) + asd(R, P)) / 2`` when the two surfaces have different sizes.
* ``hd95 = percentile(concat(d(P -> R), d(R -> P)), 95)`` (numpy's linear interpolation) -- the
  95th percentile of the POOLED distances of both directions.

How MONAI's HD95 differs: ``monai.metrics.compute_hausdorff_distance(..., percentile=95)`` takes
the 95th percentile of each direction's distances separately and returns the larger of the two,
and by default measures Euclidean distance in pixel units (no spacing). Because medpy (and this
module) pool both directions before taking the percentile, MONAI's value is >= ours and the two
can differ noticeably for asymmetric errors; the numbers are not interchangeable.

``spacing``: a positive float (isotropic) or one positive float per spatial axis (e.g. mm per
voxel). ``None`` means unit spacing (pixel units).

Empty masks (the policy, configurable through ``empty=EmptyPolicy(...)``)
-------------------------------------------------------------------------
medpy raises on empty masks for distances; we return documented finite values instead:

* both empty: Dice = IoU = ``both_empty_overlap`` (default 1.0), and every distance =
  ``both_empty_distance`` (default 0.0) -- nothing to find and nothing found is a perfect answer.
* exactly one empty: Dice = IoU = 0 (their definition), and every distance (including the
  one-directional ASD, whichever side is empty) = ``one_empty_distance``: by default
  ``"diagonal"``, the image diagonal ``sqrt(sum((shape_i * spacing_i) ** 2))``, i.e. the largest
  possible distance within the image, or any finite non-negative float.

Multi-class: ``multiclass_metrics`` scores each class one-vs-rest on integer label maps and
averages over the foreground classes 1..num_classes-1 (class 0 = background is excluded). A class
absent from both maps counts under the both-empty policy. ``miou`` is the paper's mIoU: mean IoU
over foreground classes for label maps, plain IoU for a binary mask.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any, Sequence, Union

import numpy as np

__all__ = [
    "METRIC_NAMES",
    "EmptyPolicy",
    "DEFAULT_EMPTY_POLICY",
    "image_diagonal",
    "dice",
    "iou",
    "hd95",
    "asd",
    "assd",
    "binary_metrics",
    "batch_metrics",
    "multiclass_metrics",
    "miou",
]

METRIC_NAMES: tuple[str, ...] = ("dice", "iou", "hd95", "asd", "assd")

Spacing = Union[None, float, Sequence[float]]


@dataclass(frozen=True)
class EmptyPolicy:
    """What the metrics return when a mask has no foreground (see the module docstring).

    both_empty_overlap: Dice and IoU when prediction and reference are both empty.
    both_empty_distance: HD95/ASD/ASSD when both are empty.
    one_empty_distance: HD95/ASD/ASSD when exactly one is empty: ``"diagonal"`` (the image
        diagonal, physical when spacing is given) or a finite non-negative float.
    """

    both_empty_overlap: float = 1.0
    both_empty_distance: float = 0.0
    one_empty_distance: Union[str, float] = "diagonal"

    def __post_init__(self) -> None:
        _check_finite_non_negative("both_empty_overlap", self.both_empty_overlap)
        _check_finite_non_negative("both_empty_distance", self.both_empty_distance)
        if isinstance(self.one_empty_distance, str):
            if self.one_empty_distance != "diagonal":
                raise ValueError(
                    "EmptyPolicy.one_empty_distance must be 'diagonal' or a finite non-negative "
                    f"float, got {self.one_empty_distance!r}"
                )
        else:
            _check_finite_non_negative("one_empty_distance", self.one_empty_distance)

    def one_empty_value(self, shape: tuple[int, ...], spacing: np.ndarray | None) -> float:
        """The distance returned when exactly one mask is empty, for an image of this shape."""
        if self.one_empty_distance == "diagonal":
            return image_diagonal(shape, spacing)
        return float(self.one_empty_distance)


def _check_finite_non_negative(field: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"EmptyPolicy.{field} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"EmptyPolicy.{field} must be finite and non-negative, got {value!r}")


DEFAULT_EMPTY_POLICY = EmptyPolicy()


def image_diagonal(shape: Sequence[int], spacing: np.ndarray | None = None) -> float:
    """Length of the image diagonal, ``sqrt(sum((shape_i * spacing_i) ** 2))``."""
    extent = np.asarray(shape, dtype=np.float64)
    if spacing is not None:
        extent = extent * spacing
    return float(np.sqrt(np.sum(extent**2)))


# ------------------------------------------------------------------------ input validation
def _to_numpy(x: Any, name: str) -> np.ndarray:
    """numpy view of an array-like; torch tensors (any device) are detached and copied to CPU."""
    torch = sys.modules.get("torch")  # never import torch just to check the type
    if torch is not None and isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()  # numpy has no bfloat16
        return x.numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # e.g. ragged lists
        raise TypeError(f"{name} must be an array or tensor, got {type(x).__name__}") from exc


def _as_binary_mask(x: Any, name: str) -> np.ndarray:
    """Bool mask from bool / 0-1 numeric input; anything else is an error naming ``name``."""
    arr = _to_numpy(x, name)
    if arr.dtype == np.bool_:
        return arr
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"{name} must be a bool or numeric mask, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating) and np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN; a binary mask must hold only 0 and 1")
    not_binary = (arr != 0) & (arr != 1)
    if not_binary.any():
        example = arr[not_binary].flat[0].item()
        raise ValueError(
            f"{name} must be a binary mask (bool or values 0/1), found value {example!r}"
        )
    return arr != 0


def _check_same_shape(pred: np.ndarray, ref: np.ndarray, pred_name: str, ref_name: str) -> None:
    if pred.shape != ref.shape:
        raise ValueError(
            f"{pred_name} and {ref_name} must have the same shape, got {pred_name} "
            f"{tuple(pred.shape)} and {ref_name} {tuple(ref.shape)}"
        )


def _check_min_ndim(arr: np.ndarray, name: str, min_ndim: int, what: str) -> None:
    if arr.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dims ({what}), got shape {arr.shape}")


def _normalize_spacing(spacing: Spacing, ndim: int) -> np.ndarray | None:
    """``None`` or a float64 array with one positive, finite entry per spatial axis."""
    if spacing is None:
        return None
    try:
        values = np.asarray(_to_numpy(spacing, "spacing"), dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"spacing must be a float or a sequence of floats, got {spacing!r}") from exc
    if values.ndim == 0:
        values = np.full(ndim, float(values))
    elif values.ndim != 1 or values.size != ndim:
        raise ValueError(
            f"spacing must be a float or have one entry per spatial axis ({ndim}), "
            f"got {values.size} entries with shape {values.shape}"
        )
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"spacing must be positive and finite, got {values.tolist()}")
    return np.ascontiguousarray(values)


def _check_connectivity(connectivity: int, ndim: int) -> int:
    if isinstance(connectivity, bool) or not isinstance(connectivity, (int, np.integer)):
        raise TypeError(f"connectivity must be an int in [1, {ndim}], got {connectivity!r}")
    if not 1 <= connectivity <= ndim:
        raise ValueError(f"connectivity must be in [1, {ndim}] for {ndim}-D masks, got {connectivity}")
    return int(connectivity)


def _check_empty_policy(empty: Any) -> EmptyPolicy:
    if not isinstance(empty, EmptyPolicy):
        raise TypeError(f"empty must be an EmptyPolicy, got {type(empty).__name__}")
    return empty


def _prepare_pair(pred: Any, ref: Any) -> tuple[np.ndarray, np.ndarray]:
    pred_mask = _as_binary_mask(pred, "pred")
    ref_mask = _as_binary_mask(ref, "ref")
    _check_same_shape(pred_mask, ref_mask, "pred", "ref")
    _check_min_ndim(pred_mask, "pred", 2, "spatial")
    return pred_mask, ref_mask


# ------------------------------------------------------------------------ core computations
def _overlap(pred: np.ndarray, ref: np.ndarray, empty: EmptyPolicy) -> tuple[float, float]:
    """(dice, iou) on validated bool masks, with medpy's arithmetic."""
    intersection = int(np.count_nonzero(pred & ref))
    total = int(np.count_nonzero(pred)) + int(np.count_nonzero(ref))
    if total == 0:
        return float(empty.both_empty_overlap), float(empty.both_empty_overlap)
    union = int(np.count_nonzero(pred | ref))
    return 2.0 * intersection / float(total), float(intersection) / float(union)


def _surface(mask: np.ndarray, connectivity: int) -> np.ndarray:
    """One-voxel border: the voxels removed by one erosion (image border counts as background)."""
    from scipy.ndimage import binary_erosion, generate_binary_structure

    footprint = generate_binary_structure(mask.ndim, connectivity)
    return mask ^ binary_erosion(mask, structure=footprint, iterations=1)


def _directed_distances(
    from_surface: np.ndarray, to_surface: np.ndarray, spacing: np.ndarray | None
) -> np.ndarray:
    """Distance from each voxel of ``from_surface`` to the nearest voxel of ``to_surface``."""
    from scipy.ndimage import distance_transform_edt

    # the EDT measures distance to the nearest zero, hence the inversion
    return distance_transform_edt(~to_surface, sampling=spacing)[from_surface]


def _distances_both_ways(
    pred: np.ndarray, ref: np.ndarray, spacing: np.ndarray | None, connectivity: int
) -> tuple[np.ndarray, np.ndarray]:
    """(d(pred -> ref), d(ref -> pred)) for two non-empty masks."""
    pred_surface = _surface(pred, connectivity)
    ref_surface = _surface(ref, connectivity)
    return (
        _directed_distances(pred_surface, ref_surface, spacing),
        _directed_distances(ref_surface, pred_surface, spacing),
    )


def _empty_distance(
    pred: np.ndarray, ref: np.ndarray, spacing: np.ndarray | None, empty: EmptyPolicy
) -> float | None:
    """The policy's distance if either mask is empty, else ``None`` (compute it for real)."""
    pred_empty, ref_empty = not pred.any(), not ref.any()
    if pred_empty and ref_empty:
        return float(empty.both_empty_distance)
    if pred_empty or ref_empty:
        return empty.one_empty_value(pred.shape, spacing)
    return None


def _binary_metrics_np(
    pred: np.ndarray, ref: np.ndarray, spacing: np.ndarray | None, connectivity: int, empty: EmptyPolicy
) -> dict[str, float]:
    """All five metrics on validated bool masks, sharing one pair of distance transforms."""
    dice_value, iou_value = _overlap(pred, ref, empty)
    result = {"dice": dice_value, "iou": iou_value}
    fallback = _empty_distance(pred, ref, spacing, empty)
    if fallback is not None:
        result.update(hd95=fallback, asd=fallback, assd=fallback)
        return result
    forward, backward = _distances_both_ways(pred, ref, spacing, connectivity)
    pooled = np.concatenate([forward, backward])
    result.update(
        hd95=float(np.percentile(pooled, 95)), asd=float(forward.mean()), assd=float(pooled.mean())
    )
    return result


def _distance_metric(
    pred: Any, ref: Any, spacing: Spacing, connectivity: int, empty: EmptyPolicy, which: str
) -> float:
    pred_mask, ref_mask = _prepare_pair(pred, ref)
    sampling = _normalize_spacing(spacing, pred_mask.ndim)
    connectivity = _check_connectivity(connectivity, pred_mask.ndim)
    empty = _check_empty_policy(empty)
    fallback = _empty_distance(pred_mask, ref_mask, sampling, empty)
    if fallback is not None:
        return fallback
    forward, backward = _distances_both_ways(pred_mask, ref_mask, sampling, connectivity)
    if which == "asd":
        return float(forward.mean())
    pooled = np.concatenate([forward, backward])
    return float(np.percentile(pooled, 95)) if which == "hd95" else float(pooled.mean())


# ------------------------------------------------------------------------ public binary API
def dice(pred: Any, ref: Any, *, empty: EmptyPolicy = DEFAULT_EMPTY_POLICY) -> float:
    """Dice coefficient ``2 |P & R| / (|P| + |R|)``; both empty -> ``empty.both_empty_overlap``."""
    pred_mask, ref_mask = _prepare_pair(pred, ref)
    return _overlap(pred_mask, ref_mask, _check_empty_policy(empty))[0]


def iou(pred: Any, ref: Any, *, empty: EmptyPolicy = DEFAULT_EMPTY_POLICY) -> float:
    """IoU (Jaccard) ``|P & R| / |P | R|``; both empty -> ``empty.both_empty_overlap``."""
    pred_mask, ref_mask = _prepare_pair(pred, ref)
    return _overlap(pred_mask, ref_mask, _check_empty_policy(empty))[1]


def hd95(
    pred: Any, ref: Any, spacing: Spacing = None, connectivity: int = 1, *,
    empty: EmptyPolicy = DEFAULT_EMPTY_POLICY,
) -> float:
    """95th percentile of the pooled surface distances of both directions (medpy's ``hd95``)."""
    return _distance_metric(pred, ref, spacing, connectivity, empty, "hd95")


def asd(
    pred: Any, ref: Any, spacing: Spacing = None, connectivity: int = 1, *,
    empty: EmptyPolicy = DEFAULT_EMPTY_POLICY,
) -> float:
    """Average surface distance from the prediction's surface to the reference's (one-directional)."""
    return _distance_metric(pred, ref, spacing, connectivity, empty, "asd")


def assd(
    pred: Any, ref: Any, spacing: Spacing = None, connectivity: int = 1, *,
    empty: EmptyPolicy = DEFAULT_EMPTY_POLICY,
) -> float:
    """Average symmetric surface distance: mean of the pooled distances of both directions."""
    return _distance_metric(pred, ref, spacing, connectivity, empty, "assd")


def binary_metrics(
    pred: Any, ref: Any, spacing: Spacing = None, connectivity: int = 1, *,
    empty: EmptyPolicy = DEFAULT_EMPTY_POLICY,
) -> dict[str, float]:
    """``{"dice", "iou", "hd95", "asd", "assd"}`` for one pair of binary masks."""
    pred_mask, ref_mask = _prepare_pair(pred, ref)
    sampling = _normalize_spacing(spacing, pred_mask.ndim)
    connectivity = _check_connectivity(connectivity, pred_mask.ndim)
    return _binary_metrics_np(pred_mask, ref_mask, sampling, connectivity, _check_empty_policy(empty))


def batch_metrics(
    pred: Any, ref: Any, spacing: Spacing = None, connectivity: int = 1, *,
    empty: EmptyPolicy = DEFAULT_EMPTY_POLICY,
) -> dict[str, np.ndarray]:
    """Per-sample metrics over a leading batch dim: each value is a float64 array of shape (N,).

    ``pred``/``ref`` have shape (N, *spatial) with at least 2 spatial dims; ``spacing`` and
    ``connectivity`` refer to the spatial dims and apply to every sample.
    """
    pred_masks = _as_binary_mask(pred, "pred")
    ref_masks = _as_binary_mask(ref, "ref")
    _check_same_shape(pred_masks, ref_masks, "pred", "ref")
    _check_min_ndim(pred_masks, "pred", 3, "batch + at least 2 spatial")
    spatial_ndim = pred_masks.ndim - 1
    sampling = _normalize_spacing(spacing, spatial_ndim)
    connectivity = _check_connectivity(connectivity, spatial_ndim)
    empty = _check_empty_policy(empty)
    per_sample = [
        _binary_metrics_np(p, r, sampling, connectivity, empty) for p, r in zip(pred_masks, ref_masks)
    ]
    return {name: np.array([m[name] for m in per_sample], dtype=np.float64) for name in METRIC_NAMES}


# ------------------------------------------------------------------------ multi-class API
def _as_label_map(x: Any, name: str, num_classes: int) -> np.ndarray:
    """Integer label map with values in [0, num_classes); errors name the argument."""
    arr = _to_numpy(x, name)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.int64)
    if np.issubdtype(arr.dtype, np.floating):
        if np.isnan(arr).any():
            raise ValueError(f"{name} contains NaN; a label map must hold integer class ids")
        if np.any(arr != np.round(arr)):
            raise ValueError(f"{name} must hold integer class ids, found non-integer values")
    elif not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must be an integer label map, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        raise ValueError(
            f"{name} values must lie in [0, num_classes={num_classes}), "
            f"got min {arr.min()} and max {arr.max()}"
        )
    return arr


def _check_num_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise TypeError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (background + at least one class), got {num_classes}")
    return int(num_classes)


def multiclass_metrics(
    pred_labels: Any, ref_labels: Any, num_classes: int, spacing: Spacing = None,
    connectivity: int = 1, *, empty: EmptyPolicy = DEFAULT_EMPTY_POLICY,
) -> dict[str, dict[str, Any]]:
    """One-vs-rest metrics for every class of two integer label maps (0 = background).

    Returns ``{"per_class": {name: float64 array (num_classes,)}, "mean": {name: float}}`` where
    ``mean`` averages classes 1..num_classes-1 (background excluded). A class absent from both
    maps is scored by the both-empty policy, from one map by the one-empty policy.
    """
    num_classes = _check_num_classes(num_classes)
    pred_map = _as_label_map(pred_labels, "pred_labels", num_classes)
    ref_map = _as_label_map(ref_labels, "ref_labels", num_classes)
    _check_same_shape(pred_map, ref_map, "pred_labels", "ref_labels")
    _check_min_ndim(pred_map, "pred_labels", 2, "spatial")
    sampling = _normalize_spacing(spacing, pred_map.ndim)
    connectivity = _check_connectivity(connectivity, pred_map.ndim)
    empty = _check_empty_policy(empty)
    per_class_dicts = [
        _binary_metrics_np(pred_map == c, ref_map == c, sampling, connectivity, empty)
        for c in range(num_classes)
    ]
    per_class = {
        name: np.array([m[name] for m in per_class_dicts], dtype=np.float64) for name in METRIC_NAMES
    }
    mean = {name: float(values[1:].mean()) for name, values in per_class.items()}
    return {"per_class": per_class, "mean": mean}


def miou(
    pred: Any, ref: Any, num_classes: int | None = None, *, empty: EmptyPolicy = DEFAULT_EMPTY_POLICY
) -> float:
    """The paper's mIoU: mean IoU over foreground classes 1..num_classes-1 for label maps, or
    plain IoU for binary masks (``num_classes=None``; the same as ``num_classes=2``)."""
    if num_classes is None:
        return iou(pred, ref, empty=empty)
    num_classes = _check_num_classes(num_classes)
    pred_map = _as_label_map(pred, "pred", num_classes)
    ref_map = _as_label_map(ref, "ref", num_classes)
    _check_same_shape(pred_map, ref_map, "pred", "ref")
    _check_min_ndim(pred_map, "pred", 2, "spatial")
    empty = _check_empty_policy(empty)
    ious = [_overlap(pred_map == c, ref_map == c, empty)[1] for c in range(1, num_classes)]
    return float(np.mean(ious))
