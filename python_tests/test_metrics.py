"""dale_ext.metrics: agreement with medpy 0.5 (the independent reference) on random 2-D/3-D masks,
numpy and torch inputs, batch and multi-class helpers, the empty-mask policy, bad inputs."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.ndimage import binary_erosion, distance_transform_edt, gaussian_filter

from dale_ext import metrics
from dale_ext.metrics import EmptyPolicy

ATOL = 1e-6
SHAPES = {2: (48, 40), 3: (18, 22, 14)}
SPACINGS = {
    2: [None, 0.7, (1.3, 0.45)],
    3: [None, 2.0, (2.5, 0.8, 1.1)],
}


# ---------------------------------------------------------------- random masks
def random_blobs(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Thresholded smoothed noise: a few irregular blobs, some touching the border."""
    smooth = gaussian_filter(rng.standard_normal(shape), sigma=2.0)
    return smooth > np.quantile(smooth, rng.uniform(0.6, 0.9))


def random_boxes(rng: np.random.Generator, shape: tuple[int, ...], count: int = 3) -> np.ndarray:
    """Union of random axis-aligned rectangles / cuboids."""
    mask = np.zeros(shape, dtype=bool)
    for _ in range(count):
        lo = [rng.integers(0, n - 1) for n in shape]
        hi = [rng.integers(low + 1, n + 1) for low, n in zip(lo, shape)]
        mask[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return mask


def random_mask(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    mask = random_blobs(rng, shape) if rng.random() < 0.6 else random_boxes(rng, shape)
    if not mask.any():  # keep it non-empty: medpy raises on empty masks
        mask[tuple(rng.integers(0, n) for n in shape)] = True
    return mask


def random_pair(seed: int, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """A reference and a prediction that overlaps it partially (perturbed copy or independent)."""
    rng = np.random.default_rng(seed)
    ref = random_mask(rng, shape)
    if rng.random() < 0.5:
        pred = ref ^ (random_boxes(rng, shape, count=2) & (rng.random(shape) < 0.5))
        if not pred.any():
            pred = ref.copy()
    else:
        pred = random_mask(rng, shape)
    return pred, ref


def medpy_all(pred, ref, spacing=None, connectivity=1) -> dict[str, float]:
    binary = pytest.importorskip("medpy.metric.binary")
    return {
        "dice": binary.dc(pred, ref),
        "iou": binary.jc(pred, ref),
        "hd95": binary.hd95(pred, ref, voxelspacing=spacing, connectivity=connectivity),
        "asd": binary.asd(pred, ref, voxelspacing=spacing, connectivity=connectivity),
        "assd": binary.assd(pred, ref, voxelspacing=spacing, connectivity=connectivity),
    }


def assert_close_dicts(actual: dict, expected: dict) -> None:
    assert set(actual) == set(expected)
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], rtol=0, atol=ATOL, err_msg=name)


def spacing_cases():
    for ndim, spacings in SPACINGS.items():
        for spacing in spacings:
            for connectivity in range(1, ndim + 1):
                yield pytest.param(ndim, spacing, connectivity, id=f"{ndim}d-sp{spacing}-c{connectivity}")


# ---------------------------------------------------------------- hand-checked values (no medpy)
def test_hand_computed_values():
    pred = np.zeros((10, 10), dtype=bool)
    ref = np.zeros((10, 10), dtype=bool)
    pred[2, 2] = True
    ref[2, 5] = True  # single pixels are their own surfaces, 3 pixels apart
    assert metrics.dice(pred, ref) == 0.0
    assert metrics.iou(pred, ref) == 0.0
    assert metrics.hd95(pred, ref) == pytest.approx(3.0)
    assert metrics.asd(pred, ref, spacing=(1.0, 2.0)) == pytest.approx(6.0)
    assert metrics.assd(pred, ref, spacing=0.5) == pytest.approx(1.5)

    square = np.zeros((8, 8), dtype=bool)
    square[2:6, 2:6] = True
    half = square.copy()
    half[2:6, 4:6] = False
    assert metrics.dice(half, square) == pytest.approx(2 * 8 / (8 + 16))
    assert metrics.iou(half, square) == pytest.approx(0.5)
    assert metrics.miou(half, square) == pytest.approx(0.5)
    assert metrics.hd95(square, square) == 0.0


def test_asd_is_one_directional_and_assd_pools():
    ref = np.zeros((12, 12), dtype=bool)
    ref[1:11, 1:11] = True
    pred = np.zeros_like(ref)
    pred[5, 5] = True  # one surface pixel far inside ref: d(pred->ref) = 4, d(ref->pred) varies
    assert metrics.asd(pred, ref) == pytest.approx(4.0)
    assert metrics.asd(ref, pred) > 4.0
    forward = np.array([4.0])
    ref_surface = ref ^ np.pad(np.ones((8, 8), bool), 2)
    ys, xs = np.nonzero(ref_surface)
    backward = np.hypot(ys - 5, xs - 5)
    assert metrics.assd(pred, ref) == pytest.approx(np.concatenate([forward, backward]).mean())


# ---------------------------------------------------------------- agreement with medpy
@pytest.mark.parametrize(("ndim", "spacing", "connectivity"), list(spacing_cases()))
def test_matches_medpy(ndim, spacing, connectivity):
    pytest.importorskip("medpy")
    for seed in range(4):
        pred, ref = random_pair(1000 * ndim + seed, SHAPES[ndim])
        expected = medpy_all(pred, ref, spacing, connectivity)
        actual = {
            "dice": metrics.dice(pred, ref),
            "iou": metrics.iou(pred, ref),
            "hd95": metrics.hd95(pred, ref, spacing, connectivity),
            "asd": metrics.asd(pred, ref, spacing, connectivity),
            "assd": metrics.assd(pred, ref, spacing, connectivity),
        }
        assert_close_dicts(actual, expected)
        assert_close_dicts(metrics.binary_metrics(pred, ref, spacing, connectivity), expected)


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    masks=hnp.arrays(np.bool_, st.tuples(st.integers(1, 7), st.integers(1, 7)).map(lambda s: (2, *s))),
    connectivity=st.integers(1, 2),
    spacing=st.one_of(st.none(), st.tuples(st.floats(0.1, 5.0), st.floats(0.1, 5.0))),
)
def test_matches_medpy_on_tiny_masks(masks, connectivity, spacing):
    """Tiny and degenerate masks (single pixels, full images, thin lines, 1-pixel-wide images)."""
    pytest.importorskip("medpy")
    pred, ref = masks
    if not pred.any() or not ref.any():
        return  # medpy raises on empty masks; the policy is tested separately
    assert_close_dicts(metrics.binary_metrics(pred, ref, spacing, connectivity), medpy_all(pred, ref, spacing, connectivity))


