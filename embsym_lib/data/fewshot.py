"""Few-shot image classification data: generated glyphs (offline) and Omniglot / miniImageNet (paper).

Offline ("glyphs"): a character-style dataset, Omniglot-like, that the project builds deterministically
from the fonts that ship with matplotlib. A *class* is one Unicode character; its *samples* are that
character rendered in a randomly drawn DejaVu style (Sans / Serif / Sans Mono x regular / bold / oblique
= 12 fonts, the "drawers") with a random affine jitter (rotation, scale, shear, translation), as 28x28
grayscale, white glyph on black (Omniglot after learn2learn's ``1 - x``).

- Candidates: Latin, Greek, Cyrillic, Armenian, Hebrew, Georgian letters, digits, and arrows, math,
  currency and miscellaneous symbols present in all 12 fonts.
- Look-alikes are dropped: every candidate is rendered once, box-fitted (which erases case size, so
  'o' and 'O' coincide), and kept only when its correlation with every kept glyph is below
  ``MAX_GLYPH_CORRELATION`` (Latin 'A', Greek 'Alpha' and Cyrillic 'A' are one class, not three).
- The kept classes are shuffled with ``data_seed`` and cut into disjoint train / validation / test
  class sets (``class_split``); rendering uses ``data_seed`` too, so every run sees the same images
  and seeds vary only the training (initialisation, episodes).

Paper profile: Omniglot and miniImageNet through learn2learn's own dataset classes, read from a local
``root`` with ``download=False``, with the class splits and image transforms of learn2learn's benchmark
definitions (``learn2learn.vision.benchmarks``), which cannot be used directly because they hard-code
``download=True``.

- Omniglot: torchvision's layout ``root/omniglot-py/images_{background,evaluation}/<alphabet>/
  <character>/*.png`` read by ``learn2learn.vision.datasets.FullOmniglot`` (1,623 classes, 20 images);
  classes split 1100 / 100 / 423 as in learn2learn's benchmark; Resize(28, LANCZOS), ToTensor, 1 - x;
  every class is rotated by a random multiple of 90 degrees per task (``RandomClassRotation``), as in
  learn2learn's benchmark. torchvision verifies the *zip archives* by MD5 before reading the extracted
  folders; a copy that holds only the extracted folders is accepted here (see ``_accept_extracted``).
- miniImageNet: the pickles ``root/mini-imagenet-cache-{train,validation,test}.pkl`` (a dict with
  ``image_data`` uint8 [N, 84, 84, 3] and ``class_dict`` {wnid: [row indices]}) read by
  ``learn2learn.vision.datasets.MiniImagenet``: Ravi & Larochelle's 64 / 16 / 20 class split; pixels
  scaled to [0, 1] (the benchmark's ``data_augmentation="normalize"``).

A user's own images ("folder"): torchvision's ``ImageFolder`` layout under ``data_dir``, either
``<data_dir>/<class>/<images>`` or ``<data_dir>/{train,val,test}/<class>/<images>`` (``validation/`` is
accepted for ``val/``). Image files are those with torchvision's extensions, found recursively inside a
class folder as ``ImageFolder`` does; hidden files and folders (``.ipynb_checkpoints``) are skipped.

- Splits are by class, as meta-learning needs. With the three split folders they are used as they are
  (a class name in two of them is an error: test classes must be unseen). Without them the class names
  are sorted, shuffled with ``data_seed`` (as Omniglot's split) and cut in the *proportions* of
  ``class_split`` (largest-remainder rounding): ``[60, 20, 40]`` on 30 classes gives 15 / 5 / 10.
- Every image is decoded once, converted to grayscale (``image_channels=1``) or RGB (3), resized to
  ``image_size`` x ``image_size`` (LANCZOS, aspect ratio not kept, as miniImageNet's 84x84 images were
  made), kept as uint8 in memory and served in [0, 1].
"""

from __future__ import annotations

import contextlib
import math
import os
import random
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

