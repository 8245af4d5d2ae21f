"""Where the files of each public dataset live: directory discovery and image/mask pairing.

Each ``*_samples`` function turns a dataset root into a sorted list of :class:`Sample`
``(id, image, mask)`` and fails loudly, naming the path, on a missing directory, an image without
its mask or a mask without its image. Nothing is skipped silently.

Mask matching rule (:func:`pair_by_stem`): an image ``<stem>.<ext>`` matches the mask whose stem,
compared case-insensitively, is ``<stem><suffix>`` for one of ``mask_suffixes`` or
``<prefix><stem>`` for one of ``mask_prefixes``; the extension may differ (``a.jpg`` <->
``a.png``). Exactly one mask must match each image, and every mask must be claimed by an image.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Sequence

from dale_ext.data.readers import IMAGE_EXTENSIONS, is_image_file

# The suffixes / prefixes seen in the wild: Kvasir and PraNet use the image's name, ISIC appends
# "_Segmentation", PH2 "_lesion", many ad-hoc exports "_mask"; QaTa-COV19 (LViT) prefixes "mask_".
DEFAULT_MASK_SUFFIXES: tuple[str, ...] = ("", "_mask", "_segmentation", "_seg", "_label", "_gt", "_lesion")
DEFAULT_MASK_PREFIXES: tuple[str, ...] = ("mask_",)

POLYP_TEST_SUBSETS: tuple[str, ...] = ("CVC-300", "CVC-ClinicDB", "CVC-ColonDB", "ETIS-LaribPolypDB", "Kvasir")


class Sample(NamedTuple):
    """One image/mask pair; ``id`` is the image's file stem."""

    id: str
    image: Path
    mask: Path


def require_dir(path: str | Path) -> Path:
    """``path`` as a Path, or FileNotFoundError naming it when it is not a directory."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"directory not found: {path}")
    return path


def _has_images(directory: Path) -> bool:
    return directory.is_dir() and any(is_image_file(p) for p in directory.iterdir())


def find_dir(root: str | Path, name: str) -> Path:
    """Find folder ``name`` given a ``root`` that contains it, is it, or holds it one level down.

    Copies of several datasets (ISIC in particular) nest a folder inside one of the same name
    (``root/X/X/*.jpg``); the candidate that directly contains image files wins, so both the
    flat and the nested layout work.
    """
    root = require_dir(root)
    candidates = [root / name / name, root / name]
    if root.name == name:
        candidates.append(root)
    candidates += sorted(p / name for p in root.iterdir() if p.is_dir() and p.name != name)
    existing = [c for c in candidates if c.is_dir()]
    for cand in existing:
        if _has_images(cand):
            return cand
    if existing:
        return existing[0]
    raise FileNotFoundError(f"directory not found: {root / name} (also looked in {root}/*/{name})")


def find_child(parent: Path, names: Sequence[str]) -> Path:
    """The first existing sub-folder of ``parent`` among ``names`` (e.g. ``images`` / ``image``)."""
    for name in names:
        if (parent / name).is_dir():
            return parent / name
    raise FileNotFoundError(f"directory not found: {parent / names[0]}")


def list_images(directory: str | Path, extensions: Sequence[str] | None = None, allow_empty: bool = False) -> list[Path]:
    """Image files directly inside ``directory``, sorted by name; an empty folder is an error
    unless ``allow_empty`` (mask folders: the pairing then names the first unmatched image)."""
    directory = require_dir(directory)
    exts = {e.lower() for e in extensions} if extensions else IMAGE_EXTENSIONS
    files = sorted(p for p in directory.iterdir() if is_image_file(p) and p.suffix.lower() in exts)
    if not files and not allow_empty:
        raise FileNotFoundError(f"no image files ({', '.join(sorted(exts))}) in {directory}")
    return files


def pair_by_stem(
    images: Sequence[Path],
    masks: Sequence[Path],
    mask_suffixes: Sequence[str] = DEFAULT_MASK_SUFFIXES,
    mask_prefixes: Sequence[str] = DEFAULT_MASK_PREFIXES,
    mask_dir: str | Path | None = None,
) -> list[Sample]:
    """Pair each image with its mask by file stem (see the module docstring for the rule).
    ``mask_dir`` only improves the message when ``masks`` is empty."""
    mask_dir = masks[0].parent if masks else (mask_dir or "the mask folder")
    by_key: dict[str, Path] = {}
    for m in masks:
        key = m.stem.lower()
        if key in by_key:
            raise ValueError(f"two mask files with the same name: {by_key[key]} and {m}")
        by_key[key] = m
    seen_stems: dict[str, Path] = {}
    claimed: dict[Path, Path] = {}
    samples = []
    for img in sorted(images):
        if img.stem in seen_stems:
            raise ValueError(f"two image files with the same name: {seen_stems[img.stem]} and {img}")
        seen_stems[img.stem] = img
        stem = img.stem.lower()
        keys = [stem + s.lower() for s in mask_suffixes] + [p.lower() + stem for p in mask_prefixes]
        found = list(dict.fromkeys(by_key[k] for k in keys if k in by_key))
        if not found:
            raise FileNotFoundError(f"no mask for image {img} in {mask_dir}")
        if len(found) > 1:
            raise ValueError(f"several masks match image {img}: {', '.join(map(str, found))}")
        if found[0] in claimed:
            raise ValueError(f"mask {found[0]} matches two images: {claimed[found[0]]} and {img}")
        claimed[found[0]] = img
        samples.append(Sample(img.stem, img, found[0]))
    for m in masks:
        if m not in claimed:
            image_dir = images[0].parent if images else "the image folder"
            raise FileNotFoundError(f"mask {m} has no matching image in {image_dir}")
    return samples


