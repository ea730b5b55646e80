"""The KG family's steps, in the order its notebook runs them: data, model (the scoring hook), training and
the test evaluation (PyKEEN's ``pipeline()``), cross-evaluation, norm diagnostics, per-triple units.

PyKEEN is imported lazily (through the adapter): importing this module stays cheap."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import pandas as pd
import torch

from ...diagnostics import cross_evaluate as cross_evaluate_with
from ...diagnostics import fisher_wanted, norm_stats, relevance_magnitude_d
from ...records import project_path
from ...runtime import rng_preserved
from .spec import DOWNLOADED_DATASETS, PATH_PREFIX, dataset_class, resolve_path, split_files
from .triples import folder_report, shown

WARM_IMPORTS = ("embsym_lib.adapters.pykeen", "pykeen.datasets")  # imported where used

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


def load_dataset(name: str, create_inverse_triples: bool = True, cache_root: str = ""):
    """A PyKEEN ``Dataset`` with inverse triples.

    ``nations`` / ``kinships`` / ``umls`` ship in the pykeen wheel; ``fb15k237`` / ``wn18rr`` go through
    PyKEEN's own loaders (they download into ``cache_root``, or PyKEEN's default cache, on first use);
    ``path:<dir>`` loads train/valid/test TSV files through ``PathDataset``, the class PyKEEN's packaged
    datasets are themselves built on. A ``path:`` dataset is loaded here and now, without PyKEEN's
    warnings about the validation/test triples it drops: ``describe_data`` counts them exactly instead.
    """
    from pykeen.datasets import PathDataset

    if name.startswith(PATH_PREFIX):
        files = split_files(resolve_path(name))
        dataset = PathDataset(
            training_path=files["training"],
            testing_path=files["testing"],
            validation_path=files["validation"],
            create_inverse_triples=create_inverse_triples,
        )
        with _without_drop_warnings():
            dataset.training, dataset.validation, dataset.testing  # noqa: B018 (loads the lazy dataset)
        return dataset
    cls = dataset_class(name)
    kwargs: dict[str, Any] = {"create_inverse_triples": create_inverse_triples}
    if cache_root and name in DOWNLOADED_DATASETS:
        kwargs["cache_root"] = str(project_path(cache_root))  # the project's, whatever the kernel's cwd
    return cls(**kwargs)


# PyKEEN's warnings when it maps validation/test triples with the training vocabulary (replaced by
# describe_data's exact counts).
_DROP_WARNINGS = ("that are not in the training set", "triples were filtered out")


@contextlib.contextmanager
def _without_drop_warnings():
    import logging

    def keep(record: logging.LogRecord) -> bool:
        return not any(text in record.getMessage() for text in _DROP_WARNINGS)

    logger = logging.getLogger("pykeen.triples.triples_factory")
    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def load_data(params: dict[str, Any]):
    return load_dataset(params["dataset"], create_inverse_triples=True, cache_root=params["cache_root"])


SPLITS = {"training": "train", "validation": "valid", "testing": "test"}


def describe_data(dataset, name: str = "") -> dict[str, Any]:
    """Entities, relations and the triples of each split as PyKEEN maps them; for a ``path:`` dataset
    (``name``) also what each file held and what PyKEEN left out (``file_report``)."""
    training = dataset.training
    summary: dict[str, Any] = {
        "entities": int(training.num_entities),
        "relations": int(training.real_num_relations),
        "train_triples": int(training.num_triples),
        "valid_triples": int(dataset.validation.num_triples) if dataset.validation is not None else 0,
        "test_triples": int(dataset.testing.num_triples),
    }
    if name.startswith(PATH_PREFIX):
        summary.update(file_report(dataset, name))
    return summary


def _labels(factory) -> set[tuple[str, str, str]]:
    """A triples factory's mapped triples as (head, relation, tail) labels."""
    entity, relation = factory.entity_id_to_label, factory.relation_id_to_label
    return {(entity[h], relation[r], entity[t]) for h, r, t in factory.mapped_triples.tolist()}


def file_report(dataset, name: str) -> dict[str, Any]:
    """What PyKEEN kept of each file of a ``path:`` dataset, checked against its triples factories:

    - ``file_triples``: triples (well-formed lines) per split;
    - ``dropped``: validation/test triples PyKEEN left out because their head, relation or tail never
      occurs in the training file; ``dropped_unseen``: how many of those have an unseen entity and how many
      an unseen relation (a triple can have both); ``dropped_examples``: a few, with their line;
    - ``duplicates``: repeats of a triple within a split, which PyKEEN keeps once.

    Raises if the factories' mapped triples are not exactly the file's triples minus those (so the counts
    are the truth, not an estimate)."""
    files = split_files(resolve_path(name))
    report = folder_report(files)
    factories = {"training": dataset.training, "validation": dataset.validation, "testing": dataset.testing}
    for split, factory in factories.items():
        expected = report[split]["kept_triples"]
        if factory.num_triples != len(expected) or _labels(factory) != expected:
            raise RuntimeError(
                f"PyKEEN read {shown(files[split])} differently from embsym's check of it ({factory.num_triples} "
                f"mapped triples, {len(expected)} expected), so the drop counts would be wrong"
            )
    evaluated = [s for s in SPLITS if s != "training"]
    return {
        "file_triples": {SPLITS[s]: report[s]["file_triples"] for s in SPLITS},
        "dropped": {SPLITS[s]: report[s]["dropped"] for s in evaluated},
        "dropped_unseen": {
            SPLITS[s]: {"entity": report[s]["unseen_entity"], "relation": report[s]["unseen_relation"]}
            for s in evaluated
        },
        "dropped_examples": {SPLITS[s]: report[s]["examples"] for s in evaluated},
        "duplicates": {SPLITS[s]: report[s]["duplicates"] for s in SPLITS},
    }


