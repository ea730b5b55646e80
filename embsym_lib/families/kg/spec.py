"""The knowledge-graph family's spec and parameter schema, and the checks of its dataset axis (no
PyKEEN import at module level: the registry imports every spec to validate parameters before any compute;
only checking a downloaded dataset's files in a pre-filled cache imports it)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

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
    RunParams,
    Scale,
    ScoreTestVariants,
    data_checked,
)
from ...symmetry import asymmetric
from .. import FamilySpec
from . import tables
from .triples import check_files

METRICS: tuple[str, ...] = ("mrr", "hits_at_1", "hits_at_3", "hits_at_10")
TRAINING_LOOPS: tuple[str, ...] = ("lcwa", "slcwa")
# Must match embsym_lib.adapters.pykeen.COMPOSERS (kept here so that validating parameters never imports
# pykeen, which takes seconds).
COMPOSITIONS: tuple[str, ...] = ("distmult", "complex")
# Datasets shipped inside the pykeen wheel (no download) and the paper profile's downloadable ones.
PACKAGED_DATASETS: tuple[str, ...] = ("nations", "kinships", "umls")
DOWNLOADED_DATASETS: tuple[str, ...] = ("fb15k237", "wn18rr")
PATH_PREFIX = "path:"
SPLIT_NAMES: dict[str, tuple[str, ...]] = {
    "training": ("train.tsv", "train.txt"),
    "validation": ("valid.tsv", "valid.txt"),
    "testing": ("test.tsv", "test.txt"),
}
TASK = asymmetric(
    "link_prediction",
    query="(entity, relation)",
    candidate="entity",
    description="score(compose(h, r), t); head prediction runs as (t, r⁻¹) → h, so the query side is fixed",
)


def resolve_path(text: str) -> Path:
    """A ``path:`` dataset's directory: absolute, or relative to the project root."""
    return project_path(text[len(PATH_PREFIX) :] if text.startswith(PATH_PREFIX) else text)


def split_files(directory: Path) -> dict[str, Path]:
    """train/valid/test triple files (``.tsv`` or ``.txt``, PyKEEN's tab-separated h, r, t format)."""
    if not directory.is_dir():
        raise ValueError(f"KG dataset directory not found: {directory}")
    found: dict[str, Path] = {}
    for split, names in SPLIT_NAMES.items():
        for name in names:
            if (directory / name).is_file():
                found[split] = directory / name
                break
        else:
            raise ValueError(
                f"KG dataset directory {directory} has no {split} file (expected one of {', '.join(names)})"
            )
    return found


def check_dataset(name: str, check_data: bool = True) -> None:
    """One clear error for an unknown name or (``check_data``) an incomplete ``path:`` directory or a
    malformed line in its files (``triples.read_triples``: the file and the line), before any compute."""
    if name.startswith(PATH_PREFIX):
        if check_data:
            files = split_files(resolve_path(name))
            try:
                check_files(files)
            except ValueError as err:
                raise ValueError(f"parameter 'dataset': {err}") from None
    elif name not in (*PACKAGED_DATASETS, *DOWNLOADED_DATASETS):
        raise ValueError(
            f"unknown KG dataset {name!r}; valid datasets are: "
            f"{', '.join((*PACKAGED_DATASETS, *DOWNLOADED_DATASETS))}, or {PATH_PREFIX}<directory>"
        )


def dataset_class(name: str):
    """PyKEEN's dataset class for a registered name (resolved without instantiating, so nothing downloads)."""
    from pykeen.datasets import dataset_resolver

    check_dataset(name)
    if name.startswith(PATH_PREFIX):
        raise ValueError(f"{name!r} is a directory, not a PyKEEN dataset name")
    return dataset_resolver.lookup(name)


def pykeen_cache_files(name: str, cache_root: str) -> list[Path]:
    """The files PyKEEN's loader of a downloaded dataset (fb15k237, wn18rr) reads under ``cache_root``, and
    downloads when they are missing. The layout is the class's own, read from an instance made in a scratch
    folder: making it in the real one would create the dataset's folder, which is not the data."""
    import tempfile

    from pykeen.datasets.base import PackedZipRemoteDataset

    with tempfile.TemporaryDirectory() as probe:
        dataset = dataset_class(name)(cache_root=probe)
        if isinstance(dataset, PackedZipRemoteDataset):
            files = [dataset.path]
        else:
            files = [dataset.training_path, dataset.validation_path, dataset.testing_path]
        return [project_path(cache_root) / Path(f).relative_to(probe) for f in files]


class KgParams(RunParams):
    dataset: str = Field(
        "nations",
        description=(
            "a PyKEEN dataset (packaged: nations, kinships, umls; downloaded: fb15k237, wn18rr) or "
            "path:<folder> with train/valid/test triple files (.tsv or .txt; head<TAB>relation<TAB>tail, one "
            "triple per line, no header, no comments)"
        ),
    )
    composition: Literal["distmult", "complex"] = Field(
        "distmult", description="query compose(h, r): distmult h∘r, or complex h⊙r in ℂ^{d/2}"
    )
    embedding_dim: EmbeddingDim = 64
    epochs: Epochs = 20
    batch_size: BatchSize = 256
    lr: LearningRate = 0.01
    scale: Scale = 20.0
    training_loop: Literal["lcwa", "slcwa"] = Field(
        "lcwa", description="PyKEEN's training loop: lcwa (1-vs-all) or slcwa (sampled tail negatives)"
    )
    num_negatives: Count = Field(32, description="sampled negatives per positive (slcwa only)")
    eval_batch_size: EvalBatchSize = 256
    cross_evaluate: bool = Field(True, description="re-score the trained embeddings with every fixed variant")
    magnitude_queries: Count = Field(1000, description="test queries for the magnitude Cohen's d diagnostic")
    fisher_pairs: int = Field(
        1024,
        ge=0,
        description="validation (query, answer) pairs for the Fisher predictor before training (0: off)",
    )
    fisher_batch: Count = Field(64, description="in-batch negatives of the Fisher predictor's InfoNCE")
    fisher_variants: FisherVariants = ["cosine"]
    score_test_variants: ScoreTestVariants = ["dot"]
    cache_root: str = Field(
        "", description="PyKEEN's dataset cache for fb15k237/wn18rr (empty: PyKEEN's default)"
    )

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo):
        check_dataset(self.dataset, check_data=data_checked(info))
        if self.dataset in DOWNLOADED_DATASETS and self.cache_root and data_checked(info):
            missing = [str(f) for f in pykeen_cache_files(self.dataset, self.cache_root) if not f.is_file()]
            if missing:
                raise ValueError(
                    f"parameter 'cache_root': {self.dataset} is not in the PyKEEN cache "
                    f"{project_path(self.cache_root)} (missing {', '.join(missing)}); `embsym data fetch kg` "
                    "downloads it there, or leave cache_root empty to let PyKEEN download it on first use"
                )
        if self.composition == "complex" and self.embedding_dim % 2:
            raise ValueError(f"the complex composition needs an even embedding_dim, got {self.embedding_dim}")
        return self


SPEC = FamilySpec(
    name="kg",
    title="Knowledge-graph completion",
    notebook="kg.ipynb",
    tasks={"link_prediction": TASK},
    primary_metric="mrr",
    metrics=METRICS,
    grid_axes=("dataset", "composition"),
    description="Link prediction with PyKEEN: query compose(h, r), candidate t; filtered MRR and Hits@k.",
    params=KgParams,
    sections=tables.sections,
    extra={"paper_claim": tables.PAPER_CLAIM},
)
