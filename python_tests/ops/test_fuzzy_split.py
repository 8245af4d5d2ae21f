"""fuzzy_split: kernel vs an independent float64 loop oracle, vs the vectorised reference, vs
skimage's find_boundaries; CUDA vs CPU; opcheck; torch.compile; bad inputs."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dale_ext
from dale_ext.reference import fuzzy_split as reference_fuzzy_split
from python_tests.conftest import cpu_and_cuda, results_under_each_cpu_isa

FIELDS = dale_ext.FuzzySplit._fields


# ---------------------------------------------------------------- independent oracle (loops)
def _grey_bin(px: np.ndarray, bins: int) -> int:
    """One pixel's channel values -> bin, written from the rules in the docstring."""
    if px.dtype == np.uint8:
        return min(int(px.astype(np.int64).sum()) * bins // (255 * px.size), bins - 1)
    s = np.float32(0)
    for v in px.astype(np.float32):  # channel order, float32
        s = np.float32(s + v)
    t = np.float32(np.float32(s / np.float32(px.size)) * np.float32(bins))
    return int(min(max(math.floor(t), 0), bins - 1))


def oracle_fuzzy_split(image: torch.Tensor, label: torch.Tensor, ph: int, pw: int, tau: float, bins: int):
    img = image.cpu()
    img = img.float().numpy() if img.dtype in (torch.float16, torch.bfloat16) else img.numpy()
    lab = label.cpu().numpy()
    if lab.ndim == 4:
        lab = lab[:, 0]
    B, C, H, W = img.shape
    Lh, Lw = -(-H // ph), -(-W // pw)
    ent = np.zeros((B, Lh, Lw))
    edr = np.zeros((B, Lh, Lw))
    for b in range(B):
        q = np.array([[_grey_bin(img[b, :, y, x], bins) for x in range(W)] for y in range(H)])
        edge = np.zeros((H, W), dtype=bool)
        for y in range(H):
            for x in range(W):
                v = lab[b, y, x]
                for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < H and 0 <= xx < W and lab[b, yy, xx] != v:
                        edge[y, x] = True
        for i in range(Lh):
            for j in range(Lw):
                pq = q[i * ph:(i + 1) * ph, j * pw:(j + 1) * pw].ravel()
                n = pq.size
                _, counts = np.unique(pq, return_counts=True)
                p = counts / n
                ent[b, i, j] = max(0.0, float(-(p * np.log(p)).sum()))
                edr[b, i, j] = edge[i * ph:(i + 1) * ph, j * pw:(j + 1) * pw].sum() / n

    def norm(a):  # "equal" within 1e-12 (documented in dale_ext.ops.fuzzy_split)
        lo, hi = a.min(), a.max()
        return (a - lo) / (hi - lo) if hi - lo > 1e-12 else np.zeros_like(a)

    score = np.stack([np.maximum(norm(ent[b]), norm(edr[b])) for b in range(B)])
    fm = np.where(score > tau, 1.0, score)
    nm = np.where(score < tau, 1.0, 1.0 - score)
    up = lambda m: np.repeat(np.repeat(m, ph, axis=1)[:, :H], pw, axis=2)[:, None, :, :W]  # noqa: E731
    fmask, nmask = up(fm), up(nm)
    x = img.astype(np.float64) / 255.0 if img.dtype == np.uint8 else img.astype(np.float64)
    return dict(entropy=ent, edge_ratio=edr, score=score, fuzzy_mask=fmask, nonfuzzy_mask=nmask,
                fuzzy_image=fmask * x, nonfuzzy_image=nmask * x)


# ---------------------------------------------------------------- inputs
def random_image(gen, B, C, H, W, dtype):
    x = torch.rand(B, C, H, W, generator=gen)
    # a smooth darker blob so entropies differ between patches
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    x = x * (0.3 + 0.7 * (yy**2 + xx**2).clamp(max=1))
    if dtype == torch.uint8:
        return (x * 255).round().to(torch.uint8)
    return x.to(dtype)


def random_label(gen, B, H, W, classes):
    # blocky regions (so edges are a minority) plus some salt
    lab = torch.randint(0, classes, (B, -(-H // 5), -(-W // 5)), generator=gen)
    lab = lab.repeat_interleave(5, 1)[:, :H].repeat_interleave(5, 2)[:, :, :W]
    salt = torch.rand(B, H, W, generator=gen) < 0.02
    return torch.where(salt, torch.randint(0, classes, (B, H, W), generator=gen), lab)


def assert_close_to_oracle(out, ref, image_dtype, atol=2e-4):
    for name in FIELDS:
        got = getattr(out, name).double().cpu().numpy()
        want = ref[name]
        if name.endswith("image") and image_dtype in (torch.float16, torch.bfloat16):
            # outputs are stored in the image dtype: one rounding of the product, whose mask factor
            # carries float32 rounding, so a product next to a rounding boundary may land one step over
            want = torch.from_numpy(want).to(image_dtype).double().numpy()
            step = torch.finfo(image_dtype).eps * np.abs(want)
            assert np.all(np.abs(got - want) <= step + 1e-6), f"{name}: beyond one rounding step of {image_dtype}"
        else:
            np.testing.assert_allclose(got, want, atol=atol, rtol=0, err_msg=name)


# ---------------------------------------------------------------- forward vs oracle
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.uint8])
@pytest.mark.parametrize(
    "shape,patch,classes",
    [((2, 3, 32, 48), 16, 2), ((2, 1, 37, 29), (8, 6), 9), ((1, 3, 23, 41), 7, 3), ((3, 2, 16, 16), 16, 2)],
)
def test_matches_float64_oracle(gen, dtype, shape, patch, classes):
    B, C, H, W = shape
    image = random_image(gen, B, C, H, W, dtype)
    label = random_label(gen, B, H, W, classes)
    ph, pw = (patch, patch) if isinstance(patch, int) else patch
    out = dale_ext.fuzzy_split(image, label, patch_size=patch, tau=0.6, bins=64)
    ref = oracle_fuzzy_split(image, label, ph, pw, 0.6, 64)
    assert_close_to_oracle(out, ref, dtype)
    if out.score[0].numel() > 2:  # the multi-patch cases must exercise both branches of Eq. 6
        assert (out.score > 0.6).any() and (out.score < 0.6).any()
    else:  # a single patch normalises to 0
        assert torch.equal(out.score, torch.zeros_like(out.score))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    B=st.integers(1, 2), C=st.integers(1, 4), H=st.integers(1, 37), W=st.integers(1, 41),
    patch_h=st.integers(1, 40), patch_w=st.integers(1, 40), classes=st.integers(1, 5),
    bins=st.sampled_from([2, 3, 17, 256, 4096]), tau=st.floats(0, 1),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.uint8]),
    layout=st.sampled_from(["contiguous", "channels_last", "strided", "b1hw_label"]), seed=st.integers(0, 2**31 - 1),
)
@pytest.mark.parametrize("device", cpu_and_cuda())
def test_fuzz_shapes_patches_bins_and_layouts_against_oracle(device, B, C, H, W, patch_h, patch_w, classes, bins,
                                                             tau, dtype, layout, seed):
    """Any image size, patch size (ragged last patches), bin count, tau, dtype and memory layout:
    the kernel's seven outputs against the float64 loop oracle."""
    gen = torch.Generator().manual_seed(seed)
    ph, pw = min(patch_h, H), min(patch_w, W)
    image = random_image(gen, B, C, H, W, dtype)
    label = random_label(gen, B, H, W, classes)
    if layout == "channels_last":
        image = image.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        image = torch.cat([image, image], 3)[..., ::2]
    elif layout == "b1hw_label":
        label = label[:, None]
    out = dale_ext.fuzzy_split(image.to(device), label.to(device), patch_size=(ph, pw), tau=tau, bins=bins)
    ref = oracle_fuzzy_split(image, label, ph, pw, tau, bins)
    # Eqs. 6-7 jump at score == tau: where the oracle's score is within rounding of tau (e.g. tau = 1
    # and two patches tie for the highest entropy, summed in different orders), the masks may
    # take either side; those patches are checked through their score only
    tie = np.abs(ref["score"] - tau) < 1e-9
    if tie.any():
        at = np.repeat(np.repeat(tie, ph, axis=1)[:, :H], pw, axis=2)[:, None, :, :W]
        for name in ("fuzzy_mask", "nonfuzzy_mask", "fuzzy_image", "nonfuzzy_image"):
            ref[name] = np.where(at, getattr(out, name).double().cpu().numpy(), ref[name])
    assert_close_to_oracle(out, ref, dtype)