DATASETS: tuple[str, ...] = ("glyphs", "omniglot", "miniimagenet", "folder")
IMAGE_SIZE = 28
RENDER_SIZE = 2 * IMAGE_SIZE  # render and jitter at twice the size, then average-pool: anti-aliasing
GLYPH_BOX = 40  # the glyph's longer side, in render pixels, before jitter
MAX_GLYPH_CORRELATION = 0.85
GLYPH_FONTS: tuple[str, ...] = tuple(
    f"DejaVu{family}{style}.ttf"
    for family, styles in (
        ("Sans", ("", "-Bold", "-Oblique", "-BoldOblique")),
        ("Serif", ("", "-Bold", "-Italic", "-BoldItalic")),
        ("SansMono", ("", "-Bold", "-Oblique", "-BoldOblique")),
    )
    for style in styles
)
CANDIDATE_RANGES: tuple[tuple[int, int], ...] = (
    (0x30, 0x39),  # digits
    (0x41, 0x5A),  # Latin capitals
    (0x61, 0x7A),  # Latin small
    (0xA2, 0xBE),  # Latin-1 symbols
    (0xC6, 0xC6),
    (0xD0, 0xD0),
    (0xDE, 0xDF),
    (0xF0, 0xF0),
    (0xFE, 0xFE),  # AE, Eth, Thorn, sharp s
    (0x391, 0x3A9),  # Greek capitals
    (0x3B1, 0x3C9),  # Greek small
    (0x402, 0x40F),
    (0x410, 0x44F),
    (0x452, 0x45F),  # Cyrillic
    (0x531, 0x556),
    (0x561, 0x586),  # Armenian
    (0x5D0, 0x5EA),  # Hebrew
    (0x10D0, 0x10F0),  # Georgian
    (0x2190, 0x21FF),  # arrows
    (0x2200, 0x22FF),  # mathematical operators
    (0x20A0, 0x20BF),  # currency
    (0x2600, 0x26FF),  # miscellaneous symbols
)
OMNIGLOT_SPLIT: tuple[int, int, int] = (1100, 100, 423)
OMNIGLOT_CLASSES = 1623
MINIIMAGENET_SPLITS: dict[str, str] = {"train": "train", "validation": "validation", "test": "test"}


@dataclass
class FewShotSplits:
    """Images [N, C, H, W] float in [0, 1] and integer labels per split; classes are disjoint across splits.

    ``train``/``validation``/``test`` are ``torch.utils.data.Dataset``s of (image, label) pairs, ready for
    ``learn2learn.data.MetaDataset``. ``task_transforms`` are extra learn2learn task transforms that the
    benchmark applies after sampling (Omniglot's class rotation), as factories taking the MetaDataset.
    ``details``: what a user should know about the data read (a folder's layout, split, image format),
    for the run's record.
    """

    name: str
    train: torch.utils.data.Dataset
    validation: torch.utils.data.Dataset
    test: torch.utils.data.Dataset
    channels: int
    image_size: int
    class_names: dict[str, list[str]]
    rotate_classes: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    def sizes(self) -> dict[str, dict[str, int]]:
        return {
            split: {"classes": len(self.class_names[split]), "images": len(getattr(self, split))}
            for split in ("train", "validation", "test")
        }


# --------------------------------------------------------------------------------------------- glyphs


def _font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


@cache
def _font(name: str):
    from matplotlib.ft2font import FT2Font

    path = _font_dir() / name
    if not path.exists():
        raise FileNotFoundError(f"matplotlib font {name} not found in {_font_dir()}")
    return FT2Font(str(path))


