"""The recsys family's spec and parameter schema (no RecBole import: the registry validates parameters
before any compute)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, model_validator

from ...records import project_path
from ...schema import (
    BatchSize,
    Count,
    EmbeddingDim,
    Epochs,
    EvalBatchSize,
    FisherVariants,
    LearningRate,
    NonNegative,
    NonNegativeCount,
    RunParams,
    Scale,
    ScoreTestVariants,
    data_checked,
)
from ...symmetry import asymmetric
from .. import FamilySpec
from . import tables

TOPK = 10
METRICS: tuple[str, ...] = ("ndcg_at_10", "recall_at_10", "mrr_at_10")
# Kept in step with embsym_lib.adapters.recbole.MODELS / LOSSES (a test checks it), named here so that
# discovering the family and validating parameters never imports RecBole (seconds).
MODELS: tuple[str, ...] = ("bpr", "lightgcn")
LOSSES: tuple[str, ...] = ("bpr", "infonce")

# The field's standard preprocessing per dataset (RecBole keys). Every rating counts as an implicit
# interaction unless a rating floor is given; k-core filters drop users/items with fewer interactions.
DATASETS: dict[str, dict[str, Any]] = {
    # RecBole's shipped example, used as is (RecBole's own ml-100k defaults: no filtering).
    "ml-100k": {},
    # RecBole's MovieLens-1M benchmark setting: ratings >= 3 are positives, 10-core users and items.
    "ml-1m": {
        "val_interval": {"rating": "[3,inf)"},
        "user_inter_num_interval": "[10,inf)",
        "item_inter_num_interval": "[10,inf)",
    },
    # Amazon review categories as RecBole atomic files (RecSysDatasets' conversion): the usual 5-core.
    **{
        name: {"user_inter_num_interval": "[5,inf)", "item_inter_num_interval": "[5,inf)"}
        for name in ("Amazon_Beauty", "Amazon_Sports_and_Outdoors", "Amazon_Toys_and_Games")
    },
}
Dataset = Literal["ml-100k", "ml-1m", "Amazon_Beauty", "Amazon_Sports_and_Outdoors", "Amazon_Toys_and_Games"]
SHIPPED_DATASETS: tuple[str, ...] = ("ml-100k",)
# A user's own dataset: any folder name (RecBole's dataset name) under data_dir; no path separators.
DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

PAPER_CLAIM = tables.PAPER_CLAIM
TASK = asymmetric(
    "recommendation",
    query="user",
    candidate="item",
    description="s(user, item); full-sort ranking of all items per user, training items masked",
)


def shipped_dataset_dir(dataset: str) -> Path:
    """RecBole's packaged example folder, located without importing RecBole."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or spec.origin is None:
        raise ValueError("recbole is not installed in this environment")
    return Path(spec.origin).parent / "dataset_example" / dataset


def inter_file(dataset: str, data_dir: str) -> Path:
    """Where RecBole will read the dataset's interactions from (ml-100k: the copy inside recbole)."""
    if dataset in SHIPPED_DATASETS:
        return shipped_dataset_dir(dataset) / f"{dataset}.inter"
    return project_path(data_dir) / dataset / f"{dataset}.inter"


def inter_columns(path: Path) -> list[str]:
    """The field names of an atomic file's header ('user_id:token' -> 'user_id')."""
    with path.open() as f:
        return [column.split(":")[0] for column in f.readline().rstrip("\n").split("\t")]


class RecsysParams(RunParams):
    model: Literal["bpr", "lightgcn"] = Field(
        "bpr", description="RecBole model with grid scoring: BPR (matrix factorisation) or LightGCN"
    )
    dataset: str = Field(
        "ml-100k",
        description="ml-100k ships inside recbole; the other known names (their standard filtering) and any "
        "name of your own (no filtering) are atomic files <data_dir>/<dataset>/<dataset>.inter",
    )
    data_dir: str = Field("", description="folder holding <dataset>/<dataset>.inter (not needed for ml-100k)")
    loss: Literal["bpr", "infonce"] = Field(
        "bpr", description="BPR on scale × score (InfoNCE, one sampled negative) or in-batch InfoNCE"
    )
    scale: Scale = 20.0
    embedding_dim: EmbeddingDim = 64
    n_layers: NonNegativeCount = Field(2, description="LightGCN propagation layers")
    reg_weight: NonNegative = Field(1e-05, description="LightGCN's L2 weight on the ego embeddings")
    epochs: Epochs = 60
    stopping_step: Count = Field(3, description="early stopping: evaluations without a better valid NDCG@10")
    batch_size: BatchSize = 4096
    eval_batch_size: EvalBatchSize = 1048576
    lr: LearningRate = 0.005
    cross_evaluate: bool = Field(True, description="re-score the trained embeddings with each fixed variant")

    fisher_pairs: int = Field(
        1024,
        ge=0,
        description="validation (user, item) pairs for the Fisher predictor before training (0: off)",
    )
    fisher_batch: Count = Field(64, description="in-batch negatives of the Fisher predictor's InfoNCE")
    fisher_variants: FisherVariants = ["cosine"]
    score_test_variants: ScoreTestVariants = ["dot"]

    @model_validator(mode="after")
    def _data_present(self, info: ValidationInfo):
        """One clear error for a missing atomic file, before RecBole starts (a missing folder would make
        RecBole try to download it, and prompt on ``input()`` for large ones); a dry run checks the
        names only."""
        if self.dataset not in DATASETS and not (self.data_dir and DATASET_NAME.fullmatch(self.dataset)):
            known = ", ".join(repr(name) for name in DATASETS)
            raise ValueError(
                f"parameter 'dataset': input should be {known}, or the name of your own RecBole atomic "
                "files <data_dir>/<name>/<name>.inter with data_dir set (letters, digits, '.', '_', '-'), "
                f"got {self.dataset!r}"
            )
        if self.dataset not in SHIPPED_DATASETS and not self.data_dir:
            raise ValueError(
                f"dataset {self.dataset!r} needs data_dir: the folder holding {self.dataset}/{self.dataset}.inter "
                "(RecBole atomic files; only ml-100k ships offline)"
            )
        path = inter_file(self.dataset, self.data_dir)
        if not data_checked(info):
            return self
        if not path.is_file():
            raise ValueError(
                f"RecBole atomic file not found: {path} (expected <data_dir>/{self.dataset}/{self.dataset}.inter, "
                "tab-separated with a header like 'user_id:token\\titem_id:token\\trating:float\\ttimestamp:float')"
            )
        missing = {"user_id", "item_id"} - set(inter_columns(path))
        if missing:
            raise ValueError(f"{path}: header lacks {sorted(missing)} (RecBole 'name:type' columns)")
        return self


SPEC = FamilySpec(
    name="recsys",
    title="Recommender systems",
    notebook="recsys.ipynb",
    tasks={"recommendation": TASK},
    primary_metric="ndcg_at_10",
    metrics=METRICS,
    grid_axes=("model", "dataset", "loss"),
    description="Top-10 recommendation with RecBole (BPR-MF, LightGCN): query user, candidate item; full ranking.",
    params=RecsysParams,
    sections=tables.sections,
    extra={"paper_claim": PAPER_CLAIM},
)
