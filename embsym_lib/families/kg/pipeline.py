"""The KG family's steps, in the order its notebook runs them: data, model (the scoring hook), training and
the test evaluation (PyKEEN's ``pipeline()``), cross-evaluation, norm diagnostics, per-triple units.

PyKEEN is imported lazily (through the adapter): importing this module stays cheap."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from ...diagnostics import cross_evaluate as cross_evaluate_with
from ...diagnostics import norm_stats, relevance_magnitude_d
from .spec import DOWNLOADED_DATASETS, PATH_PREFIX, check_dataset, resolve_path, split_files

# PyKEEN metric keys: both prediction directions ("both" = tail queries and inverse-relation queries),
# realistic rank = the expected rank under random tie-breaking.
PYKEEN_KEYS: dict[str, str] = {
    "mrr": "inverse_harmonic_mean_rank",
    "hits_at_1": "hits_at_1",
    "hits_at_3": "hits_at_3",
    "hits_at_10": "hits_at_10",
}


def adapter():
    """The PyKEEN adapter (imports pykeen, which takes seconds)."""
    from ...adapters.pykeen import ADAPTER

    return ADAPTER


def quiet_logs() -> None:
    """PyKEEN's and torch_max_mem's INFO lines would fill the executed notebook."""
    import logging

    logging.getLogger("pykeen").setLevel(logging.WARNING)
    logging.getLogger("torch_max_mem").setLevel(logging.ERROR)


# --- 1. data ----------------------------------------------------------------------------------------


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


def load_data(params: dict[str, Any]):
    return load_dataset(params["dataset"], create_inverse_triples=True, cache_root=params["cache_root"])


def describe_data(dataset) -> dict[str, Any]:
    training = dataset.training
    return {
        "entities": int(training.num_entities),
        "relations": int(training.real_num_relations),
        "train_triples": int(training.num_triples),
        "valid_triples": int(dataset.validation.num_triples) if dataset.validation is not None else 0,
        "test_triples": int(dataset.testing.num_triples),
    }


# --- 2. the scoring hook ----------------------------------------------------------------------------


def build_model(params: dict[str, Any], dataset):
    """PyKEEN's ``ERModel`` on the training triples, the grid plugged in as its ``Interaction``."""
    return adapter().build_model(params, training=dataset.training)


# --- 3. training (and PyKEEN's own test evaluation) --------------------------------------------------


def train(params: dict[str, Any], dataset, model=None, log=None):
    """PyKEEN's own pipeline (training loop + filtered rank-based test evaluation) on a freshly built model
    (or ``model``). Returns (model, pipeline result, the test evaluator, which keeps its per-triple ranks
    for ``units``)."""
    kg = adapter()
    model = build_model(params, dataset) if model is None else model
    history = kg.fit(model, model.loss, dataset, params, log)
    return model, history["result"], history["evaluator"]


def gammas(model) -> dict[str, float]:
    similarity = adapter().similarity(model)
    if not hasattr(similarity, "gammas"):
        return {}
    return {k: float(v) for k, v in similarity.gammas().items()}


def loss_curve(result) -> dict[str, dict[str, list]]:
    losses = [float(x) for x in result.losses]
    return {"train_loss": {"x": list(range(1, len(losses) + 1)), "y": losses}}


# --- 4. evaluation and cross-evaluation --------------------------------------------------------------


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
    """Filtered test MRR of the *trained* embeddings re-scored under every fixed variant (PyKEEN's own
    evaluator inside the adapter's ``scored_with``)."""
    from ...adapters.pykeen import rank_evaluator

    kg = adapter()
    model.eval()

    def mrr(variant: str) -> float:
        with kg.scored_with(model, variant):
            res = rank_evaluator().evaluate(
                model,
                dataset.testing.mapped_triples,
                additional_filter_triples=_filter_triples(dataset),
                batch_size=params["eval_batch_size"],
                use_tqdm=False,
            )
        return float(res.get_metric("both.realistic.inverse_harmonic_mean_rank"))

    return cross_evaluate_with(mrr)


# --- 5. diagnostics ---------------------------------------------------------------------------------


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
    from ...adapters.pykeen import candidate_frequency

    model.eval()
    train_triples = dataset.training.mapped_triples
    queries, entities = adapter().embed(model, train_triples, params)
    entity_norms = entities.norm(dim=-1).numpy()
    tail_freq = candidate_frequency(train_triples, entities.shape[0], both_directions=False).numpy()
    answer_freq = candidate_frequency(train_triples, entities.shape[0], both_directions=True).numpy()
    ent, qry = norm_stats(entities), norm_stats(queries)
    out = {
        "entity_norm_mean": ent["mean"],
        "entity_norm_cv": ent["cv"],
        "query_norm_mean": qry["mean"],
        "query_norm_cv": qry["cv"],
        "norm_tail_freq_spearman": _spearman(entity_norms, tail_freq),
        "norm_answer_freq_spearman": _spearman(entity_norms, answer_freq),
    }
    test = dataset.testing.mapped_triples[: params["magnitude_queries"]].to(model.device)
    hr = model.relation_inverter.map(test[:, :2].clone(), index=1)
    scores = model.score_t(hr).cpu().numpy()
    relevant = {i: [int(t)] for i, t in enumerate(test[:, 2].tolist())}
    out["magnitude_d_top10"] = relevance_magnitude_d(
        entity_norms, relevant, pool="top_k", scores=scores, k=10
    )
    return out


@torch.no_grad()
def norm_and_answer_frequency(model, dataset) -> pd.DataFrame:
    """Per entity: its norm and how many training queries (both directions) it answers (the scatter behind
    ``norm_answer_freq_spearman``)."""
    from ...adapters.pykeen import candidate_frequency, entity_embeddings

    entities = entity_embeddings(model)
    frequency = candidate_frequency(dataset.training.mapped_triples, entities.shape[0], both_directions=True)
    return pd.DataFrame({"entity_norm": entities.norm(dim=-1).numpy(), "answer_frequency": frequency.numpy()})