def folder_samples(
    root: str | Path,
    images: str | Sequence[str] = "images",
    masks: str | Sequence[str] = "masks",
    mask_suffixes: Sequence[str] = DEFAULT_MASK_SUFFIXES,
    mask_prefixes: Sequence[str] = DEFAULT_MASK_PREFIXES,
) -> list[Sample]:
    """``root/<images>/*`` paired with ``root/<masks>/*``; a name list means "first that exists"."""
    root = require_dir(root)
    image_dir = find_child(root, [images] if isinstance(images, str) else images)
    mask_dir = find_child(root, [masks] if isinstance(masks, str) else masks)
    return pair_by_stem(list_images(image_dir), list_images(mask_dir, allow_empty=True), mask_suffixes,
                        mask_prefixes, mask_dir)


def _split_name(split: str, allowed: Sequence[str]) -> str:
    if split not in allowed:
        raise ValueError(f"split must be one of {list(allowed)}, got {split!r}")
    return split


def isic2016_samples(root: str | Path, split: str = "train") -> list[Sample]:
    """ISIC-2016 Task 1 (ISBI 2016 Part 1): ``ISIC_*.jpg`` + ``ISIC_*_Segmentation.png``."""
    part = {"train": "Training", "test": "Test"}[_split_name(split, ("train", "test"))]
    image_dir = find_dir(root, f"ISBI2016_ISIC_Part1_{part}_Data")
    mask_dir = find_dir(root, f"ISBI2016_ISIC_Part1_{part}_GroundTruth")
    # Only the JPEGs are images: some copies also hold superpixel PNGs beside them.
    return pair_by_stem(list_images(image_dir, (".jpg", ".jpeg")), list_images(mask_dir, allow_empty=True),
                        ("_Segmentation",), (), mask_dir)


def ph2_samples(root: str | Path) -> list[Sample]:
    """PH2: ``PH2 Dataset images/IMDxxx/IMDxxx_Dermoscopic_Image/IMDxxx.bmp`` and
    ``.../IMDxxx_lesion/IMDxxx_lesion.bmp``; ``root`` may contain that folder or be it."""
    base = find_dir(root, "PH2 Dataset images")
    cases = sorted(p for p in base.iterdir() if p.is_dir() and p.name.startswith("IMD"))
    if not cases:
        raise FileNotFoundError(f"no IMDxxx case folders in {base}")
    samples = []
    for case in cases:
        image = case / f"{case.name}_Dermoscopic_Image" / f"{case.name}.bmp"
        mask = case / f"{case.name}_lesion" / f"{case.name}_lesion.bmp"
        for path, what in ((image, "image"), (mask, "mask")):
            if not path.is_file():
                raise FileNotFoundError(f"PH2 {what} file not found: {path}")
        samples.append(Sample(case.name, image, mask))
    return samples


def polyp_test_subsets(root: str | Path) -> list[str]:
    """Names of the PraNet test subsets present under ``root/TestDataset`` (sorted)."""
    test_dir = find_dir(root, "TestDataset")
    return sorted(p.name for p in test_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def polyp_samples(root: str | Path, split: str = "train", subset: str | None = None) -> list[Sample]:
    """PraNet polyp split: ``TrainDataset/{images,masks}`` (Kvasir + CVC-ClinicDB, 1450 images)
    or ``TestDataset/<subset>/{images,masks}`` for one of :data:`POLYP_TEST_SUBSETS`.

    Some re-distributions (Polyp-PVT) name the training folders ``image``/``mask``; both work.
    """
    _split_name(split, ("train", "test"))
    if split == "train":
        if subset is not None:
            raise ValueError("subset is only used with split='test'")
        return folder_samples(find_dir(root, "TrainDataset"), ("images", "image"), ("masks", "mask"))
    if subset is None:
        raise ValueError(f"split='test' needs subset=, one of {list(POLYP_TEST_SUBSETS)}")
    test_dir = find_dir(root, "TestDataset")
    if not (test_dir / subset).is_dir():
        raise FileNotFoundError(
            f"directory not found: {test_dir / subset} (present: {polyp_test_subsets(root)})"
        )
    return folder_samples(test_dir / subset, ("images", "image"), ("masks", "mask"))


def mosmed_samples(root: str | Path, split: str = "train") -> list[Sample]:
    """LViT's MosMedData+: ``{Train,Val,Test}_Folder/{img,labelcol}``.

    LViT reads the mask as the image's name with a ``.png`` extension; the default suffix and
    ``mask_`` prefix rules also accept ``<stem>_mask.png`` and QaTa-style ``mask_<name>``.
    """
    folder = {"train": "Train_Folder", "val": "Val_Folder", "test": "Test_Folder"}[
        _split_name(split, ("train", "val", "test"))
    ]
    return folder_samples(find_dir(root, folder), "img", "labelcol")