@pytest.mark.parametrize("bins", [2, 255, 256, 1000, 65536])
def test_bins_and_uint8_exact(gen, bins):
    image = random_image(gen, 2, 3, 24, 24, torch.uint8)
    image[0, :, 0, :] = 255  # the top edge bin
    label = random_label(gen, 2, 24, 24, 2)
    out = dale_ext.fuzzy_split(image, label, patch_size=8, bins=bins)
    assert_close_to_oracle(out, oracle_fuzzy_split(image, label, 8, 8, 0.9, bins), torch.uint8)


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("bins", [2, 255, 256, 1000, 21931, 21932, 65536])
@pytest.mark.parametrize("C", [1, 3])
def test_uint8_bin_edges_exact(bins, C, device):
    # every pair of neighbouring channel sums (s - 1, s) is one (1, 2) patch: its entropy is 0
    # when the exact integer rule puts both in one bin and ln 2 when not, so the kernel's bins
    # must split 0 .. 255 C exactly where bin_of_u8_sum does (21931 / 21932 at C = 3: the
    # last bin count the AVX2 kernel computes in float32, and the first it looks up)
    s = torch.arange(1, 255 * C + 1)
    pairs = torch.stack([s - 1, s], dim=1).reshape(-1)  # row-major: (s-1, s) side by side
    width = 36  # 18 pairs a row: four 8-pixel vector blocks and a 4-pixel scalar tail
    pairs = torch.cat([pairs, pairs[:2].repeat((-len(pairs)) % width // 2)])
    sums = pairs.reshape(-1, width)
    channels = [sums // C + (c < sums % C).long() for c in range(C)]  # values <= 255 that add up to s
    image = torch.stack(channels)[None].to(torch.uint8).to(device)
    label = torch.zeros(1, *sums.shape, dtype=torch.long, device=device)
    out = dale_ext.fuzzy_split(image, label, patch_size=(1, 2), bins=bins)
    a, b = sums[:, 0::2], sums[:, 1::2]
    exact = lambda v: torch.clamp(v * bins // (255 * C), max=bins - 1)  # noqa: E731
    want = torch.where(exact(a) == exact(b), 0.0, math.log(2.0))
    torch.testing.assert_close(out.entropy[0].cpu().double(), want.double(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("bins", [255, 256, 1000, 65536])
@pytest.mark.parametrize("C", [1, 3])
def test_float32_bins_exact(gen, bins, C):
    # W = 29: three 8-pixel vector blocks and a 5-pixel scalar tail in the CPU row kernel; values
    # at 0, 1 and just below 1 exercise the clamps at both ends
    image = random_image(gen, 2, C, 19, 29, torch.float32)
    image[0, :, 0, :] = 1.0
    image[0, :, 1, :] = torch.nextafter(torch.tensor(1.0), torch.tensor(0.0))
    image[1, :, 0, :] = 0.0
    label = random_label(gen, 2, 19, 29, 3)
    out = dale_ext.fuzzy_split(image, label, patch_size=(8, 6), bins=bins)
    assert_close_to_oracle(out, oracle_fuzzy_split(image, label, 8, 6, 0.9, bins), torch.float32)


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("pw", [16, 17, 24, 31, 32, 33, 40])
@pytest.mark.parametrize("where", ["first", "last"])
def test_patch_bin_range_from_any_column(device, pw, where):
    # the CPU kernel finds each patch's lowest and highest bin 16 columns at a time, the rest of
    # the columns one by one: a patch's 0s and 255s (two of each: a bin counted once adds
    # 1 ln 1 = 0 and would not show) sit in its first or last column only; a missed bin changes
    # the entropy of that patch, and of the next patch that meets it uncleared in the histogram
    gen = torch.Generator().manual_seed(pw)
    image = torch.randint(100, 151, (1, 1, 8, 2 * pw), generator=gen, dtype=torch.uint8)
    image[..., pw:] = 128
    col = 0 if where == "first" else pw - 1
    image[0, 0, 1:3, col], image[0, 0, 5:7, col] = 0, 255
    image[0, 0, 0, -1] = 0  # the right neighbour meets bin 0 too
    label = torch.zeros(1, 8, 2 * pw, dtype=torch.long)
    out = dale_ext.fuzzy_split(image.to(device), label.to(device), patch_size=(8, pw), bins=256)
    want = oracle_fuzzy_split(image, label, 8, pw, 0.9, 256)["entropy"]
    assert want[0, 0, 1] > 0.0
    np.testing.assert_allclose(out.entropy.double().cpu().numpy(), want, rtol=0, atol=1e-6)


def test_label_as_b1hw_and_bool(gen):
    image = random_image(gen, 2, 3, 20, 20, torch.float32)
    label = random_label(gen, 2, 20, 20, 2)
    a = dale_ext.fuzzy_split(image, label, patch_size=5)
    b = dale_ext.fuzzy_split(image, label.bool().unsqueeze(1), patch_size=5)
    c = dale_ext.fuzzy_split(image, label.to(torch.uint8), patch_size=5)
    for name in FIELDS:
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=0, atol=0)
        torch.testing.assert_close(getattr(a, name), getattr(c, name), rtol=0, atol=0)


def test_out_of_range_grey_levels_fall_into_end_bins(gen):
    image = random_image(gen, 1, 1, 16, 16, torch.float32)
    label = random_label(gen, 1, 16, 16, 2)
    low, high = image.clone(), image.clone()
    low[..., :8, :] = -3.0    # all below 0 -> bin 0 == the bin of 0.0
    high[..., :8, :] = 7.0    # all above 1 -> last bin == the bin of 1.0
    ref_low, ref_high = image.clone(), image.clone()
    ref_low[..., :8, :] = 0.0
    ref_high[..., :8, :] = 1.0
    for a, b in ((low, ref_low), (high, ref_high)):
        ea = dale_ext.fuzzy_split(a, label, patch_size=8).entropy
        eb = dale_ext.fuzzy_split(b, label, patch_size=8).entropy
        torch.testing.assert_close(ea, eb, rtol=0, atol=0)


# ---------------------------------------------------------------- vs reference and skimage
@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8, torch.bfloat16])
def test_matches_reference(gen, dtype):
    image = random_image(gen, 4, 3, 64, 50, dtype)
    label = random_label(gen, 4, 64, 50, 4)
    out = dale_ext.fuzzy_split(image, label, patch_size=(16, 12), tau=0.8)
    ref = reference_fuzzy_split(image, label, patch_size=(16, 12), tau=0.8)
    for name in FIELDS:
        torch.testing.assert_close(getattr(out, name), getattr(ref, name), rtol=0, atol=1e-6, msg=name)


@pytest.mark.parametrize("label_dtype", [torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool])
@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_large_batch_streamed_writes_match_reference(gen, dtype, label_dtype):
    # Outputs over 8 MiB take the non-temporal-store path; W = 257 leaves rows unaligned, so
    # the scalar head and tail of each row are exercised too. Every label width has its own
    # (vectorised) edge kernel.
    image = random_image(gen, 6, 3, 256, 257, dtype)
    label = random_label(gen, 6, 256, 257, 2 if label_dtype == torch.bool else 5).to(label_dtype)
    out = dale_ext.fuzzy_split(image, label, patch_size=16)
    ref = reference_fuzzy_split(image, label, patch_size=16)
    for name in FIELDS:
        torch.testing.assert_close(getattr(out, name), getattr(ref, name), rtol=0, atol=1e-6, msg=name)


def test_baseline_and_best_cpu_isa_agree(gen):
    # the row kernels are compiled once per instruction set; DALE_EXT_CPU_ISA=baseline forces
    # the portable set in a fresh process
    code = (
        "import sys, torch, dale_ext; g=torch.Generator().manual_seed(5);"
        "x=torch.rand(6,3,256,251,generator=g); l=torch.randint(0,3,(6,256,251),generator=g);"
        "u=(x*255).to(torch.uint8);"
        "torch.save([tuple(dale_ext.fuzzy_split(x,l,patch_size=12)), tuple(dale_ext.fuzzy_split(u,l.int()))], sys.argv[1])"
    )
    outs = results_under_each_cpu_isa(code)
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            for name, ta, tb in zip(FIELDS, a, b):
                torch.testing.assert_close(ta, tb, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("classes", [2, 9])
def test_edges_match_skimage(gen, classes):
    from skimage.segmentation import find_boundaries

    label = random_label(gen, 3, 45, 38, classes)
    image = random_image(gen, 3, 1, 45, 38, torch.float32)
    out = dale_ext.fuzzy_split(image, label, patch_size=(9, 19))
    for b in range(3):
        edge = find_boundaries(label[b].numpy(), connectivity=1, mode="thick").astype(np.float64)
        want = edge.reshape(5, 9, 2, 19).mean(axis=(1, 3))
        np.testing.assert_allclose(out.edge_ratio[b].numpy(), want, atol=1e-7)


def test_constant_image_and_label_give_zero_scores(gen):
    image = torch.full((2, 3, 32, 32), 0.37)
    label = torch.ones(2, 32, 32, dtype=torch.long)
    out = dale_ext.fuzzy_split(image, label)
    assert torch.equal(out.entropy, torch.zeros_like(out.entropy))
    assert torch.equal(out.edge_ratio, torch.zeros_like(out.edge_ratio))
    assert torch.equal(out.score, torch.zeros_like(out.score))
    # score 0 < tau: fuzzy mask 0, non-fuzzy mask 1
    assert torch.equal(out.fuzzy_mask, torch.zeros_like(out.fuzzy_mask))
    assert torch.equal(out.nonfuzzy_image, image)


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("impl", [dale_ext.fuzzy_split, reference_fuzzy_split])
@pytest.mark.parametrize("size,patch", [(24, 23), (40, 39), (43, 43), (114, 57), (50, (7, 11))])
def test_constant_patches_of_any_size_have_zero_entropy(size, patch, impl, device):
    """ln n - (n ln n) / n rounds to +4e-16 for some n (23, 39, 43, 114, ...); Eq. 5 must not
    stretch that residue to a score of 1 (the float64 oracle gives 0 everywhere)."""
    for value in (0.37, 0.0, 1.0):
        image = torch.full((2, 1, size, size), value, device=device)
        label = torch.zeros(2, size, size, dtype=torch.long, device=device)
        out = impl(image, label, patch_size=patch)
        assert torch.equal(out.entropy, torch.zeros_like(out.entropy)), (value, out.entropy.max().item())
        assert torch.equal(out.score, torch.zeros_like(out.score))
        assert torch.equal(out.fuzzy_mask, torch.zeros_like(out.fuzzy_mask))


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_identical_patches_tie(gen, device):
    """A tiled pattern: every patch has the same histogram, hence one entropy, and all scores are 0
    on every device (the CUDA histogram's summation order must not break the tie)."""
    tile = torch.rand(3, 16, 16, generator=gen)
    image = tile.repeat(2, 1, 4, 5).to(device)
    label = torch.zeros(2, 64, 80, dtype=torch.long, device=device)
    out = dale_ext.fuzzy_split(image, label, patch_size=16)
    assert out.entropy.min() > 3  # a real, non-zero entropy
    assert torch.equal(out.score, torch.zeros_like(out.score))


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("label_dtype", [torch.uint16, torch.uint32, torch.uint64])
def test_unsigned_label_dtypes(gen, label_dtype, device):
    image = torch.rand(2, 3, 30, 28, generator=gen).to(device)
    label = torch.randint(0, 3, (2, 30, 28), generator=gen).to(device)
    want = dale_ext.fuzzy_split(image, label, patch_size=8)
    for impl in (dale_ext.fuzzy_split, reference_fuzzy_split):
        got = impl(image, label.to(label_dtype), patch_size=8)
        for name in ("entropy", "edge_ratio", "score", "fuzzy_mask", "nonfuzzy_image"):
            torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=0, atol=1e-6, msg=name)


def test_score_equal_to_tau_uses_soft_values():
    # edge ratios 0, 9/16 and 10/16 -> normalised 0, 0.9, 1: the middle patch sits exactly on tau
    label = torch.zeros(1, 4, 12, dtype=torch.long)
    label[0, 0, 4:8] = torch.tensor([1, 0, 1, 0])     # patch 1: some edges
    label[0, :, 8:12] = torch.tensor([[1, 0, 1, 0]] * 4)  # patch 2: all edges
    image = torch.full((1, 1, 4, 12), 0.5)
    out = dale_ext.fuzzy_split(image, label, patch_size=4, tau=0.9)
    e = out.edge_ratio[0, 0].double()
    m = (e - e.min()) / (e.max() - e.min())
    assert torch.equal(out.score[0, 0], m.float())
    fm = torch.where(m > 0.9, 1.0, m).float()
    nm = torch.where(m < 0.9, 1.0, 1.0 - m).float()
    assert torch.equal(out.fuzzy_mask[0, 0, 0, ::4], fm)
    assert torch.equal(out.nonfuzzy_mask[0, 0, 0, ::4], nm)


def test_masks_bounded_and_complementary_outside_tau(gen):
    image = random_image(gen, 3, 3, 64, 64, torch.float32)
    label = random_label(gen, 3, 64, 64, 2)
    out = dale_ext.fuzzy_split(image, label)
    for m in (out.fuzzy_mask, out.nonfuzzy_mask, out.score):
        assert m.min() >= 0 and m.max() <= 1
    # every pixel is fully in at least one of the two sets
    assert torch.all((out.fuzzy_mask == 1) | (out.nonfuzzy_mask == 1))


def test_no_grad_and_requires_grad_inputs(gen):
    image = random_image(gen, 1, 3, 16, 16, torch.float32).requires_grad_()
    label = random_label(gen, 1, 16, 16, 2)
    out = dale_ext.fuzzy_split(image, label, patch_size=8)
    assert not any(t.requires_grad for t in out)
    with torch.no_grad():
        out2 = dale_ext.fuzzy_split(image, label, patch_size=8)
    torch.testing.assert_close(out.fuzzy_image, out2.fuzzy_image)
    with torch.inference_mode():  # worker threads are outside inference mode; nothing may need it
        out3 = dale_ext.fuzzy_split(image, label, patch_size=8)
    for a, b in zip(out, out3):
        assert torch.equal(a, b)


# ---------------------------------------------------------------- devices
@pytest.mark.needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape,patch", [((3, 3, 67, 45), 16), ((24, 3, 224, 224), 16), ((2, 1, 30, 30), (7, 5))])
@pytest.mark.parametrize("bins", [256, 20000])
def test_cuda_matches_cpu(gen, dtype, shape, patch, bins):
    B, C, H, W = shape
    image = random_image(gen, B, C, H, W, dtype)
    label = random_label(gen, B, H, W, 3)
    cpu = dale_ext.fuzzy_split(image, label, patch_size=patch, bins=bins)
    cuda = dale_ext.fuzzy_split(image.cuda(), label.cuda(), patch_size=patch, bins=bins)
    for name in FIELDS:
        torch.testing.assert_close(getattr(cuda, name).cpu(), getattr(cpu, name), rtol=0, atol=2e-6, msg=name)


@pytest.mark.needs_cuda
@pytest.mark.parametrize("layout", ["channels_last", "strided", "bool_b1hw_label", "tau_extremes"])
def test_cuda_matches_cpu_layouts_and_is_deterministic(gen, layout):
    """Views made on the device, a (B, 1, H, W) bool label and tau at 0/1 agree with the CPU; two
    CUDA runs agree bit for bit."""
    image = random_image(gen, 3, 3, 70, 66, torch.float32)
    label = random_label(gen, 3, 70, 66, 2)
    kwargs = dict(patch_size=(9, 11), tau=0.9)
    view_image, view_label = (lambda t: t), (lambda t: t)
    if layout == "channels_last":
        view_image = lambda t: t.contiguous(memory_format=torch.channels_last)  # noqa: E731
    elif layout == "strided":
        view_image = lambda t: t[:, :, 2:-1:2, 1:]  # noqa: E731
        view_label = lambda t: t[:, 2:-1:2, 1:]  # noqa: E731
    elif layout == "bool_b1hw_label":
        view_label = lambda t: t.bool()[:, None]  # noqa: E731
    outs = []
    for device in ("cpu", "cuda", "cuda"):
        x, y = view_image(image.to(device)), view_label(label.to(device))
        if layout == "tau_extremes":
            outs.append([getattr(dale_ext.fuzzy_split(x, y, patch_size=8, tau=t), n).cpu()
                         for t in (0.0, 1.0) for n in FIELDS])
        else:
            outs.append([getattr(dale_ext.fuzzy_split(x, y, **kwargs), n).cpu() for n in FIELDS])
    for i, (a, b, again) in enumerate(zip(*outs)):
        torch.testing.assert_close(b, a, rtol=0, atol=2e-6, msg=f"output {i}")
        assert torch.equal(b, again), f"output {i}: two CUDA runs differ"


@pytest.mark.needs_cuda
def test_cuda_nan_raises():
    image = torch.rand(1, 3, 16, 16, device="cuda")
    image[0, 1, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        dale_ext.fuzzy_split(image, torch.zeros(1, 16, 16, dtype=torch.long, device="cuda"))


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_empty_batch(device):
    out = dale_ext.fuzzy_split(torch.rand(0, 3, 16, 16, device=device),
                               torch.zeros(0, 16, 16, dtype=torch.long, device=device), patch_size=4)
    assert out.score.shape == (0, 4, 4) and out.fuzzy_image.shape == (0, 3, 16, 16)


# ---------------------------------------------------------------- torch.library / compile
@pytest.mark.parametrize("device", cpu_and_cuda())
def test_opcheck(gen, device):
    image = random_image(gen, 2, 3, 20, 24, torch.float32).to(device)
    label = random_label(gen, 2, 20, 24, 3).to(device)
    torch.library.opcheck(torch.ops.dale_ext.fuzzy_split.default, (image, label, [8, 8], 0.9, 256))
    u8 = random_image(gen, 2, 3, 20, 24, torch.uint8).to(device)
    torch.library.opcheck(torch.ops.dale_ext.fuzzy_split.default, (u8, label, [5, 7], 0.5, 32))


def test_torch_compile_fullgraph(gen):
    image = random_image(gen, 2, 3, 32, 32, torch.float32)
    label = random_label(gen, 2, 32, 32, 2)

    def f(x, y):
        out = dale_ext.fuzzy_split(x, y, patch_size=8)
        return out.fuzzy_image * 2 + out.nonfuzzy_mask

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(image, label), f(image, label))


# ---------------------------------------------------------------- bad input
def _ok(gen):
    return random_image(gen, 2, 3, 16, 16, torch.float32), random_label(gen, 2, 16, 16, 2)


@pytest.mark.parametrize(
    "make,exc,match",
    [
        (lambda i, l: (i[0], l, {}), ValueError, "`image` must be 4-D"),
        (lambda i, l: (i.int(), l, {}), TypeError, "`image` must be float32"),
        (lambda i, l: (i, l[:, :8], {}), ValueError, "`label` shape"),
        (lambda i, l: (i, l[0], {}), ValueError, "`label` must be"),
        (lambda i, l: (i, l[:1], {}), ValueError, "`label` shape"),
        (lambda i, l: (i, l.float(), {}), TypeError, "`label` must be an integer"),
        (lambda i, l: (i, l, {"patch_size": 17}), ValueError, "`patch_size`"),
        (lambda i, l: (i, l, {"patch_size": 0}), ValueError, "`patch_size`"),
        (lambda i, l: (i, l, {"patch_size": 2.5}), TypeError, "`patch_size`"),
        (lambda i, l: (i, l, {"bins": 1}), ValueError, "`bins`"),
        (lambda i, l: (i, l, {"bins": 65537}), ValueError, "`bins`"),
        (lambda i, l: (i, l, {"tau": 1.5}), ValueError, "`tau`"),
        (lambda i, l: (i, l, {"tau": float("nan")}), ValueError, "`tau`"),
        (lambda i, l: (i, l, {"tau": "0.9"}), TypeError, "`tau`"),
        (lambda i, l: (i.numpy(), l, {}), TypeError, "`image` must be a torch.Tensor"),
    ],
)
@pytest.mark.parametrize("impl", [dale_ext.fuzzy_split, reference_fuzzy_split])
def test_bad_input_raises_clear_error(gen, make, exc, match, impl):
    image, label = _ok(gen)
    a, b, kw = make(image, label)
    with pytest.raises(exc, match=match):
        impl(a, b, **kw)


@pytest.mark.parametrize("impl", [dale_ext.fuzzy_split, reference_fuzzy_split])
def test_nan_pixel_raises(gen, impl):
    image, label = _ok(gen)
    image[1, 2, 5, 7] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        impl(image, label)


@pytest.mark.parametrize("x", [0, 5, 7, 8, 15, 23, 24, 28])
def test_nan_pixel_raises_at_every_row_position(gen, x):
    # W = 29 on CPU: lanes of the 8-wide vector blocks (0-23) and the scalar tail (24-28)
    image = random_image(gen, 1, 3, 17, 29, torch.float32)
    image[0, 1, 4, x] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        dale_ext.fuzzy_split(image, random_label(gen, 1, 17, 29, 2))


def test_meta_tensors_use_the_fake_kernel():
    out = dale_ext.fuzzy_split(torch.empty(2, 3, 30, 20, device="meta"),
                               torch.empty(2, 30, 20, dtype=torch.long, device="meta"), patch_size=8)
    assert out.score.shape == (2, 4, 3) and out.fuzzy_image.device.type == "meta"