def test_hd95_pools_directions_unlike_monai():
    """The docstring's claim: MONAI's max of per-direction 95th percentiles can exceed the pooled one.

    pred = ref + a small far-away blob: 8 of pred's 124 surface pixels (6.5 %) are far from ref,
    but only 8 of the 240 pooled distances (3.3 %), so the pooled 95th percentile stays at 0."""
    ref = np.zeros((64, 64), dtype=bool)
    ref[2:32, 2:32] = True
    pred = ref.copy()
    pred[55:58, 55:58] = True
    surfaces = [m ^ binary_erosion(m) for m in (pred, ref)]
    forward = distance_transform_edt(~surfaces[1])[surfaces[0]]
    backward = distance_transform_edt(~surfaces[0])[surfaces[1]]
    monai_style = max(np.percentile(forward, 95), np.percentile(backward, 95))
    assert metrics.hd95(pred, ref) == 0.0
    assert monai_style > 20.0


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.int64, torch.float32, torch.float16])
def test_torch_inputs_match_medpy(dtype):
    pytest.importorskip("medpy")
    pred, ref = random_pair(7, SHAPES[2])
    actual = metrics.binary_metrics(torch.from_numpy(pred).to(dtype), torch.from_numpy(ref).to(dtype), (0.9, 1.7))
    assert_close_dicts(actual, medpy_all(pred, ref, (0.9, 1.7)))


def test_numeric_numpy_inputs_match_bool():
    pred, ref = random_pair(11, SHAPES[3])
    expected = metrics.binary_metrics(pred, ref, 1.5)
    for dtype in (np.uint8, np.int32, np.float64):
        assert metrics.binary_metrics(pred.astype(dtype), ref.astype(dtype), [1.5] * 3) == expected


