"""STS: sentence-pair similarity, trained with a regression loss on the grid's pair score.

The task scores *unordered* pairs (a Spearman correlation over pairs), so it is functionally symmetric
(``embsym_lib.symmetry.unordered``) and the paper's rule predicts cosine.

Which sentence is the query: sentence 1, always. Then

- qnorm = n(s1) . s2 = |s2| cos  is the paper's **Sent1Norm** (only sentence 1 normalized);
- dnorm = s1 . n(s2) = |s1| cos  is the paper's **Sent2Norm** (only sentence 2 normalized);

and "qnorm with sentence 2 as the query" is Sent2Norm again, so the two one-sided variants with
sentence 1 as the query cover both of the paper's one-sided arms. Unlike per-query ranking, STS
compares scores *across* pairs, so qnorm/dnorm differ from dot/cosine at inference too; the
cross-evaluation diagnostic scores each trained model under every variant.

sentence-transformers glue (kept here, the shared adapter is the retrieval family's):

- ``PairScore``: the grid's paired score with the paper's scaling lambda (``score_scale``);
- ``PairScoreRegressionLoss``: the regression loss on that score, in the style of sentence-transformers'
  ``CosineSimilarityLoss`` (whose similarity is hard-wired to cosine, so it cannot take the grid) with a
  ``similarity_fct`` hook; trained by ``SentenceTransformerTrainer``;
- ``GridSimilarityEvaluator``: sentence-transformers' ``EmbeddingSimilarityEvaluator`` with its scoring
  step replaced (the stock one has a closed set of similarity functions).
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.stats import pearsonr, spearmanr
from torch import nn

from ..diagnostics import cross_evaluate, norm_stats, on_embeddings
from ..records import project_path
from ..similarity import FIXED_VARIANTS, VARIANTS, Similarity, make_similarity
from ..symmetry import unordered
from . import FamilySpec

DATASETS = ("synthetic", "stsb")
OFFLINE_ENCODERS = ("offline:minilm", "scratch")
POOLINGS = ("auto", "mean", "cls", "max")
SCALE_RULES = ("per_side", "any_side")
# Each checkpoint's own pooling (the paper uses the checkpoints' defaults); hub checkpoints without a
# sentence-transformers config would otherwise get mean pooling.
CHECKPOINT_POOLING = {"facebook/contriever": "mean", "Shitao/RetroMAE": "cls"}
PAPER_NAMES = {"cosine": "cosine", "dot": "dot", "qnorm": "Sent1Norm", "dnorm": "Sent2Norm", "learn": "learn"}
TABLE_ORDER = ("cosine", "dot", "qnorm", "dnorm", "learn")


# --------------------------------------------------------------------------------------------------
# Scoring


class PairScore(nn.Module):
    """lambda-scaled grid score of aligned pairs (sentence 1 is the query side).

    The paper scales dot by lambda = 0.01 so raw dot products land in the label range; it is silent on
    qnorm/dnorm. ``scale_rule``:

    - ``"per_side"`` (default): every embedding is multiplied by sqrt(lambda) before scoring. Cosine is
      unchanged, dot gets exactly the paper's lambda, qnorm/dnorm get sqrt(lambda) (one un-normalized
      side), learn gets lambda^((2 - gq - gd) / 2): the scale follows the number of magnitudes that
      survive into the score.
    - ``"any_side"``: the score is multiplied by lambda for every variant except cosine.

    A positive factor changes no correlation; it only sets where training starts relative to the labels.
    """

    def __init__(self, variant: str, score_scale: float = 0.01, scale_rule: str = "per_side"):
        super().__init__()
        if scale_rule not in SCALE_RULES:
            raise ValueError(f"unknown scale_rule {scale_rule!r}; valid rules are: {', '.join(SCALE_RULES)}")
        if not score_scale > 0:
            raise ValueError(f"score_scale must be > 0, got {score_scale!r}")
        self.similarity: Similarity = make_similarity(variant)
        self.variant = variant
        self.score_scale = float(score_scale)
        self.scale_rule = scale_rule

    def forward(self, sentence1: torch.Tensor, sentence2: torch.Tensor) -> torch.Tensor:
        if self.scale_rule == "per_side":
            side = math.sqrt(self.score_scale)
            return self.similarity.paired(sentence1 * side, sentence2 * side)
        factor = 1.0 if self.variant == "cosine" else self.score_scale
        return factor * self.similarity.paired(sentence1, sentence2)

    def gammas(self) -> dict[str, float]:
        if not hasattr(self.similarity, "gammas"):
            return {}
        with torch.no_grad():
            return self.similarity.gammas()

    def extra_repr(self) -> str:
        return f"score_scale={self.score_scale}, scale_rule={self.scale_rule!r}"


class PairScoreRegressionLoss(nn.Module):
    """MSE between ``similarity_fct(u, v)`` and the gold score in [0, 1] (CosineSimilarityLoss's shape).

    ``similarity_fct`` is a module, so the learn variant's gammas are trained with the encoder
    (sentence-transformers' trainer optimizes the loss module's parameters).
    """

    def __init__(self, model, similarity_fct: PairScore, loss_fct: nn.Module | None = None):
        super().__init__()
        self.model = model
        self.similarity_fct = similarity_fct
        self.loss_fct = loss_fct if loss_fct is not None else nn.MSELoss()

    def forward(self, sentence_features, labels: torch.Tensor) -> torch.Tensor:
        from sentence_transformers.base.losses.merged_forward import embed_columns

        embeddings = embed_columns(self.model, sentence_features)
        return self.compute_loss_from_embeddings(embeddings, labels)

    def compute_loss_from_embeddings(
        self, embeddings: list[torch.Tensor], labels: torch.Tensor
    ) -> torch.Tensor:
        scores = self.similarity_fct(embeddings[0], embeddings[1])
        return self.loss_fct(scores.float(), labels.float().view(-1))

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "variant": self.similarity_fct.variant,
            "score_scale": self.similarity_fct.score_scale,
            "scale_rule": self.similarity_fct.scale_rule,
        }


def _correlations(labels, scores) -> tuple[float, float]:
    scores = np.asarray(scores, dtype=float)
    if not np.all(np.isfinite(scores)) or np.ptp(scores) == 0:
        return float("nan"), float("nan")
    return float(pearsonr(labels, scores).statistic), float(spearmanr(labels, scores).statistic)


def _make_evaluator_class():
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

    class GridSimilarityEvaluator(EmbeddingSimilarityEvaluator):
        """EmbeddingSimilarityEvaluator scoring with the run's ``PairScore`` (sentence 1 as the query).

        Besides ``pearson``/``spearman`` of the trained scoring it reports ``spearman_swapped``
        (sentence 2 as the query) and ``spearman_as_<v>``/``pearson_as_<v>``: the same embeddings scored
        under every fixed variant (a row of the cross-evaluation matrix).
        """

        def __init__(self, sentences1, sentences2, scores, pair_score: PairScore, name: str = "", **kwargs):
            super().__init__(sentences1, sentences2, scores, name=name, write_csv=False, **kwargs)
            self.pair_score = pair_score
            self.primary_metric = "spearman"
            self.last_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None

        def __call__(self, model, output_path=None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
            a = torch.as_tensor(self.embed_inputs(model, self.sentences1)).float()
            b = torch.as_tensor(self.embed_inputs(model, self.sentences2)).float()
            self.last_embeddings = (a, b)
            labels = np.asarray(self.scores, dtype=float)
            with torch.no_grad():
                device = next(self.pair_score.parameters(), torch.empty(0)).device
                trained = self.pair_score(a.to(device), b.to(device)).cpu().numpy()
                swapped = self.pair_score(b.to(device), a.to(device)).cpu().numpy()
            pearson, spearman = _correlations(labels, trained)
            metrics = {
                "pearson": pearson,
                "spearman": spearman,
                "spearman_swapped": _correlations(labels, swapped)[1],
            }
            cross_spearman = cross_evaluate(
                on_embeddings(a, b, lambda s: _correlations(labels, s.diagonal().numpy())[1])
            )
            cross_pearson = cross_evaluate(
                on_embeddings(a, b, lambda s: _correlations(labels, s.diagonal().numpy())[0])
            )
            for variant in FIXED_VARIANTS:
                metrics[f"spearman_as_{variant}"] = cross_spearman[variant]
                metrics[f"pearson_as_{variant}"] = cross_pearson[variant]
            metrics = self.prefix_name_to_metrics(metrics, self.name)
            self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
            return metrics

    return GridSimilarityEvaluator


def make_evaluator(frame: pd.DataFrame, pair_score: PairScore, name: str = "", batch_size: int = 64):
    """A GridSimilarityEvaluator over a split (gold scores divided by 5, as in training)."""
    from ..data.sts import MAX_SCORE

    cls = _make_evaluator_class()
    return cls(
        list(frame["sentence1"]),
        list(frame["sentence2"]),
        list(frame["score"] / MAX_SCORE),
        pair_score=pair_score,
        name=name,
        batch_size=batch_size,
    )


# --------------------------------------------------------------------------------------------------
# Data, model, training, evaluation


def load_pairs(params: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """Train/dev/test pairs (sentence1, sentence2, score in [0, 5]) for the run's dataset."""
    from ..data import sts as data

    if params["dataset"] == "synthetic":
        splits = data.generate_pairs(
            params["n_train"], params["n_dev"], params["n_test"], params["data_seed"]
        )
    else:
        splits = data.load_stsb(project_path(params["data_dir"]))
        if params.get("nli_file"):
            nli = data.load_allnli(
                project_path(params["nli_file"]), params.get("nli_max_pairs", 0), params["data_seed"]
            )
            splits["train"] = pd.concat([splits["train"], nli], ignore_index=True)
    if params.get("max_train_pairs"):
        splits["train"] = (
            splits["train"]
            .sample(n=min(params["max_train_pairs"], len(splits["train"])), random_state=params["data_seed"])
            .reset_index(drop=True)
        )
    return splits


def to_dataset(frame: pd.DataFrame):
    """A datasets.Dataset with the gold score scaled to [0, 1] (sentence-transformers' STS convention)."""
    from datasets import Dataset

    from ..data.sts import MAX_SCORE

    return Dataset.from_dict(
        {
            "sentence1": list(frame["sentence1"]),
            "sentence2": list(frame["sentence2"]),
            "score": [float(s) / MAX_SCORE for s in frame["score"]],
        }
    )


def build_encoder(params: dict[str, Any]):
    """The run's SentenceTransformer (Normalize stripped): packaged MiniLM, from-scratch BERT, or a checkpoint."""
    from ..adapters.sentence_transformers import load_encoder, scratch_encoder

    encoder, device = params["encoder"], "cuda" if torch.cuda.is_available() else "cpu"
    if encoder == "scratch":
        return scratch_encoder(
            hidden_size=params["scratch_hidden_size"],
            num_layers=params["scratch_layers"],
            num_heads=params["scratch_heads"],
            intermediate_size=params["scratch_intermediate_size"],
            max_seq_length=params["max_seq_length"],
            seed=params["seed"],
            device=device,
        )
    if encoder != "offline:minilm" and project_path(encoder).is_dir():
        encoder = str(project_path(encoder))
    model = load_encoder(encoder, device=device, max_seq_length=params["max_seq_length"])
    pooling = params.get("pooling", "auto")
    pooling = CHECKPOINT_POOLING.get(params["encoder"], "") if pooling == "auto" else pooling
    if pooling:
        _set_pooling(model, pooling)
    freeze_lower_layers(model, params.get("trainable_layers", -1))
    return model


def _set_pooling(model, mode: str) -> None:
    from sentence_transformers.models import Pooling

    for name, module in model.named_children():
        if isinstance(module, Pooling):
            model._modules[name] = Pooling(module.get_sentence_embedding_dimension(), pooling_mode=mode)


def freeze_lower_layers(model, trainable_layers: int) -> int:
    """Train only the top ``trainable_layers`` transformer layers (and what sits above them); -1: all.

    A CPU economy of the offline profile (the paper fine-tunes everything); returns the trainable
    parameter count.
    """
    if trainable_layers >= 0:
        backbone = model[0].auto_model
        layers = backbone.encoder.layer
        for parameter in backbone.parameters():
            parameter.requires_grad_(False)
        for layer in list(layers)[len(layers) - trainable_layers :] if trainable_layers else []:
            for parameter in layer.parameters():
                parameter.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def schedule_for(params: dict[str, Any]) -> tuple[float, int | float]:
    """(learning rate, epochs): the from-scratch encoder has its own, it starts from random weights."""
    if params["encoder"] == "scratch":
        return params["scratch_learning_rate"], params["scratch_epochs"]
    return params["learning_rate"], params["epochs"]


def train(
    model,
    pair_score: PairScore,
    train_frame: pd.DataFrame,
    params: dict[str, Any],
    output_dir,
    dev_evaluator=None,
) -> dict[str, list]:
    """Fine-tune with SentenceTransformerTrainer and the regression loss; returns the loss curve."""
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    learning_rate, epochs = schedule_for(params)
    mapping = {}
    if params["variant"] == "learn":
        mapping = {r"raw_gamma": params["gamma_learning_rate"] or learning_rate}
    steps_per_epoch = max(1, math.ceil(len(train_frame) / params["batch_size"]))
    args = SentenceTransformerTrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=epochs,
        per_device_train_batch_size=params["batch_size"],
        learning_rate=learning_rate,
        warmup_steps=params["warmup_ratio"],  # a float < 1 is a fraction of all steps (transformers 5)
        weight_decay=params["weight_decay"],
        lr_scheduler_type="linear",
        seed=params["seed"],
        data_seed=params["seed"],
        logging_steps=max(1, steps_per_epoch // 4),
        eval_strategy="epoch" if dev_evaluator is not None else "no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        learning_rate_mapping=mapping,
    )
    loss = PairScoreRegressionLoss(model, pair_score)
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=to_dataset(train_frame), loss=loss, evaluator=dev_evaluator
    )
    trainer.train()
    history = trainer.state.log_history
    curve = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
    dev = [(h["step"], h["eval_dev_spearman"]) for h in history if "eval_dev_spearman" in h]
    return {
        "loss_x": [s for s, _ in curve],
        "loss_y": [v for _, v in curve],
        "dev_x": [s for s, _ in dev],
        "dev_y": [v for _, v in dev],
    }


