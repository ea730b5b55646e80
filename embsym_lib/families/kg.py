"""Knowledge-graph completion: (entity, relation) -> entity link prediction, scored with the grid.

The paper (v3) reports only that the functional-symmetry rule holds for KG completion, without a
setup; the setup here is the field's standard one (see notebooks/kg.ipynb): PyKEEN's ``ERModel`` with
plain embeddings, a ``GridInteraction`` (DistMult- or ComplEx-style query composition, candidate =
tail entity), inverse triples so every prediction is (entity, relation) -> candidate, PyKEEN's LCWA
(1-vs-all) training loop with a softmax cross-entropy at scale α, and PyKEEN's ``RankBasedEvaluator``
with filtered ranks (MRR, Hits@1/3/10, realistic rank under ties).
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..diagnostics import effect_size_band, norm_stats, relevance_magnitude_d
from ..records import project_path
from ..similarity import FIXED_VARIANTS, VARIANTS
from ..stats import format_mean_std
from ..symmetry import asymmetric
from . import FamilySpec

METRICS: tuple[str, ...] = ("mrr", "hits_at_1", "hits_at_3", "hits_at_10")
# PyKEEN metric keys: both prediction directions ("both" = tail queries and inverse-relation queries),
# realistic rank = the expected rank under random tie-breaking.
PYKEEN_KEYS: dict[str, str] = {
    "mrr": "inverse_harmonic_mean_rank",
    "hits_at_1": "hits_at_1",
    "hits_at_3": "hits_at_3",
    "hits_at_10": "hits_at_10",
}
TRAINING_LOOPS: tuple[str, ...] = ("lcwa", "slcwa")
# Must match embsym_lib.adapters.pykeen.COMPOSERS (kept here so that discovering the family and validating
# parameters never imports pykeen, which takes seconds).
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
PAPER_CLAIM = (
    "KG completion is asymmetric ((h, r) → t): the paper (v3) says the rule holds, i.e. a "
    "magnitude-preserving variant (dot / qnorm / dnorm / learn) beats cosine. It reports no KG numbers."
)
TASK = asymmetric(
    "link_prediction",
    query="(entity, relation)",
    candidate="entity",
    description="score(compose(h, r), t); head prediction runs as (t, r⁻¹) → h, so the query side is fixed",
)


def _adapter():
    from ..adapters import pykeen as kg_adapter

    return kg_adapter


# --- data -------------------------------------------------------------------------------------------


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


def check_dataset(name: Any) -> None:
    """One clear error for an unknown name or an incomplete ``path:`` directory, before any compute."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"dataset must be a non-empty string, got {name!r}")
    if name.startswith(PATH_PREFIX):
        split_files(resolve_path(name))
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


def load_dataset(name: str, create_inverse_triples: bool = True, cache_root: str = ""):
    """A PyKEEN ``Dataset`` with inverse triples.

    ``nations`` / ``kinships`` / ``umls`` ship in the pykeen wheel; ``fb15k237`` / ``wn18rr`` go through
    PyKEEN's own loaders (they download into ``cache_root``, or PyKEEN's default cache, on first use);
    ``path:<dir>`` loads train/valid/test TSV files through ``PathDataset``, the class PyKEEN's packaged
    datasets are themselves built on.
    """
    from pykeen.datasets import PathDataset

    if name.startswith(PATH_PREFIX):
        files = split_files(resolve_path(name))
        return PathDataset(
            training_path=files["training"],
            testing_path=files["testing"],
            validation_path=files["validation"],
            create_inverse_triples=create_inverse_triples,
        )
    cls = dataset_class(name)
    kwargs: dict[str, Any] = {"create_inverse_triples": create_inverse_triples}
    if cache_root and name in DOWNLOADED_DATASETS:
        kwargs["cache_root"] = cache_root
    return cls(**kwargs)


# --- validation -------------------------------------------------------------------------------------


