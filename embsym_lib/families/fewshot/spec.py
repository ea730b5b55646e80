"""The few-shot family's spec and parameter schema (Prototypical Networks through learn2learn)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, model_validator

from ...schema import (
    Count,
    DataSeed,
    FisherVariants,
    LearningRate,
    NonNegativeCount,
    Positive,
    RunParams,
    Scale,
    ScoreTestVariants,
    data_checked,
)
from ...symmetry import asymmetric
from .. import FamilySpec
from . import tables
from .tables import ARMS

IMAGE_SIZE = (
    28  # = embsym_lib.data.fewshot.IMAGE_SIZE (glyphs, Omniglot), named here to avoid importing torch
)
FOLDER_MIN_IMAGE_SIZE = (
    16  # = embsym_lib.data.fewshot.FOLDER_MIN_IMAGE_SIZE: Conv-4 halves the side four times
)
IMAGES_PER_CLASS = {"omniglot": 20, "miniimagenet": 600}  # glyphs: samples_per_class
PAPER_CLAIM = "dnorm beats cosine and the squared-Euclidean default of Prototypical Networks"


class FewshotParams(RunParams):
    dataset: Literal["glyphs", "omniglot", "miniimagenet", "folder"] = Field(
        "glyphs",
        description="generated font glyphs (offline), a local Omniglot / miniImageNet copy, or your own "
        "images in an ImageFolder layout (folder)",
    )
    data_dir: str = Field(
        "",
        description="folder holding omniglot-py/ or the mini-imagenet-cache-*.pkl files; for folder, the "
        "folder of class folders <class>/<images> (or of train/, val/, test/ holding class folders)",
    )
    class_split: list[Count] = Field(
        [60, 20, 40],
        min_length=3,
        max_length=3,
        description="classes for [train, validation, test] (glyphs, Omniglot; miniImageNet's is fixed); "
        "for a folder without split subfolders, the proportions its classes are cut in",
    )
    samples_per_class: Count = Field(20, description="generated images per glyph class")
    data_seed: DataSeed = 0
    jitter: float = Field(1.0, ge=0, le=2, description="strength of the glyphs' random affine jitter")
    image_size: int = Field(
        IMAGE_SIZE,
        ge=FOLDER_MIN_IMAGE_SIZE,
        le=1024,
        description="folder images are resized to image_size x image_size pixels (folder only)",
    )
    image_channels: Literal[1, 3] = Field(
        1, description="folder images are read as grayscale (1) or RGB (3) (folder only)"
    )
    ways: int = Field(5, ge=2, description="classes per validation and test episode")
    shots: Count = Field(1, description="support images per class (training and test)")
    queries: Count = Field(15, description="query images per class in validation and test episodes")
    train_ways: int = Field(5, ge=2, description="classes per training episode")
    train_queries: Count = Field(5, description="query images per class in training episodes")
    episodes: Count = Field(200, description="training episodes")
    lr: LearningRate = 0.001
    lr_halve_every: NonNegativeCount = Field(0, description="halve lr every this many episodes (0: never)")
    eval_every: Count = Field(50, description="validate every this many episodes (and at the end)")
    val_episodes: Count = Field(100, description="validation episodes (fixed per seed)")
    test_episodes: Count = Field(600, description="test episodes (the same for every arm of a seed)")
    hidden: Count = Field(32, description="channels of the Conv-4 backbone")
    scale: Scale = Field(10.0, description="logit scale α = 1/τ of every grid arm")
    fisher_pairs: int = Field(
        400,
        ge=0,
        description="validation (image, class prototype) pairs for the Fisher predictor before training (0: off)",
    )
    fisher_batch: Count = Field(
        20, description="classes per batch of the Fisher predictor's InfoNCE (at most the validation classes)"
    )
    fisher_variants: FisherVariants = ["cosine"]
    score_test_variants: ScoreTestVariants = ["dot"]
    euclidean_scale: Positive = Field(1.0, description="logit scale of the squared-Euclidean arm")
    prototype: Literal["raw", "normalized"] = Field(
        "raw", description="prototype = mean of raw (Snell et al.) or of unit-normalized support embeddings"
    )

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo):
        if self.dataset != "folder" and (self.image_size, self.image_channels) != (IMAGE_SIZE, 1):
            raise ValueError(
                f"image_size and image_channels apply to dataset 'folder' only; {self.dataset} images are "
                f"fixed (got image_size={self.image_size}, image_channels={self.image_channels})"
            )
        if self.dataset in ("glyphs", "omniglot"):
            n_train, n_val, n_test = self.class_split
            if n_train < self.train_ways:
                raise ValueError(
                    f"class_split has {n_train} training classes, fewer than train_ways={self.train_ways}"
                )
            if min(n_val, n_test) < self.ways:
                raise ValueError(
                    f"class_split {self.class_split}: validation and test need at least ways={self.ways} "
                    "classes each"
                )
        if self.dataset != "folder":  # a folder's images per class are counted on disk
            per_class = IMAGES_PER_CLASS.get(self.dataset, self.samples_per_class)
            needed = self.shots + max(self.queries, self.train_queries)
            if needed > per_class:
                raise ValueError(
                    f"shots + queries = {needed} images per class, but {self.dataset} has {per_class} per class"
                )
        from ...data import fewshot as data  # the fonts and folders are only read to validate

        if self.dataset == "glyphs":
            available = len(data.glyph_inventory())
            if sum(self.class_split) > available:
                raise ValueError(
                    f"class_split {self.class_split} needs {sum(self.class_split)} glyph classes; the fonts "
                    f"give {available}"
                )
            return self
        if not self.data_dir:
            what = "your image folder" if self.dataset == "folder" else "a local directory"
            raise ValueError(f"dataset {self.dataset!r} needs data_dir: {what} (nothing is downloaded)")
        if not data_checked(info):
            return self
        from ...records import project_path

        root = str(project_path(self.data_dir))
        try:
            if self.dataset == "folder":
                data.check_image_folder(
                    data.image_folder_layout(root, self.class_split, self.data_seed), self.episode_needs()
                )
            elif self.dataset == "omniglot":
                data.check_omniglot(root)
            else:
                data.check_miniimagenet(root)
        except FileNotFoundError as e:
            raise ValueError(str(e)) from None
        return self

    def episode_needs(self) -> dict[str, tuple[int, int]]:
        """split -> (classes per episode, images per class) that its episodes draw."""
        return {
            "train": (self.train_ways, self.shots + self.train_queries),
            "validation": (self.ways, self.shots + self.queries),
            "test": (self.ways, self.shots + self.queries),
        }


SPEC = FamilySpec(
    name="fewshot",
    title="Few-shot classification (Prototypical Networks)",
    notebook="fewshot.ipynb",
    description=(
        "Prototypical Networks (Conv-4, learn2learn episodes): query embedding q scored against class "
        "prototypes d under each variant, plus the squared-Euclidean default; N-way K-shot accuracy with a "
        "95% CI over >= 600 test episodes of unseen classes. Offline: generated font glyphs; paper: "
        "Omniglot and miniImageNet; your own: an image folder (dataset folder)."
    ),
    tasks={"fewshot": asymmetric("fewshot", "query", "prototype", "query image → class prototype")},
    primary_metric="accuracy",
    metrics=("accuracy", "val_accuracy"),
    variants=ARMS,
    grid_axes=("shots", "dataset"),
    metric_scale=100.0,
    params=FewshotParams,
    sections=tables.sections,
    extra={"paper_claim": PAPER_CLAIM},
)