def evaluate(model, pair_score: PairScore, frame: pd.DataFrame, batch_size: int = 64, name: str = "test"):
    """Metrics of one split (see GridSimilarityEvaluator) plus magnitude diagnostics of its embeddings."""
    evaluator = make_evaluator(frame, pair_score, name="", batch_size=batch_size)
    metrics = dict(evaluator(model))
    a, b = evaluator.last_embeddings
    stats = norm_stats(torch.cat([a, b]))
    metrics["norm_mean"], metrics["norm_cv"] = stats["mean"], stats["cv"]
    # Do magnitudes themselves track similarity? (they must not, for a symmetric cosine-like use)
    norm_product = (a.norm(dim=-1) * b.norm(dim=-1)).numpy()
    metrics["norm_product_spearman"] = _correlations(np.asarray(frame["score"], dtype=float), norm_product)[1]
    metrics.update({k: float(v) for k, v in pair_score.gammas().items()})
    return metrics


# --------------------------------------------------------------------------------------------------
# Validation


def validate(params: dict[str, Any]) -> None:
    from ..data.sts import stsb_format

    dataset = params.get("dataset")
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; valid datasets are: {', '.join(DATASETS)}")
    if dataset == "synthetic":
        for name in ("n_train", "n_dev", "n_test"):
            if params.get(name, 0) < 2:
                raise ValueError(f"{name} must be >= 2, got {params.get(name)!r}")
    else:
        if not params.get("data_dir"):
            raise ValueError("dataset 'stsb' needs data_dir (a directory with the STS-B files)")
        stsb_format(project_path(params["data_dir"]))
        nli = params.get("nli_file")
        if nli and not project_path(nli).is_file():
            raise ValueError(f"nli_file {nli!r} not found (expected sentence-transformers' AllNLI.tsv.gz)")
    encoder = params.get("encoder")
    if not isinstance(encoder, str) or not encoder:
        raise ValueError("encoder must be a non-empty string")
    if (
        params.get("profile") == "offline"
        and encoder not in OFFLINE_ENCODERS
        and not project_path(encoder).is_dir()
    ):
        raise ValueError(
            f"encoder {encoder!r} is neither one of {', '.join(OFFLINE_ENCODERS)} nor a local directory "
            "(the offline profile cannot download checkpoints)"
        )
    if params.get("pooling", "auto") not in POOLINGS:
        raise ValueError(
            f"unknown pooling {params.get('pooling')!r}; valid values are: {', '.join(POOLINGS)}"
        )
    if params.get("scale_rule") not in SCALE_RULES:
        raise ValueError(
            f"unknown scale_rule {params.get('scale_rule')!r}; valid rules are: {', '.join(SCALE_RULES)}"
        )
    checks = {
        "score_scale": lambda v: v > 0,
        "epochs": lambda v: v > 0,
        "batch_size": lambda v: v >= 2,
        "learning_rate": lambda v: v > 0,
        "scratch_learning_rate": lambda v: v > 0,
        "scratch_epochs": lambda v: v > 0,
        "trainable_layers": lambda v: v >= -1,
        "warmup_ratio": lambda v: 0 <= v < 1,
        "gamma_learning_rate": lambda v: v >= 0,
        "max_train_pairs": lambda v: v >= 0,
        "torch_threads": lambda v: v >= 0,
    }
    for name, ok in checks.items():
        if name in params and not ok(params[name]):
            raise ValueError(f"bad value for {name}: {params[name]!r}")