def validate(params: dict[str, Any]) -> None:
    check_dataset(params.get("dataset"))
    if params.get("composition") not in COMPOSITIONS:
        raise ValueError(
            f"unknown composition {params.get('composition')!r}; valid compositions are: {', '.join(COMPOSITIONS)}"
        )
    if params.get("training_loop") not in TRAINING_LOOPS:
        raise ValueError(
            f"unknown training_loop {params.get('training_loop')!r}; valid loops are: {', '.join(TRAINING_LOOPS)}"
        )
    for name in ("embedding_dim", "epochs", "batch_size", "eval_batch_size", "num_negatives"):
        if name in params and (not isinstance(params[name], int) or params[name] < 1):
            raise ValueError(f"{name} must be a positive integer, got {params[name]!r}")
    if params.get("composition") == "complex" and params.get("embedding_dim", 2) % 2:
        raise ValueError(
            f"the complex composition needs an even embedding_dim, got {params['embedding_dim']}"
        )
    for name in ("learning_rate", "scale"):
        if name in params and not (isinstance(params[name], (int, float)) and params[name] > 0):
            raise ValueError(f"{name} must be a positive number, got {params[name]!r}")


# --- pipeline ---------------------------------------------------------------------------------------


def configure_torch(params: dict[str, Any]) -> None:
    """Thread count for the CPU (0 keeps torch's default)."""
    threads = int(params.get("cpu_threads", 0) or 0)
    if threads > 0:
        torch.set_num_threads(threads)


def load_data(params: dict[str, Any]):
    return load_dataset(
        params["dataset"], create_inverse_triples=True, cache_root=params.get("cache_root", "")
    )


def describe_data(dataset) -> dict[str, Any]:
    training = dataset.training
    return {
        "entities": int(training.num_entities),
        "relations": int(training.real_num_relations),
        "train_triples": int(training.num_triples),
        "valid_triples": int(dataset.validation.num_triples) if dataset.validation is not None else 0,
        "test_triples": int(dataset.testing.num_triples),
    }


def _training_kwargs(params: dict[str, Any]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"training_loop": params["training_loop"]}
    if params["training_loop"] == "slcwa":
        # Corrupt tails only: with inverse triples every instance is already (entity, relation) -> candidate.
        kwargs["negative_sampler"] = "basic"
        kwargs["negative_sampler_kwargs"] = {
            "num_negs_per_pos": params["num_negatives"],
            "corruption_scheme": ("tail",),
        }
    return kwargs


def _evaluator(keep_ranks: bool = False):
    from pykeen.evaluation import RankBasedEvaluator

    return RankBasedEvaluator(filtered=True, clear_on_finalize=not keep_ranks)


def train(params: dict[str, Any], dataset):
    """Build the model and run PyKEEN's own pipeline (training loop + filtered rank-based test evaluation).
    Returns (model, pipeline result, the test evaluator, which keeps its per-triple ranks for ``units``)."""
    model = _adapter().build_model(
        dataset.training,
        variant=params["variant"],
        composition=params["composition"],
        embedding_dim=params["embedding_dim"],
        scale=params["scale"],
        random_seed=params["seed"],
    )
    # PyKEEN runs gc.collect() after every epoch; freezing the objects that exist now keeps that cheap in a
    # notebook kernel (it otherwise dominates an epoch on the small datasets).
    evaluator = _evaluator(keep_ranks=True)
    gc.freeze()
    try:
        result = _run_pipeline(params, dataset, model, evaluator)
    finally:
        gc.unfreeze()
    return model, result, evaluator


def _run_pipeline(params: dict[str, Any], dataset, model, evaluator):
    from pykeen.pipeline import pipeline

    return pipeline(
        dataset=dataset,
        model=model,
        optimizer="adam",
        optimizer_kwargs={"lr": params["learning_rate"]},
        training_kwargs={
            "num_epochs": params["epochs"],
            "batch_size": params["batch_size"],
            "use_tqdm": False,
        },
        evaluator=evaluator,
        evaluation_kwargs={"batch_size": params["eval_batch_size"], "use_tqdm": False},
        random_seed=params["seed"],
        device=params.get("device") or "cpu",
        use_tqdm=False,
        **_training_kwargs(params),
    )