def test_results_are_python_floats():
    pred, ref = random_pair(3, SHAPES[2])
    assert all(type(v) is float for v in metrics.binary_metrics(pred, ref).values())
    assert type(metrics.hd95(pred, ref)) is float


# ---------------------------------------------------------------- batch and multi-class
@pytest.mark.parametrize("spacing", [None, (2.0, 0.5)])
def test_batch_metrics_match_medpy_loop(spacing):
    pytest.importorskip("medpy")
    pairs = [random_pair(200 + i, SHAPES[2]) for i in range(5)]
    preds = np.stack([p for p, _ in pairs])
    refs = np.stack([r for _, r in pairs])
    actual = metrics.batch_metrics(torch.from_numpy(preds), torch.from_numpy(refs), spacing)
    for name in metrics.METRIC_NAMES:
        assert actual[name].shape == (5,) and actual[name].dtype == np.float64
    for i, (pred, ref) in enumerate(pairs):
        assert_close_dicts({k: v[i] for k, v in actual.items()}, medpy_all(pred, ref, spacing))


def test_batch_metrics_with_empty_samples_use_policy():
    pred, ref = random_pair(5, SHAPES[3])
    preds = np.stack([pred, np.zeros_like(pred), np.zeros_like(pred)])
    refs = np.stack([ref, ref, np.zeros_like(ref)])
    actual = metrics.batch_metrics(preds, refs, spacing=(1.0, 2.0, 3.0), connectivity=3)
    diagonal = math.sqrt(18**2 + 44**2 + 42**2)
    np.testing.assert_allclose(actual["dice"][1:], [0.0, 1.0])
    np.testing.assert_allclose(actual["hd95"][1:], [diagonal, 0.0])
    np.testing.assert_allclose(actual["asd"][0], metrics.asd(pred, ref, (1.0, 2.0, 3.0), 3))


def random_label_map(rng: np.random.Generator, shape: tuple[int, ...], num_classes: int) -> np.ndarray:
    """Labels from the argmax of smoothed noise: contiguous regions of every class."""
    noise = gaussian_filter(rng.standard_normal((num_classes, *shape)), sigma=(0, *[2.0] * len(shape)))
    return noise.argmax(axis=0)


@pytest.mark.parametrize(("ndim", "spacing"), [(2, None), (2, (0.8, 1.6)), (3, 1.5)])
def test_multiclass_matches_medpy_per_class(ndim, spacing):
    pytest.importorskip("medpy")
    rng = np.random.default_rng(300 + ndim)
    num_classes = 4
    ref = random_label_map(rng, SHAPES[ndim], num_classes)
    pred = np.where(rng.random(ref.shape) < 0.1, rng.integers(0, num_classes, ref.shape), ref)
    result = metrics.multiclass_metrics(torch.from_numpy(pred), ref, num_classes, spacing)
    for c in range(num_classes):
        expected = medpy_all(pred == c, ref == c, spacing)
        assert_close_dicts({k: v[c] for k, v in result["per_class"].items()}, expected)
    for name in metrics.METRIC_NAMES:
        assert result["mean"][name] == pytest.approx(result["per_class"][name][1:].mean(), abs=ATOL)
    assert metrics.miou(pred, ref, num_classes) == pytest.approx(result["mean"]["iou"], abs=ATOL)


def test_multiclass_absent_class_uses_policy_and_excludes_background():
    ref = np.zeros((16, 16), dtype=np.int64)
    ref[4:10, 4:10] = 1
    pred = ref.copy()
    pred[0, 0] = 3  # class 3 only in the prediction, class 2 in neither
    result = metrics.multiclass_metrics(pred, ref, num_classes=4)
    np.testing.assert_allclose(result["per_class"]["dice"][1:], [1.0, 1.0, 0.0])
    np.testing.assert_allclose(result["per_class"]["hd95"][1:], [0.0, 0.0, math.hypot(16, 16)])
    assert result["mean"]["iou"] == pytest.approx(2 / 3)
    assert metrics.miou(pred, ref, 4) == pytest.approx(2 / 3)


def test_miou_binary_equals_iou_and_two_class_miou():
    pred, ref = random_pair(21, SHAPES[2])
    assert metrics.miou(pred, ref) == metrics.iou(pred, ref)
    assert metrics.miou(pred.astype(np.int64), ref.astype(np.int64), 2) == pytest.approx(metrics.iou(pred, ref))


