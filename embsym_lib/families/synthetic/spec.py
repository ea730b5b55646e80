"""The synthetic family's spec and parameter schema."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ...schema import (
    BatchSize,
    Count,
    DataSeed,
    EmbeddingDim,
    Epochs,
    FisherVariants,
    LearningRate,
    NonNegative,
    RunParams,
    Scale,
    ScoreTestVariants,
)
from ...symmetry import asymmetric, unordered
from .. import FamilySpec
from . import tables


class SyntheticParams(RunParams):
    variant: str = "qnorm"
    task: Literal["asymmetric", "asymmetric_nuisance", "symmetric", "symmetric_signal", "ablation"] = Field(
        "asymmetric",
        description="which generated task: the 2 x 2 design (symmetry x what magnitude carries) or the ablation",
    )
    data_seed: DataSeed = 1234
    n_docs: Count = Field(2000, description="documents in the asymmetric tasks' corpus")
    n_train: Count = Field(6000, description="training queries (pairs for the symmetric task)")
    n_test: Count = Field(500, description="test queries (pairs for the symmetric task)")
    n_heldout: int = Field(512, ge=64, description="held-out queries for the Fisher predictor (≥ one batch)")
    fisher_variants: FisherVariants = ["cosine"]
    score_test_variants: ScoreTestVariants = ["dot"]
    n_relevant: Count = Field(5, description="relevant documents per query (the top true relevance)")
    latent_dim: Count = Field(16, description="dimension of the ground-truth latent space")
    input_dim: Count = Field(32, description="dimension of the observed inputs")
    quality_weight: NonNegative = Field(0.5, description="weight of the document-quality signal in relevance")
    magnitude_noise: NonNegative = Field(
        0.5, description="sd of the log-magnitude of symmetric inputs and of asymmetric_nuisance's documents"
    )
    magnitude_signal: NonNegative = Field(
        0.5, description="weight of the norm-carried term (s_a + s_b) / 2 in symmetric_signal's label"
    )
    input_noise: NonNegative = Field(0.1, description="sd of the noise on the observed inputs")
    epochs: Epochs = 8
    batch_size: BatchSize = 128
    lr: LearningRate = 0.003
    sgd_lr: LearningRate = Field(0.05, description="step size of the ablation's normalized SGD")
    scale: Scale = 20.0
    hidden: Count = Field(64, description="hidden width of the MLP encoders")
    embedding_dim: EmbeddingDim = 32
    device: Literal["cpu"] = Field("cpu", description="the testbed runs on the CPU")

    @model_validator(mode="after")
    def _consistent(self):
        if self.n_relevant >= self.n_docs:
            raise ValueError(f"n_relevant ({self.n_relevant}) must be smaller than n_docs ({self.n_docs})")
        if self.batch_size > self.n_train:
            raise ValueError(f"batch_size ({self.batch_size}) exceeds n_train ({self.n_train})")
        return self


SPEC = FamilySpec(
    name="synthetic",
    title="Controlled synthetic testbed",
    notebook="synthetic.ipynb",
    description=(
        "Generated tasks with a known ground truth, MLP encoders trained from scratch under each variant: a "
        "2 x 2 design (asymmetric or symmetric task x magnitude carries label signal or is a nuisance), where "
        "the off-diagonal cells are the ones in which the paper's rule can lose, and the referee's ablation "
        "(total scale and update norm fixed)."
    ),
    tasks={
        "asymmetric": asymmetric(
            "asymmetric", "query", "document", "query → document; document magnitude can carry quality"
        ),
        "asymmetric_nuisance": asymmetric(
            "asymmetric_nuisance", "query", "document", "query → document; document magnitude is a nuisance"
        ),
        "symmetric": unordered("symmetric", "unordered pairs, one encoder; magnitude is a nuisance"),
        "symmetric_signal": unordered(
            "symmetric_signal", "unordered pairs, one encoder; magnitude carries label signal"
        ),
        "ablation": asymmetric(
            "ablation", "query", "document", "the asymmetric task, scale and step size fixed"
        ),
    },
    task_axis="task",
    grid_axes=("task",),
    primary_metric={
        "asymmetric": "ndcg@10",
        "asymmetric_nuisance": "ndcg@10",
        "ablation": "ndcg@10",
        "symmetric": "spearman",
        "symmetric_signal": "spearman",
    },
    metrics=("ndcg@10", "mrr@10", "recall@100", "spearman", "pearson"),
    params=SyntheticParams,
    sections=tables.sections,
)