def rank_metrics(metric_results, side: str = "both") -> dict[str, float]:
    return {
        name: float(metric_results.get_metric(f"{side}.realistic.{key}")) for name, key in PYKEEN_KEYS.items()
    }


def evaluate(result) -> dict[str, float]:
    """Filtered test metrics from the pipeline's own evaluation, plus the per-direction MRRs."""
    metrics = rank_metrics(result.metric_results)
    metrics["mrr_tail"] = float(result.metric_results.get_metric("tail.realistic.inverse_harmonic_mean_rank"))
    metrics["mrr_head"] = float(result.metric_results.get_metric("head.realistic.inverse_harmonic_mean_rank"))
    return metrics


def units(evaluator, dataset) -> dict[str, tuple[list[str], list[float]]]:
    """Per-prediction reciprocal ranks of the test evaluation (filtered, realistic): one unit per test
    triple and predicted side (``<triple index>/<head|tail>``); their mean is the record's ``mrr``.
    Empty if the evaluator's ranks do not cover the test triples exactly once (then no unit-level test)."""
    n = dataset.testing.num_triples
    ids, values = [], []
    for target in ("head", "tail"):
        parts = evaluator.ranks.get((target, "realistic"), [])
        ranks = np.concatenate(parts) if parts else np.empty(0)
        if ranks.size != n:
            return {}
        ids += [f"{i}/{target}" for i in range(n)]
        values += (1.0 / ranks).tolist()
    return {"mrr": (ids, values)}


def _filter_triples(dataset) -> list[torch.Tensor]:
    filters = [dataset.training.mapped_triples]
    if dataset.validation is not None:
        filters.append(dataset.validation.mapped_triples)
    return filters


def cross_evaluate(model, dataset, params: dict[str, Any]) -> dict[str, float]:
    """Filtered test MRR of the *trained* embeddings re-scored under every fixed variant."""
    out: dict[str, float] = {}
    model.eval()
    for variant in FIXED_VARIANTS:
        with _adapter().scored_with(model, variant):
            res = _evaluator().evaluate(
                model,
                dataset.testing.mapped_triples,
                additional_filter_triples=_filter_triples(dataset),
                batch_size=params["eval_batch_size"],
                use_tqdm=False,
            )
        out[variant] = float(res.get_metric("both.realistic.inverse_harmonic_mean_rank"))
    return out


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


@torch.no_grad()
def norm_diagnostics(model, dataset, params: dict[str, Any]) -> dict[str, float]:
    """Entity (candidate) and query norm statistics, and the "relevance counter" correlations.

    - ``entity_norm_cv`` / ``query_norm_cv``: σ/μ of candidate-entity norms and of ‖compose(e, r)‖ over
      every training query (both directions).
    - ``norm_tail_freq_spearman``: Spearman ρ between an entity's norm and how often it is a tail in the
      training triples; ``norm_answer_freq_spearman`` counts both directions (as a tail, and as the head
      answered by an inverse query), i.e. how many training queries it is the positive of.
    - ``magnitude_d_top10``: Cohen's d of candidate norms, true test answers vs the top-10 non-answers
      each test query ranks (``diagnostics.relevance_magnitude_d`` with the ``top_k`` pool).
    """
    model.eval()
    entities = _adapter().entity_embeddings(model)
    train_triples = dataset.training.mapped_triples
    queries = _adapter().query_embeddings(model, train_triples)
    entity_norms = entities.norm(dim=-1).numpy()
    tail_freq = (
        _adapter().candidate_frequency(train_triples, entities.shape[0], both_directions=False).numpy()
    )
    answer_freq = (
        _adapter().candidate_frequency(train_triples, entities.shape[0], both_directions=True).numpy()
    )
    ent, qry = norm_stats(entities), norm_stats(queries)
    out = {
        "entity_norm_mean": ent["mean"],
        "entity_norm_cv": ent["cv"],
        "query_norm_mean": qry["mean"],
        "query_norm_cv": qry["cv"],
        "norm_tail_freq_spearman": _spearman(entity_norms, tail_freq),
        "norm_answer_freq_spearman": _spearman(entity_norms, answer_freq),
    }
    test = dataset.testing.mapped_triples[: params.get("magnitude_queries", 1000)].to(model.device)
    hr = model.relation_inverter.map(test[:, :2].clone(), index=1)
    scores = model.score_t(hr).cpu().numpy()
    relevant = {i: [int(t)] for i, t in enumerate(test[:, 2].tolist())}
    out["magnitude_d_top10"] = relevance_magnitude_d(
        entity_norms, relevant, pool="top_k", scores=scores, k=10
    )
    return out


