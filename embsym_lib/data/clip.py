"""Image-caption pairs for the CLIP family.

Offline: ``shapes_dataset`` renders small scenes of one or two coloured shapes with compositional
captions ("a small red circle left of a large blue square"), deterministically from a seed, in
numpy only. Paper profile: ``load_coco_captions`` reads the COCO Captions annotation JSON
(``captions_train2017.json`` / ``captions_val2017.json``) and its image folder.

Both return an ``ImageCaptionSet``: images (a uint8 array or a list of file paths), captions, and
``caption_image`` (the index of each caption's image), so one image may have several captions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 210, 40),
    "purple": (150, 60, 190),
    "cyan": (40, 200, 210),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
# Half-extent in pixels at 32 px; scaled with the image size.
SIZES: dict[str, tuple[float, float]] = {"small": (2.5, 3.5), "large": (5.0, 6.5)}
BACKGROUND = 235
# Opposite phrasings of the same layout, so captions are not a fixed function of the pixels.
RELATIONS = {"horizontal": ("left of", "right of"), "vertical": ("above", "below")}


@dataclass(frozen=True)
class ImageCaptionSet:
    """Aligned image-caption pairs. ``images``: uint8 [N, H, W, 3] or N file paths;
    ``caption_image[j]``: the image that caption j describes."""

    images: np.ndarray | list[str]
    captions: list[str]
    caption_image: np.ndarray

    def __post_init__(self):
        if len(self.captions) != len(self.caption_image):
            raise ValueError(
                f"{len(self.captions)} captions but {len(self.caption_image)} caption_image entries"
            )

    @property
    def n_images(self) -> int:
        return len(self.images)

    def image_captions(self) -> dict[int, list[int]]:
        """Image index -> indices of its captions."""
        out: dict[int, list[int]] = {}
        for j, i in enumerate(self.caption_image.tolist()):
            out.setdefault(int(i), []).append(j)
        return out

    def first_caption_pairs(self) -> ImageCaptionSet:
        """One caption per image (its first): the training view, where batch row i pairs image i."""
        first = {int(i): j for j, i in reversed(list(enumerate(self.caption_image.tolist())))}
        order = sorted(first)
        images = (
            self.images[order] if isinstance(self.images, np.ndarray) else [self.images[i] for i in order]
        )
        return ImageCaptionSet(images, [self.captions[first[i]] for i in order], np.arange(len(order)))

    def subset(self, image_indices) -> ImageCaptionSet:
        """The given images (in that order) and all their captions."""
        image_indices = [int(i) for i in image_indices]
        new_index = {old: new for new, old in enumerate(image_indices)}
        keep = [j for j, i in enumerate(self.caption_image.tolist()) if int(i) in new_index]
        images = (
            self.images[image_indices]
            if isinstance(self.images, np.ndarray)
            else [self.images[i] for i in image_indices]
        )
        return ImageCaptionSet(
            images,
            [self.captions[j] for j in keep],
            np.array([new_index[int(self.caption_image[j])] for j in keep], dtype=np.int64),
        )


def _shape_mask(kind: str, cx: float, cy: float, half: float, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    if kind == "circle":
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= half**2
    if kind == "square":
        return (np.abs(xx - cx) <= half) & (np.abs(yy - cy) <= half)
    if kind == "triangle":
        # Upward triangle: apex at the top, base at the bottom, inside both slanted edges.
        top, bottom = cy - half, cy + half
        width_at_row = (yy - top) / max(2 * half, 1e-6) * half
        return (yy >= top) & (yy <= bottom) & (np.abs(xx - cx) <= width_at_row)
    raise ValueError(f"unknown shape {kind!r}; valid shapes are: {', '.join(SHAPES)}")


def _describe(size: str, color: str, shape: str) -> str:
    return f"{size} {color} {shape}"


def render_scene(objects: list[dict], image_size: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``objects`` (dicts with shape, color, cx, cy, half) on a noisy light background."""
    yy, xx = np.mgrid[0:image_size, 0:image_size].astype(np.float32) + 0.5
    image = np.full((image_size, image_size, 3), BACKGROUND, dtype=np.float32)
    image += rng.normal(0.0, 6.0, size=image.shape)
    for obj in objects:
        mask = _shape_mask(obj["shape"], obj["cx"], obj["cy"], obj["half"], yy, xx)
        tint = np.asarray(COLORS[obj["color"]], dtype=np.float32) + rng.normal(0.0, 12.0, size=3)
        image[mask] = tint
    return np.clip(image, 0, 255).astype(np.uint8)


def _random_object(rng: np.random.Generator, scale: float) -> dict:
    size = str(rng.choice(list(SIZES)))
    lo, hi = SIZES[size]
    return {
        "size": size,
        "color": str(rng.choice(list(COLORS))),
        "shape": str(rng.choice(SHAPES)),
        "half": float(rng.uniform(lo, hi)) * scale,
    }


