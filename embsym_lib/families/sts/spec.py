"""The STS family's spec and parameter schema.

The task scores *unordered* pairs (a Spearman correlation over pairs), so it is functionally symmetric
(``embsym_lib.symmetry.unordered``) and the paper's rule predicts cosine. Sentence 1 is always the
query: qnorm = n(s1)·s2 = ‖s2‖ cos θ is the paper's **Sent1Norm**, dnorm = s1·n(s2) = ‖s1‖ cos θ its
**Sent2Norm** ("qnorm with sentence 2 as the query" is Sent2Norm again, so the two one-sided variants
cover both of the paper's one-sided arms)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, StrictBool, ValidationInfo, model_validator

from ...adapters.sentence_transformers import SentenceEncoderParams
from ...records import project_path
from ...schema import (
    BatchSize,
    DataSeed,
    Epochs,
    EvalBatchSize,
    GammaLearningRate,
    LearningRate,
    NonNegative,
    NonNegativeCount,
    Positive,
    WarmupRatio,
    data_checked,
)
from ...similarity import VARIANTS
from ...symmetry import unordered
from .. import FamilySpec
from . import tables


class StsParams(SentenceEncoderParams):
    OVERRIDABLE: ClassVar[tuple[str, ...]] = (
        "lr",
        "epochs",
        "batch_size",
        "max_seq_length",
        "pooling",
        "trainable_layers",
    )
    variant: str = "cosine"
    trainable_layers: int = Field(
        2, ge=-1, description="train only the top N transformer layers (-1: all; offline CPU economy)"
    )
    encoder_overrides: dict[str, dict[str, Any]] = Field(
        {"scratch": {"lr": 0.002, "epochs": 8, "trainable_layers": -1}},
        description=f"per-encoder training values; keys: {', '.join(OVERRIDABLE)}",
    )
    train: StrictBool = Field(
        True,
        description="fine-tune (false: evaluation only, the pretrained encoder scored under the variant)",
    )
    dataset: Literal["synthetic", "stsb"] = Field("synthetic", description="generated pairs, or STS-B")
    test_file: str = Field(
        "",
        description="your own pairs in STS-B's format (sentence1, sentence2, score 0–5), scored as the test "
        "split (empty: the dataset's)",
    )
    data_dir: str = Field("", description="STS-B folder (sts-*.csv or stsbenchmark.tsv.gz)")
    nli_file: str = Field("", description="AllNLI.tsv.gz appended to STS-B train (empty: none)")
    nli_max_pairs: NonNegativeCount = Field(0, description="AllNLI pairs kept, a seeded sample (0: all)")
    max_train_pairs: NonNegativeCount = Field(0, description="training pairs kept, a seeded sample (0: all)")
    n_train: int = Field(384, ge=2, description="generated training pairs")
    n_dev: int = Field(100, ge=2, description="generated dev pairs")
    n_test: int = Field(400, ge=2, description="generated test pairs")
    data_seed: DataSeed = 0
    epochs: Epochs = 2
    batch_size: BatchSize = 64
    lr: LearningRate = 0.0001
    warmup_ratio: WarmupRatio = 0.1
    weight_decay: NonNegative = Field(0.01, description="AdamW weight decay")
    score_scale: Positive = Field(0.01, description="λ: the paper's dot scaling (see scale_rule)")
    scale_rule: Literal["per_side", "any_side"] = Field(
        "per_side", description="per_side: every embedding × √λ; any_side: non-cosine scores × λ"
    )
    gamma_lr: GammaLearningRate = 0.0
    evaluate_dev: StrictBool = Field(False, description="Spearman on the dev split after every epoch")
    eval_batch_size: EvalBatchSize = 64

    @model_validator(mode="after")
    def _data(self, info: ValidationInfo):
        if self.test_file and data_checked(info):
            from ...data.sts import check_pairs_file

            try:
                check_pairs_file(project_path(self.test_file))
            except (FileNotFoundError, ValueError) as e:
                raise ValueError(f"test_file: {e}") from None
        if self.dataset != "stsb":
            return self
        if not self.data_dir:
            raise ValueError("dataset 'stsb' needs data_dir (a directory with the STS-B files)")
        if not data_checked(info):
            return self
        from ...data.sts import stsb_format

        try:
            stsb_format(project_path(self.data_dir))
        except FileNotFoundError as e:
            raise ValueError(str(e)) from None
        if self.nli_file and not project_path(self.nli_file).is_file():
            raise ValueError(
                f"nli_file {self.nli_file!r} not found (expected sentence-transformers' AllNLI.tsv.gz)"
            )
        return self


SPEC = FamilySpec(
    name="sts",
    title="Semantic textual similarity (STS)",
    notebook="sts.ipynb",
    tasks={
        "sts": unordered(
            "sts", "Spearman/Pearson correlation of pair scores with graded gold labels: pairs are unordered"
        )
    },
    primary_metric="spearman",
    metrics=("spearman", "pearson"),
    variants=VARIANTS,
    grid_axes=("encoder", "train"),
    conditions={"train": True},
    description="Sentence-pair similarity trained with a regression loss on the grid's pair score "
    "(sentence-transformers); sentence 1 is the query, so qnorm = Sent1Norm and dnorm = Sent2Norm.",
    params=StsParams,
    sections=tables.sections,
    reference=tables.reference,
    extra={"paper_names": tables.PAPER_NAMES, "query_side": "sentence1"},
)
