"""The retrieval family's spec and parameter schema."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, StrictBool, ValidationInfo, model_validator

from ...adapters.sentence_transformers import SentenceEncoderParams
from ...data import retrieval as rdata
from ...distributed import check_processes
from ...records import project_path
from ...schema import (
    BatchSize,
    Count,
    EvalBatchSize,
    FisherVariants,
    GammaLearningRate,
    LearningRate,
    NonNegative,
    NonNegativeCount,
    Scale,
    ScoreTestVariants,
    WarmupRatio,
    data_checked,
)
from ...symmetry import asymmetric
from .. import FamilySpec
from . import tables


class RetrievalParams(SentenceEncoderParams):
    OVERRIDABLE: ClassVar[tuple[str, ...]] = (
        "lr",
        "epochs",
        "max_steps",
        "batch_size",
        "max_seq_length",
        "pooling",
        "n_train_pairs",
    )
    variant: str = "cosine"
    max_seq_length: Count = Field(
        48,
        description="tokens per text (offline: an object's name and its docstring's first sentences; "
        "48 instead of the encoders' 64 cut a MiniLM run by a quarter: docs/performance.md)",
    )
    encoder_overrides: dict[str, dict[str, Any]] = Field(
        {"scratch": {"lr": 0.0005, "epochs": 2.0, "n_train_pairs": 768}},
        description=f"per-encoder training values; keys: {', '.join(OVERRIDABLE)}",
    )
    data_source: Literal[rdata.TRAIN_SOURCES] = Field("pydoc", description="training pairs and dev set")
    data_dir: str = Field("", description="local data folder (empty: the generated pydoc benchmark)")
    train: StrictBool = Field(
        True,
        description="fine-tune (false: evaluation only, the pretrained encoder scored under the variant)",
    )
    scale_matched: StrictBool = Field(
        False,
        description="train with every variant's logits divided by the stop-gradient batch mean of its "
        "un-normalized magnitude factor (the same effective temperature for all; evaluation unchanged)",
    )
    test_sets: list[str] = Field(
        list(rdata.PYDOC_TEST_SETS),
        description="evaluation sets, by name, or path:<folder> for your own BEIR folder (its own group)",
    )
    test_queries: NonNegativeCount = Field(40, description="first N judged queries per test set (0: all)")
    test_corpus: NonNegativeCount = Field(200, description="documents per test corpus (0: all)")
    dev_queries: NonNegativeCount = Field(24, description="dev queries for checkpoint selection (0: all)")
    dev_corpus: NonNegativeCount = Field(96, description="documents in the dev corpus (0: all)")
    n_train_pairs: NonNegativeCount = Field(384, description="training pairs (0: all)")
    scale: Scale = 20.0
    lr: LearningRate = 3e-05
    batch_size: BatchSize = 32
    epochs: float = Field(1.0, gt=0, description="passes over the training pairs (fractions allowed)")
    max_steps: int = Field(-1, ge=-1, description="training steps (-1: from epochs)")
    n_evals: Count = Field(2, description="dev evaluations (checkpoint candidates) during training")
    weight_decay: NonNegative = Field(0.01, description="AdamW weight decay (γ's raw parameter too)")
    warmup_ratio: WarmupRatio = 0.0
    gamma_lr: GammaLearningRate = 0.0
    train_processes: int = Field(1, ge=1, description="DDP training processes, one GPU each")
    gather_across_devices: StrictBool = Field(
        False, description="every process's documents are negatives for every query (DDP)"
    )
    eval_batch_size: EvalBatchSize = 64
    irrelevant_pool: Literal["corpus", "top_k"] = Field("corpus", description="Cohen's d irrelevant pool")
    pool_k: Count = Field(100, description="top-k pool size (and search depth ≥ 100)")
    fisher_pairs: NonNegativeCount = Field(
        256, description="held-out pairs for the Fisher predictor (0: off)"
    )
    fisher_batch: Count = Field(64, description="the Fisher predictor's in-batch size")
    fisher_variants: FisherVariants = ["cosine"]
    score_test_variants: ScoreTestVariants = ["dot"]
    rag_sets: list[Literal[rdata.RAG_SETS]] = Field(["pydoc_scientific"], description="RAG question sets")
    rag_questions: NonNegativeCount = Field(8, description="questions per RAG set (0: all)")
    rag_corpus: NonNegativeCount = Field(
        200, description="passages of each RAG corpus, the first N in corpus order (0: all)"
    )
    rag_top_k: Count = Field(5, description="passages given to the reader")
    reader: str = Field("offline:tiny-t5", description="seq2seq reader (hub name, or under model_dir)")
    reader_max_length: Count = Field(512, description="reader input tokens")
    reader_max_new_tokens: Count = Field(8, description="reader answer tokens")

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo):
        if self.train:  # an evaluation-only run starts no training process
            check_processes(self.train_processes)
        if not self.test_sets:
            raise ValueError("test_sets is empty: name at least one evaluation set")
        sets = rdata.check_test_sets(self.test_sets)
        registered = [s.name for s in sets if not s.user]
        if data_checked(info):
            for s in sets:
                if s.user:
                    rdata.check_user_folder(s)
        if self.data_source == "pydoc" and not self.data_dir:
            bad = [n for n in registered if rdata.DATASETS[n].loader != "pydoc"]
            if bad:
                raise ValueError(f"test sets {bad} need data_dir (a local folder with the real data)")
            return self
        if not data_checked(info):
            return self
        root = project_path(self.data_dir)
        if not root.is_dir():
            raise ValueError(
                f"data_dir {str(root)!r} does not exist (needed for data_source={self.data_source!r})"
            )
        for name in registered:
            for path in rdata.dataset_paths(name, root):
                if not path.exists():
                    raise ValueError(f"test set {name!r}: missing {path}")
        if self.train and self.data_source != "pydoc":
            for path in rdata.training_paths(self.data_source, root):
                if not path.exists():
                    raise ValueError(
                        f"training data ({self.data_source}: training pairs and the dev set): missing {path}"
                    )
        return self


SPEC = FamilySpec(
    name="retrieval",
    title="Dense retrieval and RAG",
    notebook="retrieval.ipynb",
    tasks={
        "retrieval": asymmetric(
            "retrieval",
            "query",
            "document",
            "queries rank documents; training and evaluation score query -> document only",
        )
    },
    primary_metric="ndcg10_mean",
    metrics=("ndcg10_mean", "ndcg10_id", "ndcg10_ood", "mrr10_mean", "recall100_mean"),
    grid_axes=("encoder", "train", "scale_matched", "data_source"),  # data_source: E5-80K vs E5-500K
    conditions={"train": True, "scale_matched": False},
    metric_scale=100.0,
    description="Fine-tune a dense retriever with InfoNCE (scale 20) under each variant; nDCG@10 by exact search.",
    params=RetrievalParams,
    sections=tables.sections,
    reference=tables.reference,
)