def _place(obj: dict, x_range: tuple[float, float], y_range: tuple[float, float], rng: np.random.Generator):
    margin = obj["half"] + 0.5
    obj["cx"] = float(rng.uniform(max(x_range[0], margin), max(x_range[1] - margin, max(x_range[0], margin))))
    obj["cy"] = float(rng.uniform(max(y_range[0], margin), max(y_range[1] - margin, max(y_range[0], margin))))


def make_scene(
    rng: np.random.Generator, image_size: int, two_object_fraction: float
) -> tuple[np.ndarray, str]:
    """One rendered scene and its caption."""
    scale = image_size / 32.0
    n = image_size
    if rng.random() >= two_object_fraction:
        obj = _random_object(rng, scale)
        quadrant_x = int(rng.integers(2))
        quadrant_y = int(rng.integers(2))
        _place(
            obj,
            (quadrant_x * n / 2, (quadrant_x + 1) * n / 2),
            (quadrant_y * n / 2, (quadrant_y + 1) * n / 2),
            rng,
        )
        where = f"{('top', 'bottom')[quadrant_y]} {('left', 'right')[quadrant_x]}"
        return render_scene(
            [obj], image_size, rng
        ), f"a {_describe(obj['size'], obj['color'], obj['shape'])} at the {where}"
    first, second = _random_object(rng, scale), _random_object(rng, scale)
    layout = str(rng.choice(list(RELATIONS)))
    if layout == "horizontal":
        _place(first, (0, n / 2), (0, n), rng)
        _place(second, (n / 2, n), (0, n), rng)
    else:
        _place(first, (0, n), (0, n / 2), rng)
        _place(second, (0, n), (n / 2, n), rng)
    forward, backward = RELATIONS[layout]
    a, b = (
        _describe(first["size"], first["color"], first["shape"]),
        _describe(second["size"], second["color"], second["shape"]),
    )
    caption = f"a {a} {forward} a {b}" if rng.random() < 0.5 else f"a {b} {backward} a {a}"
    return render_scene([first, second], image_size, rng), caption


def shapes_dataset(
    n_pairs: int, seed: int = 0, image_size: int = 32, two_object_fraction: float = 0.8
) -> ImageCaptionSet:
    """``n_pairs`` rendered scenes with one caption each; the same arguments give the same bytes."""
    if n_pairs < 1:
        raise ValueError(f"n_pairs must be >= 1, got {n_pairs}")
    rng = np.random.default_rng(seed)
    images = np.empty((n_pairs, image_size, image_size, 3), dtype=np.uint8)
    captions: list[str] = []
    for i in range(n_pairs):
        images[i], caption = make_scene(rng, image_size, two_object_fraction)
        captions.append(caption)
    return ImageCaptionSet(images, captions, np.arange(n_pairs, dtype=np.int64))


def shapes_splits(
    n_train: int, n_test: int, seed: int = 0, image_size: int = 32, two_object_fraction: float = 0.8
) -> tuple[ImageCaptionSet, ImageCaptionSet]:
    """Train and test sets drawn from independent streams of one data seed (fixed across run seeds)."""
    train = shapes_dataset(
        n_train, seed=seed * 2 + 1, image_size=image_size, two_object_fraction=two_object_fraction
    )
    test = shapes_dataset(
        n_test, seed=seed * 2 + 2, image_size=image_size, two_object_fraction=two_object_fraction
    )
    return train, test


def load_coco_captions(
    annotation_file: str | Path, image_dir: str | Path, max_images: int = 0
) -> ImageCaptionSet:
    """COCO Captions (``captions_*.json``: ``images`` with id/file_name, ``annotations`` with
    image_id/caption) and the folder holding the image files. Images are ordered by id, captions
    by annotation id; ``max_images`` > 0 keeps the first that many images (by id)."""
    annotation_file, image_dir = Path(annotation_file), Path(image_dir)
    if not annotation_file.is_file():
        raise FileNotFoundError(f"COCO captions annotation file not found: {annotation_file}")
    if not image_dir.is_dir():
        raise FileNotFoundError(f"COCO image folder not found: {image_dir}")
    data = json.loads(annotation_file.read_text())
    for key in ("images", "annotations"):
        if key not in data:
            raise ValueError(f"{annotation_file}: not a COCO captions file (no {key!r} key)")
    images = sorted(data["images"], key=lambda im: im["id"])
    if max_images > 0:
        images = images[:max_images]
    index_of = {im["id"]: i for i, im in enumerate(images)}
    annotations = sorted(
        (a for a in data["annotations"] if a["image_id"] in index_of), key=lambda a: a.get("id", 0)
    )
    paths = [str(image_dir / im["file_name"]) for im in images]
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} COCO images missing from {image_dir}, e.g. {missing[0]}")
    return ImageCaptionSet(
        paths,
        [" ".join(a["caption"].split()) for a in annotations],
        np.array([index_of[a["image_id"]] for a in annotations], dtype=np.int64),
    )