# --------------------------------------------------------------------------------------------------
# Report


def reference() -> pd.DataFrame:
    """The paper's Table 5 (STS-B test Spearman) as (setting, metric, variant, value)."""
    from ..reference import load_reference

    table = load_reference("rag_sts_clip")
    table = table[table["experiment"] == "sts"]
    long = table.melt(id_vars=["setting", "metric"], value_vars=list(VARIANTS), var_name="variant")
    return long.dropna(subset=["value"]).reset_index(drop=True)


def _ours_table(df: pd.DataFrame, metric: str, by: str = "encoder") -> pd.DataFrame:
    from ..stats import format_mean_std

    rows = {}
    for setting, group in df.groupby(by, sort=True):
        rows[setting] = {
            PAPER_NAMES[v]: format_mean_std(group.loc[group["variant"] == v, metric].dropna(), digits=3)
            for v in TABLE_ORDER
            if v in set(group["variant"])
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def cross_evaluation_table(df: pd.DataFrame, encoder: str) -> pd.DataFrame:
    """Mean Spearman: rows = trained variant, columns = variant the same embeddings are scored with."""
    group = df[df["encoder"] == encoder]
    table = {}
    for variant in TABLE_ORDER:
        runs = group[group["variant"] == variant]
        if runs.empty:
            continue
        table[f"trained {variant}"] = {
            f"scored {v}": float(np.nanmean([m.get(f"spearman_as_{v}", np.nan) for m in runs["metrics"]]))
            for v in FIXED_VARIANTS
        }
    return pd.DataFrame.from_dict(table, orient="index")


def report(df: pd.DataFrame) -> None:
    """The STS section: Table 5 layout (ours beside the paper's), cross-evaluation, gammas, curves (the verdicts
    are the claims engine's)."""
    import matplotlib.pyplot as plt
    from IPython.display import Markdown, display

    if df is None or len(df) == 0:
        display(Markdown("**STS**: no complete runs."))
        return
    df = df.copy()
    if "encoder" not in df:
        df["encoder"] = [p.get("encoder", "?") for p in df["params"]]
    display(
        Markdown(
            "### STS (Table 5 layout)\nSpearman on the test split, mean ± std over seeds. Sent1Norm = qnorm and "
            "Sent2Norm = dnorm, with sentence 1 as the query. The paper's rows are STS-B with Contriever/RetroMAE; "
            "ours are whatever profile the records come from (offline: the generated pair set)."
        )
    )
    ours = _ours_table(df, "spearman")
    ours.index = [f"ours: {i}" for i in ours.index]
    ref = reference()
    theirs = ref.pivot_table(index="setting", columns="variant", values="value").rename(columns=PAPER_NAMES)
    theirs.index = [f"paper: {i}" for i in theirs.index]
    theirs = theirs[[PAPER_NAMES[v] for v in TABLE_ORDER if PAPER_NAMES[v] in theirs]].map(
        lambda x: f"{x:.3f}"
    )
    display(pd.concat([ours, theirs]).fillna("—"))
    display(Markdown("Pearson (ours only; the paper reports Spearman):"))
    display(_ours_table(df, "pearson"))

    if "spearman_untrained" in df:
        display(Markdown("Before training (the untrained encoder scored with each run's variant) vs after:"))
        display(df.groupby(["encoder", "variant"])[["spearman_untrained", "spearman"]].mean().round(3))

    display(
        Markdown(
            "#### Cross-evaluation\nEach trained model's test embeddings scored under every fixed variant "
            "(STS is a cross-query metric, so qnorm/dnorm differ from dot/cosine at inference)."
        )
    )
    for enc in sorted(df["encoder"].unique()):
        display(Markdown(f"encoder **{enc}**"))
        display(cross_evaluation_table(df, enc).round(3))

    if "spearman_swapped" in df:
        display(Markdown("Sentence 2 as the query (the learn and one-sided variants are order-sensitive):"))
        display(df.groupby(["encoder", "variant"])[["spearman", "spearman_swapped"]].mean().round(3))
    diag = [c for c in ("norm_mean", "norm_cv", "norm_product_spearman") if c in df]
    if diag:
        display(
            Markdown(
                "Magnitudes of the test embeddings after training (norm_product_spearman: Spearman of "
                "|s1||s2| with the gold score):"
            )
        )
        display(df.groupby(["encoder", "variant"])[diag].mean().round(3))
    learn = df[df["variant"] == "learn"]
    if not learn.empty and "gamma_q" in learn:
        display(Markdown("Learned γ (init 0.5):"))
        display(learn.groupby("encoder")[["gamma_q", "gamma_d"]].agg(["mean", "std"]).round(4))

    curves = [
        (r["encoder"], r["variant"], r["curves"].get("train_loss"))
        for _, r in df.iterrows()
        if isinstance(r.get("curves"), dict)
    ]
    curves = [c for c in curves if c[2] and c[2].get("x")]
    if curves:
        encoders = sorted({c[0] for c in curves})
        fig, axes = plt.subplots(1, len(encoders), figsize=(5 * len(encoders), 3.2), squeeze=False)
        colors = dict(zip(TABLE_ORDER, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
        seen = set()
        for enc, variant, curve in curves:
            ax = axes[0, encoders.index(enc)]
            label = variant if (enc, variant) not in seen else None
            seen.add((enc, variant))
            ax.plot(curve["x"], curve["y"], color=colors.get(variant), alpha=0.7, label=label)
            ax.set_title(f"STS training loss ({enc})")
            ax.set_xlabel("step")
            ax.set_yscale("log")
        axes[0, 0].legend(fontsize=8)
        fig.tight_layout()
        plt.show()


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
    grid_axes=("encoder",),
    description="Sentence-pair similarity trained with a regression loss on the grid's pair score "
    "(sentence-transformers); sentence 1 is the query, so qnorm = Sent1Norm and dnorm = Sent2Norm.",
    validate=validate,
    report=report,
    reference=reference,
    extra={"paper_names": PAPER_NAMES, "query_side": "sentence1"},
)


def set_threads(threads: int) -> None:
    """Limit torch's CPU threads (0: leave the default); several runs sharing few cores thrash otherwise."""
    if threads:
        torch.set_num_threads(threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