def gammas(model) -> dict[str, float]:
    similarity = model.interaction.similarity
    if not hasattr(similarity, "gammas"):
        return {}
    return {k: float(v) for k, v in similarity.gammas().items()}


def loss_curve(result) -> dict[str, dict[str, list]]:
    losses = [float(x) for x in result.losses]
    return {"train_loss": {"x": list(range(1, len(losses) + 1)), "y": losses}}


# --- report -----------------------------------------------------------------------------------------


def _display(obj) -> None:
    try:
        from IPython.display import Markdown, display
    except ImportError:  # pragma: no cover - IPython ships with the notebook stack
        print(obj)
        return
    display(Markdown(obj) if isinstance(obj, str) else obj)


def _group_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in ("dataset", "composition") if c in df.columns and df[c].notna().any()]


def _metric_column(df: pd.DataFrame, name: str) -> pd.Series:
    if name in df.columns:
        return pd.to_numeric(df[name], errors="coerce")
    if "metrics" in df.columns:
        return df["metrics"].map(lambda m: (m or {}).get(name, np.nan) if isinstance(m, dict) else np.nan)
    return pd.Series(np.nan, index=df.index)


def _mean_std_table(df: pd.DataFrame, columns: list[str], index: list[str]) -> pd.DataFrame:
    present = [c for c in columns if c in df.columns or "metrics" in df.columns]
    data = df.assign(**{c: _metric_column(df, c) for c in present})
    table = data.groupby(index, dropna=False)[present].agg(
        lambda s: format_mean_std(s.dropna().tolist(), digits=3)
    )
    return table


def _extra_frame(df: pd.DataFrame, key: str) -> pd.DataFrame:
    """One row per (run, variant scored) from ``extra[key]`` dicts (the cross-evaluation)."""
    rows = []
    for _, r in df.iterrows():
        extra = r.get("extra") if isinstance(r.get("extra"), dict) else {}
        for scored, value in (extra.get(key) or {}).items():
            rows.append(
                {
                    **{c: r.get(c) for c in ("dataset", "composition", "variant", "seed")},
                    "scored_with": scored,
                    "value": value,
                }
            )
    return pd.DataFrame(rows)


def _in_variant_order(table: pd.DataFrame) -> pd.DataFrame:
    """Rows sorted by the grid's variant order within each setting (index level ``variant``)."""
    order = {v: i for i, v in enumerate(VARIANTS)}
    keys = table.index.to_frame(index=False)
    keys["_order"] = keys["variant"].map(lambda v: order.get(v, len(order)))
    sort_by = [c for c in keys.columns if c not in ("variant", "_order")] + ["_order"]
    return table.iloc[keys.sort_values(sort_by).index.to_numpy()]


