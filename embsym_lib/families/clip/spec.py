"""The CLIP family's spec and parameter schema."""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, model_validator

from ...records import project_path
from ...schema import (
    BatchSize,
    Count,
    DataSeed,
    Epochs,
    EvalBatchSize,
    Fraction,
    LearningRate,
    NonNegative,
    NonNegativeCount,
    RunParams,
    WarmupRatio,
    data_checked,
)
from ...symmetry import asymmetric, bidirectional
from .. import FamilySpec
from . import tables

KS: tuple[int, ...] = (1, 5)
# The offline model, registered with open_clip by adapters/open_clip.py (TINY_CONFIG; a test checks that
# these agree). Spelled out here so that validation does not import open_clip (seconds).
TINY_MODEL = "embsym-tiny"
TINY_PATCH_SIZE = 8
COCO_FILES = ("coco_train_annotations", "coco_train_images", "coco_test_annotations", "coco_test_images")


@cache
def open_clip_models() -> frozenset[str]:
    """The model names open_clip knows (``open_clip.list_models()``: its model_configs/*.json), found
    without importing it, and ``embsym-tiny``."""
    found = importlib.util.find_spec("open_clip")
    folders = list(found.submodule_search_locations or []) if found else []
    names = {p.stem for folder in folders for p in Path(folder, "model_configs").glob("*.json")}
    return frozenset(names | {TINY_MODEL})


def check_coco(root: Path, params: ClipParams) -> None:
    """The COCO folder and the annotation files and image folders named under it exist."""
    if not root.is_dir():
        raise ValueError(f"data_dir {params.data_dir!r} is not a folder (dataset 'coco')")
    for key in COCO_FILES:
        path = root / getattr(params, key)
        if not path.exists():
            raise ValueError(f"{key} ({getattr(params, key)!r} under data_dir) not found: {path}")


class ClipParams(RunParams):
    loss_direction: Literal["sym", "i2t", "t2i"] = Field(
        "sym", description="the loss's direction(s): both (sym), image→text (i2t) or text→image (t2i)"
    )
    dataset: Literal["shapes", "coco"] = Field(
        "shapes", description="rendered shape scenes (offline) or COCO Captions under data_dir"
    )
    n_train: Count = Field(3200, description="training image-caption pairs (shapes)")
    n_test: int = Field(500, ge=max(KS) + 1, description="test image-caption pairs (shapes)")
    image_size: Count = Field(32, description="image side in pixels (embsym-tiny: a multiple of 8)")
    two_object_fraction: Fraction = Field(0.8, description="share of shape scenes with two objects")
    data_seed: DataSeed = 0
    data_dir: str = Field("", description="COCO folder (dataset coco): annotations/ and the image folders")
    coco_train_annotations: str = Field(
        "annotations/captions_train2017.json", description="training captions JSON, under data_dir"
    )
    coco_train_images: str = Field("train2017", description="training image folder, under data_dir")
    coco_test_annotations: str = Field(
        "annotations/captions_val2017.json", description="test captions JSON, under data_dir"
    )
    coco_test_images: str = Field("val2017", description="test image folder, under data_dir")
    max_train_images: NonNegativeCount = Field(0, description="first COCO training images kept (0: all)")
    max_test_images: NonNegativeCount = Field(0, description="first COCO test images kept (0: all)")
    model: str = Field(TINY_MODEL, description="open_clip model config, trained from random init")
    epochs: Epochs = 4
    batch_size: BatchSize = 128
    lr: LearningRate = 0.0005
    weight_decay: NonNegative = Field(
        0.2, description="AdamW weight decay (not on gains, biases, logit scale)"
    )
    warmup_ratio: WarmupRatio = 0.1
    grad_clip_norm: NonNegative = Field(1.0, description="gradient norm clip (0: none)")
    learn_logit_scale: bool = Field(True, description="learn open_clip's logit scale (clamped to ≤ 100)")
    magnitude_pool_k: Count = Field(
        10, description="unmatched items per query in Cohen's d's pool (top-k by cosine)"
    )
    eval_batch_size: EvalBatchSize = 512
    zero_shot: bool = Field(True, description="run the zero-shot analysis (once per seed, on cosine/sym)")
    zero_shot_model: str = Field(
        "", description="open_clip model of the zero-shot analysis (empty: the trained model as a stand-in)"
    )
    zero_shot_pretrained: str = Field("", description="its weights: an open_clip tag or a checkpoint file")
    num_workers: NonNegativeCount = Field(0, description="data-loader worker processes for image files")

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo):
        if self.dataset == "coco":
            if not self.data_dir:
                raise ValueError("dataset 'coco' needs data_dir, the folder with annotations/ and the images")
            if data_checked(info):
                check_coco(project_path(self.data_dir), self)
        elif self.n_train < self.batch_size:
            raise ValueError(f"n_train ({self.n_train}) must be at least batch_size ({self.batch_size})")
        for key in ("model", "zero_shot_model"):
            name = getattr(self, key)
            if name and name not in open_clip_models():
                raise ValueError(f"unknown open_clip model {key}={name!r}; e.g. {TINY_MODEL}, ViT-B-32")
        if self.model == TINY_MODEL and self.image_size % TINY_PATCH_SIZE:
            raise ValueError(
                f"image_size must be a multiple of {TINY_PATCH_SIZE} for {TINY_MODEL}, got {self.image_size}"
            )
        return self


TASKS = {
    "sym": bidirectional(
        "clip_symmetric",
        "image",
        "text",
        description="symmetric loss (image→text + text→image) and evaluation in both directions",
    ),
    "i2t": asymmetric("clip_image_to_text", "image", "text", description="image→text loss only"),
    "t2i": asymmetric("clip_text_to_image", "text", "image", description="text→image loss only"),
}
METRICS: tuple[str, ...] = (
    "r1_mean",
    "r1_i2t",
    "r1_t2i",
    "r1_i2t_cosine",
    "r1_t2i_cosine",
    "r1_i2t_dot",
    "r1_t2i_dot",
    "r5_i2t_cosine",
    "r5_t2i_cosine",
    "r5_i2t_dot",
    "r5_t2i_dot",
)

SPEC = FamilySpec(
    name="clip",
    title="CLIP (image–text contrastive, open_clip)",
    notebook="clip.ipynb",
    tasks=TASKS,
    task_axis="loss_direction",
    primary_metric={"sym": "r1_mean", "i2t": "r1_i2t", "t2i": "r1_t2i"},
    metrics=METRICS,
    grid_axes=("loss_direction", "dataset"),
    metric_scale=100.0,
    description=(
        "open_clip models from random init trained with ClipLoss on grid-normalized features; the paper's six "
        "configurations (Table 6) as (variant, loss_direction) grid points; R@1/R@5 both directions, scored with "
        "cosine and dot; Cohen's d of magnitudes; a zero-shot analysis path."
    ),
    params=ClipParams,
    sections=tables.sections,
    reference=tables.reference,
    extra={
        "paper_claim": tables.PAPER_CLAIM,
        "paper_configs": {f"{v}/{d}": c for (v, d), c in tables.PAPER_CONFIGS.items()},
    },
)