SIZES = ("entities", "relations", "train_triples", "valid_triples", "test_triples")


def data_log(name: str, summary: dict[str, Any]) -> list[str]:
    """The console lines of step 1: the sizes, then (``path:`` datasets) per split what PyKEEN dropped,
    with a few examples, and the repeated triples it kept once."""
    sizes = {k: summary[k] for k in SIZES}
    lines = [f"dataset {name}: {sizes}"]
    for split, count in summary.get("dropped", {}).items():
        total = summary["file_triples"][split]
        text = f"{split}: {count} of {total} triples dropped by PyKEEN (entity or relation not in train)"
        if count:
            unseen = summary["dropped_unseen"][split]
            examples = "; ".join(
                f"line {e['line']} ({', '.join(e['triple'])}: {' and '.join(e['unseen'])} unseen)"
                for e in summary["dropped_examples"][split]
            )
            text += (
                f": {unseen['entity']} with an unseen entity, {unseen['relation']} with an unseen relation; "
                f"e.g. {examples}"
            )
        lines.append(text)
    for split, count in summary.get("duplicates", {}).items():
        if count:
            lines.append(f"{split}: {count} repeated triple{'s' * (count != 1)}, kept once by PyKEEN")
    return lines


def data_table(summary: dict[str, Any], name: str = "") -> pd.DataFrame:
    """Step 1's table: the sizes, or (``path:`` datasets) one row per split: triples in the file, dropped,
    repeated, and the triples the run uses."""
    if "file_triples" not in summary:
        return pd.Series({k: summary[k] for k in SIZES}, name=name).to_frame()
    return pd.DataFrame(
        {
            "file triples": summary["file_triples"],
            "dropped (unseen in train)": {"train": 0, **summary["dropped"]},
            "repeats (kept once)": summary["duplicates"],
            "used": {s: summary[f"{s}_triples"] for s in SPLITS.values()},
        }
    )


# --- 2. the scoring hook ----------------------------------------------------------------------------


def build_model(params: dict[str, Any], dataset):
    """PyKEEN's ``ERModel`` on the training triples, the grid plugged in as its ``Interaction``."""
    return adapter().build_model(params, training=dataset.training)


def fisher_prediction(model, dataset, params: dict[str, Any]) -> dict[str, Any]:
    """The Fisher predictor (``diagnostics.predict_side``) before training: ``_validation_queries``
    embedded by the untrained model (data no compared run trained on, from a state no run has trained)."""
    if not fisher_wanted(params):
        return {}
    with rng_preserved():
        return _fisher_prediction(model, dataset, params)


def _validation_queries(model, dataset, params: dict[str, Any]):
    """Up to ``fisher_pairs`` validation queries compose(h, r) (both directions, a seeded sample), their
    answer entities' ids, and every entity embedding; None when there are fewer than one batch."""
    from ...adapters.pykeen import entity_embeddings, query_embeddings

    if not params["fisher_pairs"] or dataset.validation is None:
        return None
    triples = dataset.validation.mapped_triples
    queries = query_embeddings(model, triples)
    answer_ids = torch.cat([triples[:, 2], triples[:, 0]]).cpu()
    n = min(params["fisher_pairs"], queries.shape[0])
    n -= n % params["fisher_batch"]
    if n < params["fisher_batch"]:
        return None
    order = torch.randperm(queries.shape[0], generator=torch.Generator().manual_seed(int(params["seed"])))[:n]
    return queries[order].cpu(), answer_ids[order], entity_embeddings(model)


def _fisher_prediction(model, dataset, params: dict[str, Any]) -> dict[str, Any]:
    from ...diagnostics import predict_side

    if (found := _validation_queries(model, dataset, params)) is None:
        return {}
    queries, answer_ids, entities = found
    return predict_side(
        queries, entities[answer_ids], scale=params["scale"], batch_size=params["fisher_batch"]
    )


def score_test(model, dataset, params: dict[str, Any]) -> dict[str, Any]:
    """The Fisher score test (``diagnostics.magnitude_score_test``) in the dot run, after training: the
    same validation queries as the predictor, each against every entity (unfiltered), its answer the
    target. ``{"score_test": ...}`` to merge into the run's ``fisher``; empty in other runs."""
    from ...diagnostics import magnitude_score_test, score_test_wanted

    with rng_preserved():
        found = _validation_queries(model, dataset, params) if score_test_wanted(params) else None
    if found is None:
        return {}
    return {"score_test": magnitude_score_test(found[0], found[2], found[1], seed=int(params["seed"]))}


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