# ---------------------------------------------------------------- empty-mask policy
def empty_and_full(shape=(6, 9)) -> tuple[np.ndarray, np.ndarray]:
    full = np.zeros(shape, dtype=bool)
    full[1:4, 2:7] = True
    return np.zeros(shape, dtype=bool), full


@pytest.mark.parametrize("distance_fn", [metrics.hd95, metrics.asd, metrics.assd])
def test_both_empty_default(distance_fn):
    empty, _ = empty_and_full()
    assert distance_fn(empty, empty) == 0.0
    assert distance_fn(empty, empty, spacing=3.0) == 0.0
    assert metrics.dice(empty, empty) == 1.0
    assert metrics.iou(empty, empty) == 1.0
    assert metrics.miou(empty, empty) == 1.0


@pytest.mark.parametrize("distance_fn", [metrics.hd95, metrics.asd, metrics.assd])
@pytest.mark.parametrize("empty_side", ["pred", "ref"])
def test_one_empty_default_is_diagonal(distance_fn, empty_side):
    empty, full = empty_and_full()
    pred, ref = (empty, full) if empty_side == "pred" else (full, empty)
    assert distance_fn(pred, ref) == pytest.approx(math.hypot(6, 9))
    assert distance_fn(pred, ref, spacing=(2.0, 0.5)) == pytest.approx(math.hypot(12, 4.5))
    assert distance_fn(pred, ref, spacing=2.0) == pytest.approx(math.hypot(12, 18))
    assert metrics.dice(pred, ref) == 0.0
    assert metrics.iou(pred, ref) == 0.0


def test_one_empty_3d_diagonal():
    empty = np.zeros((4, 5, 6), dtype=bool)
    full = ~empty
    expected = math.sqrt(4**2 + 5**2 + 6**2)
    assert metrics.binary_metrics(full, empty)["assd"] == pytest.approx(expected)


def test_custom_policy():
    empty, full = empty_and_full()
    policy = EmptyPolicy(both_empty_overlap=0.0, both_empty_distance=5.0, one_empty_distance=99.0)
    assert metrics.binary_metrics(empty, empty, empty=policy) == {
        "dice": 0.0, "iou": 0.0, "hd95": 5.0, "asd": 5.0, "assd": 5.0,
    }
    assert metrics.binary_metrics(empty, full, spacing=4.0, empty=policy) == {
        "dice": 0.0, "iou": 0.0, "hd95": 99.0, "asd": 99.0, "assd": 99.0,
    }
    assert metrics.hd95(full, empty, empty=policy) == 99.0
    assert metrics.multiclass_metrics(empty.astype(int), empty.astype(int), 3, empty=policy)["mean"]["hd95"] == 5.0


def test_policy_values_are_finite_everywhere():
    empty, full = empty_and_full()
    for pred, ref in [(empty, empty), (empty, full), (full, empty)]:
        assert all(math.isfinite(v) for v in metrics.binary_metrics(pred, ref, 0.3).values())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"one_empty_distance": "max"}, "one_empty_distance"),
        ({"one_empty_distance": -1.0}, "one_empty_distance"),
        ({"both_empty_distance": float("nan")}, "both_empty_distance"),
        ({"both_empty_overlap": float("inf")}, "both_empty_overlap"),
    ],
)
def test_bad_policy_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EmptyPolicy(**kwargs)


def test_policy_is_frozen():
    with pytest.raises(AttributeError):
        EmptyPolicy().both_empty_distance = 1.0  # type: ignore[misc]


# ---------------------------------------------------------------- bad inputs
def good_pair():
    return random_pair(42, (10, 12))


@pytest.mark.parametrize("fn", [metrics.dice, metrics.iou, metrics.hd95, metrics.asd, metrics.assd, metrics.binary_metrics])
def test_shape_mismatch(fn):
    pred, ref = good_pair()
    with pytest.raises(ValueError, match=r"pred and ref must have the same shape"):
        fn(pred, ref[:, :-1])