def _raster(char: str, font_name: str) -> np.ndarray:
    """The glyph's anti-aliased coverage bitmap (uint8), cropped to its ink."""
    from matplotlib.ft2font import LoadFlags

    font = _font(font_name)
    font.set_size(48, 72)
    font.set_text(char, 0.0, flags=LoadFlags.DEFAULT)
    font.draw_glyphs_to_bitmap(antialiased=True)
    img = np.asarray(font.get_image())
    rows, cols = np.nonzero(img)
    if rows.size == 0:
        return np.zeros((0, 0), dtype=np.uint8)
    return img[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def render_glyph(char: str, font_name: str, size: int = RENDER_SIZE, box: int = GLYPH_BOX) -> np.ndarray:
    """``char`` in ``font_name``, box-fitted (longer side = ``box``) and centred on a size x size canvas, in [0, 1]."""
    from PIL import Image

    ink = _raster(char, font_name)
    canvas = np.zeros((size, size), dtype=np.float32)
    if ink.size == 0:
        return canvas
    h, w = ink.shape
    factor = box / max(h, w)
    nh, nw = max(1, round(h * factor)), max(1, round(w * factor))
    resized = np.asarray(Image.fromarray(ink).resize((nw, nh), Image.Resampling.LANCZOS), dtype=np.float32)
    top, left = (size - nh) // 2, (size - nw) // 2
    canvas[top : top + nh, left : left + nw] = np.clip(resized / 255.0, 0.0, 1.0)
    return canvas


@lru_cache(maxsize=1)
def glyph_inventory() -> tuple[str, ...]:
    """Every usable glyph class, in code-point order: present in all fonts, inked, and no look-alike."""
    charmaps = [set(_font(name).get_charmap()) for name in GLYPH_FONTS]
    common = set.intersection(*charmaps)
    candidates = [chr(code) for lo, hi in CANDIDATE_RANGES for code in range(lo, hi + 1) if code in common]
    factor = RENDER_SIZE // IMAGE_SIZE
    kept: list[str] = []
    kept_vectors = np.zeros((len(candidates), IMAGE_SIZE * IMAGE_SIZE))
    for char in candidates:
        img = render_glyph(char, GLYPH_FONTS[0]).reshape(IMAGE_SIZE, factor, IMAGE_SIZE, factor).mean((1, 3))
        vec = img.ravel() - img.mean()
        norm = float(np.sqrt(vec @ vec))
        if norm == 0:
            continue
        vec = vec / norm
        if kept and float(np.max(kept_vectors[: len(kept)] @ vec)) >= MAX_GLYPH_CORRELATION:
            continue
        kept_vectors[len(kept)] = vec
        kept.append(char)
    return tuple(kept)


def _affine_jitter(images: torch.Tensor, generator: torch.Generator, strength: float) -> torch.Tensor:
    """Random rotation (+-15 deg), scale (0.85-1.15), shear (+-0.2) and shift (+-8%) per image, x strength."""
    n = images.shape[0]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=generator)

    angle = uniform(-15, 15) * strength * math.pi / 180
    scale = 1.0 + uniform(-0.15, 0.15) * strength
    shear = uniform(-0.2, 0.2) * strength
    shift = torch.stack([uniform(-0.08, 0.08), uniform(-0.08, 0.08)], dim=1) * strength
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
    shear_matrix = torch.zeros(n, 2, 2)
    shear_matrix[:, 0, 0] = 1.0
    shear_matrix[:, 1, 1] = 1.0
    shear_matrix[:, 0, 1] = shear
    linear = rotation @ shear_matrix / scale.view(n, 1, 1)  # affine_grid maps output to input coordinates
    theta = torch.cat([linear, shift.unsqueeze(-1)], dim=2)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def make_glyph_images(
    chars: list[str] | tuple[str, ...], samples_per_class: int, seed: int, jitter: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """[len(chars) * samples_per_class, 1, 28, 28] images in [0, 1] and their class indices (order of ``chars``)."""
    generator = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    clean = {}
    images, labels = [], []
    for label, char in enumerate(chars):
        for _ in range(samples_per_class):
            font_name = rng.choice(GLYPH_FONTS)
            if (char, font_name) not in clean:
                clean[char, font_name] = torch.from_numpy(render_glyph(char, font_name))
            images.append(clean[char, font_name])
            labels.append(label)
    big = torch.stack(images).unsqueeze(1)
    jittered = _affine_jitter(big, generator, jitter) if jitter > 0 else big
    small = F.avg_pool2d(jittered, kernel_size=RENDER_SIZE // IMAGE_SIZE).clamp_(0.0, 1.0)
    return small, torch.tensor(labels, dtype=torch.long)


def split_glyph_classes(class_split: list[int] | tuple[int, ...], data_seed: int) -> dict[str, list[str]]:
    """Disjoint train / validation / test glyph classes, chosen and shuffled with ``data_seed``."""
    inventory = list(glyph_inventory())
    needed = sum(class_split)
    if needed > len(inventory):
        raise ValueError(
            f"class_split {list(class_split)} needs {needed} glyph classes; only {len(inventory)} exist"
        )
    random.Random(data_seed).shuffle(inventory)
    n_train, n_val, _ = class_split
    return {
        "train": inventory[:n_train],
        "validation": inventory[n_train : n_train + n_val],
        "test": inventory[n_train + n_val : needed],
    }


def load_glyphs(
    class_split: list[int] | tuple[int, ...] = (60, 20, 40),
    samples_per_class: int = 20,
    data_seed: int = 0,
    jitter: float = 1.0,
) -> FewShotSplits:
    """The offline dataset: the same images for every run with the same arguments."""
    classes = split_glyph_classes(class_split, data_seed)
    datasets = {}
    for offset, (split, chars) in enumerate(classes.items()):
        images, labels = make_glyph_images(
            chars, samples_per_class, seed=data_seed * 1000 + offset, jitter=jitter
        )
        datasets[split] = torch.utils.data.TensorDataset(images, labels)
    names = {split: [f"U+{ord(c):04X} {c}" for c in chars] for split, chars in classes.items()}
    return FewShotSplits(
        "glyphs", datasets["train"], datasets["validation"], datasets["test"], 1, IMAGE_SIZE, names
    )


# ------------------------------------------------------------------------------------------- omniglot


def omniglot_dir(root: str | os.PathLike) -> Path:
    return Path(root).expanduser() / "omniglot-py"


def check_omniglot(root: str | os.PathLike) -> None:
    base = omniglot_dir(root)
    for part in ("images_background", "images_evaluation"):
        if not (base / part).is_dir():
            raise FileNotFoundError(
                f"Omniglot not found: expected the folder {base / part} (torchvision's layout; nothing is "
                f"downloaded at run time, set data_dir to a directory holding omniglot-py/)"
            )


@contextlib.contextmanager
def _accept_extracted():
    """Let torchvision's Omniglot accept a copy whose archives are already extracted.

    torchvision's ``Omniglot`` checks the MD5 of ``images_{background,evaluation}.zip`` even with
    ``download=False``, and then reads only the extracted folders. A copy with the verified zips passes
    unchanged; a copy with only the folders (a pre-extracted cluster copy, or our test fixture) is
    accepted when the folder exists. Scoped to the constructor call; the class is restored afterwards.
    """
    from torchvision.datasets import Omniglot

    original = Omniglot._check_integrity

    def check(self) -> bool:
        return original(self) or Path(self.root, self._get_target_folder()).is_dir()

    Omniglot._check_integrity = check
    try:
        yield
    finally:
        Omniglot._check_integrity = original


class _SubsetByClass(torch.utils.data.Dataset):
    """The items of ``dataset`` whose label is in ``classes``, relabelled 0..len(classes)-1, lazily loaded."""

    def __init__(self, dataset, labels: list[int], classes: list[int]):
        index = {c: i for i, c in enumerate(classes)}
        self.dataset = dataset
        self.items = [(i, index[y]) for i, y in enumerate(labels) if y in index]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        image, _ = self.dataset[self.items[i][0]]
        return image, self.items[i][1]


def load_omniglot(
    root: str | os.PathLike,
    class_split: list[int] | tuple[int, ...] = OMNIGLOT_SPLIT,
    data_seed: int = 0,
) -> FewShotSplits:
    """Omniglot via ``learn2learn.vision.datasets.FullOmniglot(root, download=False)``.

    learn2learn's benchmark shuffles the 1,623 classes with Python's global ``random`` and cuts
    1100 / 100 / 423; here the shuffle is seeded with ``data_seed`` so the split is reproducible.
    """
    import learn2learn as l2l
    from PIL.Image import Resampling
    from torchvision import transforms

    check_omniglot(root)
    image_transform = transforms.Compose(
        [
            transforms.Resize(IMAGE_SIZE, interpolation=Resampling.LANCZOS),
            transforms.ToTensor(),
            lambda x: 1.0 - x,
        ]
    )
    with _accept_extracted():
        full = l2l.vision.datasets.FullOmniglot(root=str(Path(root).expanduser()), transform=image_transform)
    labels = [label for part in full.dataset.datasets for _, label in _omniglot_items(part)]
    classes = sorted(set(labels))
    if sum(class_split) > len(classes):
        raise ValueError(
            f"class_split {list(class_split)} needs {sum(class_split)} classes; Omniglot at {root} has {len(classes)}"
        )
    random.Random(data_seed).shuffle(classes)
    n_train, n_val, n_test = class_split
    chosen = {
        "train": classes[:n_train],
        "validation": classes[n_train : n_train + n_val],
        "test": classes[n_train + n_val : n_train + n_val + n_test],
    }
    characters = [c for part in full.dataset.datasets for c in part._characters]
    splits = {name: _SubsetByClass(full, labels, cls) for name, cls in chosen.items()}
    names = {name: [characters[c] for c in cls] for name, cls in chosen.items()}
    return FewShotSplits(
        "omniglot",
        splits["train"],
        splits["validation"],
        splits["test"],
        1,
        IMAGE_SIZE,
        names,
        rotate_classes=True,
    )


def _omniglot_items(part) -> list[tuple[str, int]]:
    """(file, label) of one torchvision Omniglot part, with the evaluation part's label offset applied."""
    offset = part.target_transform(0) if part.target_transform else 0
    return [(name, label + offset) for name, label in part._flat_character_images]


# --------------------------------------------------------------------------------------- miniImageNet


def check_miniimagenet(root: str | os.PathLike) -> None:
    base = Path(root).expanduser()
    missing = [
        f"mini-imagenet-cache-{s}.pkl"
        for s in MINIIMAGENET_SPLITS
        if not (base / f"mini-imagenet-cache-{s}.pkl").is_file()
    ]
    if missing:
        raise FileNotFoundError(
            f"miniImageNet not found: {base} lacks {', '.join(missing)} (learn2learn's pickles; nothing is "
            f"downloaded at run time)"
        )


class _Scaled(torch.utils.data.Dataset):
    """(image / 255, label as int): learn2learn's benchmark ``data_augmentation='normalize'``."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        image, label = self.dataset[i]
        return image / 255.0, int(label)


def load_miniimagenet(root: str | os.PathLike) -> FewShotSplits:
    """miniImageNet via ``learn2learn.vision.datasets.MiniImagenet(root, mode, download=False)``."""
    import learn2learn as l2l

    check_miniimagenet(root)
    splits, names = {}, {}
    for split, mode in MINIIMAGENET_SPLITS.items():
        ds = l2l.vision.datasets.MiniImagenet(root=str(Path(root).expanduser()), mode=mode, download=False)
        splits[split] = _Scaled(ds)
        names[split] = list(ds.data["class_dict"].keys())
    size = int(splits["train"].dataset.x.shape[-1])
    return FewShotSplits(
        "miniimagenet", splits["train"], splits["validation"], splits["test"], 3, size, names
    )


# --------------------------------------------------------------------------------------- image folder

#: torchvision's ``IMG_EXTENSIONS`` (what ``ImageFolder`` reads), matched case-insensitively
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".png",
    ".ppm",
    ".bmp",
    ".pgm",
    ".tif",
    ".tiff",
    ".webp",
)
#: split -> the folder names that hold it, in a folder with split subfolders
FOLDER_SPLITS: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "validation": ("val", "validation"),
    "test": ("test",),
}
FOLDER_MIN_IMAGE_SIZE = 16  # Conv-4 halves the side four times


@dataclass(frozen=True)
class FolderLayout:
    """A folder's classes per split, each with its image files (sorted paths), before any image is read."""

    root: Path
    classes: dict[str, dict[str, tuple[Path, ...]]]  # split -> class name -> image files
    split_by: str  # "subfolders" or "class_split"
    ignored_files: int  # files in class folders that are not images

    def counts(self) -> dict[str, int]:
        return {split: len(classes) for split, classes in self.classes.items()}

    def description(self) -> str:
        n = self.counts()
        cut = f"{n['train']} / {n['validation']} / {n['test']} classes"
        if self.split_by == "subfolders":
            return f"{cut} from its train / val / test subfolders"
        return f"{cut} (train / validation / test), split by class_split proportions"


def _visible(entry: os.DirEntry) -> bool:
    return not entry.name.startswith(".")


def _subfolders(folder: Path) -> list[Path]:
    with os.scandir(folder) as entries:
        return sorted(Path(e.path) for e in entries if _visible(e) and e.is_dir())


def _class_images(folder: Path) -> tuple[tuple[Path, ...], int]:
    """(the image files under a class folder, recursively as ImageFolder does, sorted; other files)."""
    images, other = [], 0
    for parent, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith("."):
                continue
            if name.lower().endswith(IMAGE_EXTENSIONS):
                images.append(Path(parent) / name)
            else:
                other += 1
    return tuple(sorted(images)), other


def _scan_classes(folder: Path) -> tuple[dict[str, tuple[Path, ...]], int]:
    classes, ignored = {}, 0
    for sub in _subfolders(folder):
        classes[sub.name], other = _class_images(sub)
        ignored += other
    return classes, ignored


def proportional_counts(n: int, class_split: list[int] | tuple[int, ...]) -> list[int]:
    """``n`` classes cut in the proportions of ``class_split`` (largest remainder; ties to the earlier split)."""
    total = sum(class_split)
    exact = [n * c / total for c in class_split]
    counts = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    return counts


def image_folder_layout(
    root: str | os.PathLike, class_split: list[int] | tuple[int, ...] = (60, 20, 40), data_seed: int = 0
) -> FolderLayout:
    """The classes of each split of an ImageFolder-style ``root`` (see the module docstring).

    Raises FileNotFoundError (no such folder, no class folders) or ValueError (incomplete split
    subfolders, a class in two splits), each naming the folder and what is expected.
    """
    base = Path(root).expanduser()
    expected = (
        "expected <data_dir>/<class>/<images> or <data_dir>/{train,val,test}/<class>/<images> "
        "(torchvision's ImageFolder layout)"
    )
    if not base.is_dir():
        raise FileNotFoundError(f"image folder not found: {base} is not a directory; {expected}")
    present = {p.name for p in _subfolders(base)}
    split_names = {name for names in FOLDER_SPLITS.values() for name in names}
    if present & split_names:
        folders = {}
        for split, names in FOLDER_SPLITS.items():
            found = [name for name in names if name in present]
            if len(found) != 1:
                have = ", ".join(f"{n}/" for n in sorted(present & split_names))
                problem = (
                    "both val/ and validation/" if found else f"no {' or '.join(f'{n}/' for n in names)}"
                )
                raise ValueError(
                    f"image folder {base} has {have} but {problem}: with split subfolders it needs exactly "
                    "train/, val/ (or validation/) and test/, each holding class folders; or put the class "
                    "folders directly under data_dir to split them by class_split"
                )
            folders[split] = base / found[0]
        classes, ignored = {}, 0
        for split, folder in folders.items():
            classes[split], other = _scan_classes(folder)
            ignored += other
        for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
            shared = sorted(set(classes[a]) & set(classes[b]))
            if shared:
                raise ValueError(
                    f"image folder {base}: class {shared[0]!r} is in both {folders[a].name}/ and "
                    f"{folders[b].name}/ ({len(shared)} shared); few-shot splits are by class, so "
                    "validation and test classes must be unseen in training"
                )
        return FolderLayout(base, classes, "subfolders", ignored)
    every, ignored = _scan_classes(base)
    if not every:
        loose = len(_class_images(base)[0])
        found = f" (it holds {loose} image files directly: one class?)" if loose else ""
        raise FileNotFoundError(f"image folder {base} has no class folders{found}; {expected}")
    names = sorted(every)
    random.Random(data_seed).shuffle(names)
    n_train, n_val, _ = proportional_counts(len(names), class_split)
    cut = {
        "train": names[:n_train],
        "validation": names[n_train : n_train + n_val],
        "test": names[n_train + n_val :],
    }
    classes = {split: {name: every[name] for name in sorted(chosen)} for split, chosen in cut.items()}
    return FolderLayout(base, classes, "class_split", ignored)


def check_image_folder(layout: FolderLayout, needs: dict[str, tuple[int, int]]) -> None:
    """ValueError unless every split has ``needs[split] = (ways, images per class)``: enough classes for
    its episodes' ways, and enough images in each class for its shots + queries."""
    short = {split: n for split, n in layout.counts().items() if n < needs[split][0]}
    if short:
        have = ", ".join(f"{split} has {n}" for split, n in short.items())
        how = (
            "add classes to those subfolders"
            if layout.split_by == "subfolders"
            else "add classes or change class_split"
        )
        raise ValueError(
            f"image folder {layout.root}: {layout.description()}; episodes need train_ways="
            f"{needs['train'][0]} and ways={needs['test'][0]} classes per split, but {have} ({how})"
        )
    for split, (_, per_class) in needs.items():
        few = {name: len(files) for name, files in layout.classes[split].items() if len(files) < per_class}
        if few:
            listed = ", ".join(f"{name!r} has {n}" for name, n in list(few.items())[:3])
            more = f" and {len(few) - 3} more" if len(few) > 3 else ""
            queries = "train_queries" if split == "train" else "queries"
            raise ValueError(
                f"image folder {layout.root}: {split} episodes need shots + {queries} = {per_class} images "
                f"per class, but {len(few)} {split} class(es) have fewer: {listed}{more} (lower shots or "
                f"{queries}, or add images or remove those classes)"
            )


class _ImageTensors(torch.utils.data.TensorDataset):
    """uint8 images [N, C, S, S] and labels, served as float images in [0, 1] (a TensorDataset, so that
    learn2learn's label index is built from the label tensor without reading the images)."""

    def __getitem__(self, i):
        image, label = super().__getitem__(i)
        return image.float().div(255.0), label


def read_image(path: Path, size: int, channels: int) -> np.ndarray:
    """One image file as uint8 [channels, size, size]: grayscale or RGB, LANCZOS-resized to a square."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            converted = image.convert("L" if channels == 1 else "RGB")
            resized = converted.resize((size, size), Image.Resampling.LANCZOS)
    except OSError as e:  # PIL's UnidentifiedImageError is an OSError
        raise ValueError(f"image folder: cannot read {path} as an image ({e})") from None
    pixels = np.asarray(resized, dtype=np.uint8)
    return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)


def load_image_folder(
    root: str | os.PathLike,
    class_split: list[int] | tuple[int, ...] = (60, 20, 40),
    data_seed: int = 0,
    image_size: int = IMAGE_SIZE,
    image_channels: int = 1,
    layout: FolderLayout | None = None,
) -> FewShotSplits:
    """A user's ImageFolder-style ``root``, every image decoded once (labels 0..k-1 per split, classes in
    name order)."""
    if image_channels not in (1, 3):
        raise ValueError(f"image_channels must be 1 (grayscale) or 3 (RGB), got {image_channels}")
    if image_size < FOLDER_MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be at least {FOLDER_MIN_IMAGE_SIZE}, got {image_size}")
    layout = layout or image_folder_layout(root, class_split, data_seed)
    datasets, names = {}, {}
    for split, classes in layout.classes.items():
        images, labels = [], []
        for label, files in enumerate(classes.values()):
            images += [read_image(path, image_size, image_channels) for path in files]
            labels += [label] * len(files)
        pixels = (
            torch.from_numpy(np.stack(images))
            if images
            else torch.zeros(0, image_channels, image_size, image_size, dtype=torch.uint8)
        )
        datasets[split] = _ImageTensors(pixels, torch.tensor(labels, dtype=torch.long))
        names[split] = list(classes)
    details = {
        "data_dir": str(layout.root),
        "split": layout.description(),
        "images": f"{image_size}x{image_size}, {'grayscale' if image_channels == 1 else 'RGB'}",
        "ignored_files": layout.ignored_files,
    }
    return FewShotSplits(
        "folder",
        datasets["train"],
        datasets["validation"],
        datasets["test"],
        image_channels,
        image_size,
        names,
        details=details,
    )


# ------------------------------------------------------------------------------------------ dispatch


def load(
    dataset: str,
    data_dir: str = "",
    class_split: list[int] | tuple[int, ...] | None = None,
    samples_per_class: int = 20,
    data_seed: int = 0,
    jitter: float = 1.0,
    image_size: int = IMAGE_SIZE,
    image_channels: int = 1,
) -> FewShotSplits:
    """The named dataset's splits (``class_split`` applies to glyphs and Omniglot, as proportions to a
    folder without split subfolders; miniImageNet's is fixed; ``image_*`` apply to a folder)."""
    if dataset == "glyphs":
        return load_glyphs(class_split or (60, 20, 40), samples_per_class, data_seed, jitter)
    if dataset == "omniglot":
        return load_omniglot(data_dir, class_split or OMNIGLOT_SPLIT, data_seed)
    if dataset == "miniimagenet":
        return load_miniimagenet(data_dir)
    if dataset == "folder":
        return load_image_folder(data_dir, class_split or (60, 20, 40), data_seed, image_size, image_channels)
    raise ValueError(f"unknown few-shot dataset {dataset!r}; valid datasets are: {', '.join(DATASETS)}")