def report(df: pd.DataFrame) -> None:
    """KG section: the paper's qualitative claim, cross-evaluation, norm diagnostics (verdicts: the claims engine)."""
    import matplotlib.pyplot as plt

    _display("### Knowledge-graph completion\n\n**Paper:** " + PAPER_CLAIM)
    if df is None or len(df) == 0:
        _display("_No complete KG runs yet._")
        return
    groups = _group_columns(df)

    cross = _extra_frame(df, "cross_mrr")
    if len(cross):
        _display(
            "**Cross-evaluation** (trained with the row variant, the same embeddings scored with the column "
            "variant; filtered test MRR, mean over seeds). Per-query ranking makes qnorm ≡ dot and dnorm ≡ "
            "cosine at inference, so columns come in identical pairs; rows differ only through training."
        )
        matrix = cross.pivot_table(
            index=[*groups, "variant"], columns="scored_with", values="value", aggfunc="mean"
        )
        matrix = matrix[[v for v in FIXED_VARIANTS if v in matrix.columns]]
        _display(_in_variant_order(matrix).round(4))

    diag_cols = [
        "entity_norm_cv",
        "query_norm_cv",
        "norm_tail_freq_spearman",
        "norm_answer_freq_spearman",
        "magnitude_d_top10",
    ]
    if any(c in df.columns for c in diag_cols) or "metrics" in df.columns:
        _display(
            "**Norm diagnostics** (entity = candidate side): the paper's gradient argument predicts that a "
            "candidate's norm grows with the number of queries it answers under variants that keep the "
            "candidate's magnitude (dot, qnorm): positive Spearman ρ with answer frequency. In KG the same "
            "entity vector also enters queries (through compose(h, r)), which can mask the effect."
        )
        _display(_in_variant_order(_mean_std_table(df, diag_cols, [*groups, "variant"])))
        d_values = _metric_column(df, "magnitude_d_top10")
        if d_values.notna().any():
            bands = df.assign(_d=d_values).groupby("variant")["_d"].mean().map(effect_size_band)
            _display(
                "Cohen's d bands (mean over settings): " + ", ".join(f"{k}: {v}" for k, v in bands.items())
            )

    learn = df[df["variant"] == "learn"] if "variant" in df.columns else df.iloc[0:0]
    if len(learn):
        _display(
            "**Learn variant:** final γ (both start at 0.5; γ = 1 normalizes that side, γ = 0 keeps its norm):"
        )
        _display(_mean_std_table(learn, ["gamma_q", "gamma_d"], groups or ["variant"]))

    rho = df.assign(_rho=_metric_column(df, "norm_answer_freq_spearman"))
    if rho["_rho"].notna().any():
        side = rho["variant"].map(
            lambda v: (
                "kept (dot, qnorm)"
                if v in ("dot", "qnorm")
                else "normalized (cosine, dnorm)"
                if v in ("cosine", "dnorm")
                else None
            )
        )
        counter = rho.assign(candidate=side).dropna(subset=["candidate"])
        if len(counter):
            _display(
                "**Relevance counter:** mean Spearman ρ(entity norm, answer frequency), by whether the "
                "candidate side keeps its magnitude during training:"
            )
            _display(
                counter.assign(setting="all")
                .pivot_table(index=groups or ["setting"], columns="candidate", values="_rho", aggfunc="mean")
                .round(3)
            )

    values = df.assign(_mrr=_metric_column(df, "mrr"))
    settings = values.groupby(groups, dropna=False) if groups else [("all", values)]
    settings = list(settings)
    fig, axes = plt.subplots(1, len(settings), figsize=(3.2 * len(settings), 3), squeeze=False)
    for ax, (key, part) in zip(axes[0], settings, strict=True):
        stats = part.groupby("variant")["_mrr"].agg(["mean", "std"]).fillna(0.0)
        stats = stats.reindex([v for v in VARIANTS if v in stats.index])
        ax.bar(
            stats.index,
            stats["mean"],
            yerr=stats["std"],
            capsize=3,
            color=["tab:gray" if v == "cosine" else "tab:blue" for v in stats.index],
        )
        ax.set_title(" / ".join(map(str, key if isinstance(key, tuple) else (key,))), fontsize=9)
        ax.set_ylabel("filtered MRR")
        ax.tick_params(axis="x", labelrotation=45)
    fig.tight_layout()
    plt.show()


SPEC = FamilySpec(
    name="kg",
    title="Knowledge-graph completion",
    notebook="kg.ipynb",
    tasks={"link_prediction": TASK},
    primary_metric="mrr",
    metrics=METRICS,
    grid_axes=("dataset", "composition"),
    description="Link prediction with PyKEEN: query compose(h, r), candidate t; filtered MRR and Hits@k.",
    validate=validate,
    report=report,
    extra={"paper_claim": PAPER_CLAIM},
)