@pytest.mark.parametrize(
    ("spacing", "error", "match"),
    [
        ((1.0, 2.0, 3.0), ValueError, r"spacing must .* one entry per spatial axis \(2\)"),
        ((1.0,), ValueError, r"spacing must .* one entry per spatial axis"),
        ((1.0, 0.0), ValueError, r"spacing must be positive"),
        (-1.0, ValueError, r"spacing must be positive"),
        ((1.0, float("nan")), ValueError, r"spacing must be positive and finite"),
        (("a", "b"), TypeError, r"spacing must be a float"),
    ],
)
def test_bad_spacing(spacing, error, match):
    pred, ref = good_pair()
    with pytest.raises(error, match=match):
        metrics.hd95(pred, ref, spacing=spacing)
    with pytest.raises(error, match=match):
        metrics.binary_metrics(pred, ref, spacing)


def test_bad_spacing_in_batch_refers_to_spatial_dims():
    pred, ref = good_pair()
    with pytest.raises(ValueError, match=r"spacing .* \(2\)"):
        metrics.batch_metrics(pred[None], ref[None], spacing=(1.0, 1.0, 1.0))


@pytest.mark.parametrize(
    ("bad_value", "side", "match"),
    [
        (2, "pred", r"pred must be a binary mask .* 2"),
        (0.5, "ref", r"ref must be a binary mask .* 0.5"),
        (-1, "ref", r"ref must be a binary mask"),
        (float("nan"), "ref", r"ref contains NaN"),
        (float("nan"), "pred", r"pred contains NaN"),
    ],
)
def test_non_binary_values(bad_value, side, match):
    pred, ref = good_pair()
    dtype = np.float64 if isinstance(bad_value, float) else np.int64
    pred, ref = pred.astype(dtype), ref.astype(dtype)
    (pred if side == "pred" else ref)[3, 4] = bad_value
    for fn in (metrics.dice, metrics.hd95, metrics.binary_metrics):
        with pytest.raises(ValueError, match=match):
            fn(pred, ref)
    with pytest.raises(ValueError, match=match):
        metrics.dice(torch.from_numpy(pred), torch.from_numpy(ref))


def test_non_numeric_dtype():
    pred, ref = good_pair()
    with pytest.raises(TypeError, match="pred must be a bool or numeric mask"):
        metrics.dice(pred.astype(str), ref)


def test_too_few_dims():
    with pytest.raises(ValueError, match="pred must have at least 2 dims"):
        metrics.dice(np.ones(5, bool), np.ones(5, bool))
    pred, ref = good_pair()
    with pytest.raises(ValueError, match="pred must have at least 3 dims"):
        metrics.batch_metrics(pred, ref)


@pytest.mark.parametrize("connectivity", [0, 3, 1.5])
def test_bad_connectivity(connectivity):
    pred, ref = good_pair()
    with pytest.raises((ValueError, TypeError), match="connectivity"):
        metrics.hd95(pred, ref, connectivity=connectivity)


def test_bad_empty_argument():
    pred, ref = good_pair()
    with pytest.raises(TypeError, match="empty must be an EmptyPolicy"):
        metrics.dice(pred, ref, empty="zero")


def test_bad_label_maps():
    labels = np.zeros((6, 6), dtype=np.int64)
    labels[2:4, 2:4] = 2
    with pytest.raises(ValueError, match=r"pred_labels values must lie in \[0, num_classes=2\)"):
        metrics.multiclass_metrics(labels, np.zeros_like(labels), 2)
    with pytest.raises(ValueError, match="ref_labels must hold integer class ids"):
        metrics.multiclass_metrics(labels, labels + 0.5, 4)
    with pytest.raises(ValueError, match="ref_labels contains NaN"):
        metrics.multiclass_metrics(labels, np.full((6, 6), np.nan), 4)
    with pytest.raises(ValueError, match="pred_labels and ref_labels must have the same shape"):
        metrics.multiclass_metrics(labels, labels[:5], 4)
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        metrics.multiclass_metrics(labels, labels, 1)
    with pytest.raises(ValueError, match=r"ref values must lie in \[0, num_classes=3\)"):
        metrics.miou(labels, labels + 2, 3)


# ---------------------------------------------------------------- import hygiene
def test_import_is_light_and_medpy_free():
    code = (
        "import sys, dale_ext.metrics; "
        "bad = [m for m in ('medpy', 'matplotlib') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
