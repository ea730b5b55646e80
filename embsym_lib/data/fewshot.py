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
"""

from __future__ import annotations

import contextlib
import math
import os
import random
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

DATASETS: tuple[str, ...] = ("glyphs", "omniglot", "miniimagenet")
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
    """

    name: str
    train: torch.utils.data.Dataset
    validation: torch.utils.data.Dataset
    test: torch.utils.data.Dataset
    channels: int
    image_size: int
    class_names: dict[str, list[str]]
    rotate_classes: bool = False

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


# ------------------------------------------------------------------------------------------ dispatch


def load(
    dataset: str,
    data_dir: str = "",
    class_split: list[int] | tuple[int, ...] | None = None,
    samples_per_class: int = 20,
    data_seed: int = 0,
    jitter: float = 1.0,
) -> FewShotSplits:
    """The named dataset's splits (``class_split`` applies to glyphs and Omniglot; miniImageNet's is fixed)."""
    if dataset == "glyphs":
        return load_glyphs(class_split or (60, 20, 40), samples_per_class, data_seed, jitter)
    if dataset == "omniglot":
        return load_omniglot(data_dir, class_split or OMNIGLOT_SPLIT, data_seed)
    if dataset == "miniimagenet":
        return load_miniimagenet(data_dir)
    raise ValueError(f"unknown few-shot dataset {dataset!r}; valid datasets are: {', '.join(DATASETS)}")
