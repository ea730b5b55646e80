"""Recsys family: grid scoring inside RecBole models, loaders on fixture atomic files, validation, report,
and one end-to-end notebook run."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from embsym_lib.claims import VERDICTS, evaluate, load_claims
from embsym_lib.families import recsys
from embsym_lib.losses import info_nce
from embsym_lib.params import ParamError, expand
from embsym_lib.records import read_units
from embsym_lib.similarity import VARIANTS, paired, pairwise

RECSYS_FIXTURES = Path(__file__).parent / "fixtures" / "recsys"
BASE_PARAMS = {
    "variant": "cosine",
    "seed": 0,
    "profile": "offline",
    "run_dir": "",
    "model": "bpr",
    "dataset": "ml-1m",
    "data_path": str(RECSYS_FIXTURES),
    "loss": "bpr",
    "scale": 20.0,
    "embedding_size": 8,
    "n_layers": 2,
    "reg_weight": 1e-5,
    "epochs": 1,
    "stopping_step": 1,
    "train_batch_size": 64,
    "eval_batch_size": 100_000,
    "learning_rate": 0.01,
    "cross_evaluate": False,
    "cpu_threads": 1,
}


def _build(tmp_path, **changes):
    params = {**BASE_PARAMS, **changes}
    recsys.validate(params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return recsys.build(params, tmp_path / f"run-{params['dataset']}-{params['model']}-{params['seed']}")


@pytest.fixture(scope="module")
def ml1m_setup(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("recsys"))


def _interaction(setup, n: int = 16):
    """A training batch as RecBole's pairwise dataloader yields it (user, item, sampled negative)."""
    return next(iter(setup.train_data))[:n]


def _model_for(setup, name: str, variant: str, loss: str = "bpr", reg_weight: float = 1e-5):
    from embsym_lib.adapters import recbole as adapter

    config = setup.config
    for key, value in {"similarity_variant": variant, "grid_loss": loss, "reg_weight": reg_weight}.items():
        config[key] = value
    torch.manual_seed(0)
    model = adapter.model_class(name)(config, setup.train_data.dataset)
    if variant == "learn":  # move off the symmetric start so that a q/d mix-up would show
        with torch.no_grad():
            model.similarity.raw_gamma_q.fill_(1.3)
            model.similarity.raw_gamma_d.fill_(-0.4)
    return model.eval()


@pytest.mark.parametrize("name", recsys.MODELS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_scoring_goes_through_the_grid(ml1m_setup, name, variant):
    model = _model_for(ml1m_setup, name, variant)
    batch = _interaction(ml1m_setup)
    users, items = model.scoring_embeddings()
    user_ids, item_ids = batch[model.USER_ID], batch[model.ITEM_ID]
    similarity = model.similarity
    expected_full = similarity.pairwise(users[user_ids], items)
    expected_pair = similarity.paired(users[user_ids], items[item_ids])
    if variant != "learn":
        torch.testing.assert_close(expected_full, pairwise(users[user_ids], items, variant))
        torch.testing.assert_close(expected_pair, paired(users[user_ids], items[item_ids], variant))
    with torch.no_grad():
        full = model.full_sort_predict(batch).view(len(user_ids), -1)
        pair = model.predict(batch)
    torch.testing.assert_close(full, expected_full)
    torch.testing.assert_close(pair, expected_pair)


@pytest.mark.parametrize("name", recsys.MODELS)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("loss", recsys.LOSSES)
def test_loss_goes_through_the_grid(ml1m_setup, name, variant, loss):
    model = _model_for(ml1m_setup, name, variant, loss=loss, reg_weight=0.0)
    batch = _interaction(ml1m_setup)
    users, items = model.scoring_embeddings()
    u, pos, neg = users[batch[model.USER_ID]], items[batch[model.ITEM_ID]], items[batch[model.NEG_ITEM_ID]]
    if loss == "bpr":
        margin = model.score_scale * (model.similarity.paired(u, pos) - model.similarity.paired(u, neg))
        expected = -torch.log(1e-10 + torch.sigmoid(margin)).mean()  # RecBole's BPRLoss
    else:
        expected = info_nce(u, pos, model.similarity, scale=model.score_scale, d_neg=neg)
    # RecBole's LightGCN adds its [1]-shaped EmbLoss term, so its loss has shape [1].
    torch.testing.assert_close(model.calculate_loss(batch).reshape(()), expected, rtol=1e-4, atol=1e-5)


def test_learn_gammas_are_trained_parameters(ml1m_setup):
    model = _model_for(ml1m_setup, "bpr", "learn")
    names = {n for n, _ in model.named_parameters()}
    assert {"similarity.raw_gamma_q", "similarity.raw_gamma_d"} <= names
    assert set(model.gammas()) == {"gamma_q", "gamma_d"}
    assert _model_for(ml1m_setup, "bpr", "dot").gammas() == {}


def test_lightgcn_adjacency_matches_its_definition(ml1m_setup):
    model = _model_for(ml1m_setup, "lightgcn", "dot")
    r = torch.as_tensor(
        ml1m_setup.train_data.dataset.inter_matrix(form="coo").toarray() > 0, dtype=torch.float64
    )
    n_users = r.shape[0]
    adj = torch.zeros(n_users + r.shape[1], n_users + r.shape[1], dtype=torch.float64)
    adj[:n_users, n_users:] = r
    adj[n_users:, :n_users] = r.T
    d = (adj.sum(1) + 1e-7).pow(-0.5)
    expected = d[:, None] * adj * d[None, :]
    torch.testing.assert_close(model.norm_adj_matrix.to_dense().double(), expected, rtol=1e-5, atol=1e-7)


def test_ml1m_fixture_loads_with_standard_preprocessing(ml1m_setup):
    summary = recsys.describe_data(ml1m_setup)
    # ratings >= 3 drop user 15 entirely; the 10-core item filter drops item 15 (3 ratings).
    assert (summary["users"], summary["items"], summary["interactions"]) == (14, 14, 168)
    assert summary["train_interactions"] + summary["valid_interactions"] + summary["test_interactions"] == 168
    assert ml1m_setup.config["data_path"].endswith("recsys/ml-1m")


def test_amazon_fixture_loads_with_five_core(tmp_path):
    setup = _build(tmp_path, dataset="Amazon_Beauty", model="lightgcn")
    summary = recsys.describe_data(setup)
    assert (summary["users"], summary["items"], summary["interactions"]) == (8, 8, 48)
    tokens = set(setup.dataset.field2id_token["user_id"][1:])
    assert "AZZZSPARSEUSER1" not in tokens and "A1YJEY40YUW4SE" in tokens


def test_fixture_side_files_are_valid_atomic_files(tmp_path):
    """The .item / .user fixtures parse through RecBole's create_dataset when loaded."""
    from embsym_lib.adapters import recbole as adapter

    params = {**BASE_PARAMS}
    settings = recsys.recbole_settings(params)
    settings["load_col"] = {
        "inter": recsys.INTER_COLUMNS,
        "item": ["item_id", "movie_title", "release_year", "genre"],
        "user": ["user_id", "age", "gender", "occupation"],
    }
    with adapter.working_directory(tmp_path), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        config = adapter.recbole_config("bpr", "ml-1m", str(RECSYS_FIXTURES), settings, tmp_path)
        dataset = adapter.create_dataset(config)
    assert {"genre", "release_year"} <= set(dataset.item_feat.columns)
    assert {"age", "gender", "occupation"} <= set(dataset.user_feat.columns)


def test_split_is_deterministic_per_seed(tmp_path):
    def train_pairs(seed):
        setup = _build(tmp_path, seed=seed)
        feat = setup.train_data.dataset.inter_feat
        return sorted(zip(feat["user_id"].tolist(), feat["item_id"].tolist(), strict=True))

    first = train_pairs(0)
    assert first == train_pairs(0)
    assert first != train_pairs(1)


def test_short_training_records_norm_history(tmp_path):
    setup = _build(tmp_path, model="bpr", variant="qnorm", epochs=2, stopping_step=5)
    trainer = recsys.train(setup, tmp_path / "train")
    metrics = recsys.evaluate(trainer, setup)
    assert all(0.0 <= metrics[m] <= 1.0 for m in recsys.METRICS)
    assert len(trainer.valid_history) == 2
    assert "spearman_item_norm_popularity" in trainer.valid_history[0]
    checkpoints = Path(setup.config["checkpoint_dir"])
    assert checkpoints.is_dir() and tmp_path in checkpoints.parents and any(checkpoints.iterdir())
    cross = recsys.cross_evaluate(trainer, setup)
    assert cross["qnorm"] == pytest.approx(cross["dot"]) and cross["dnorm"] == pytest.approx(cross["cosine"])
    assert setup.model.similarity.variant == "qnorm"
    diag = recsys.norm_diagnostics(setup)
    assert -1.0 <= diag["spearman_item_norm_popularity"] <= 1.0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"dataset": "netflix"}, "unknown recsys dataset"),
        ({"dataset": "ml-1m"}, "needs data_path"),
        ({"dataset": "ml-1m", "data_path": "/nonexistent/recsys"}, "atomic file not found"),
        ({"model": "sasrec"}, "unknown recommender model"),
        ({"loss": "hinge"}, "unknown loss"),
        ({"epochs": 0}, "epochs must be a positive integer"),
        ({"scale": -1.0}, "scale must be a positive number"),
        ({"n_layers": -1}, "n_layers must be a non-negative integer"),
    ],
)
def test_validation_errors(override, message):
    with pytest.raises(ParamError, match=message):
        expand("recsys", "offline", variants=["dot"], seeds=[0], overrides=override)


def test_paper_profile_expands_with_fixture_path():
    points = expand(
        "recsys", "paper", variants=["dnorm"], seeds=[0], overrides={"data_path": str(RECSYS_FIXTURES)}
    )
    assert {(p.params["dataset"], p.params["model"]) for p in points} == {
        (d, m) for d in ("ml-1m", "Amazon_Beauty") for m in recsys.MODELS
    }


def _synthetic_df(seeds=(0, 1, 2), variants=VARIANTS) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for model in recsys.MODELS:
        for variant in variants:
            for seed in seeds:
                metrics = {m: float(rng.uniform(0.1, 0.3)) for m in recsys.METRICS}
                metrics.update(
                    {
                        "spearman_item_norm_popularity": float(rng.uniform(-0.2, 0.9)),
                        "item_norm_cv": 0.3,
                        "magnitude_d_top10": -0.5,
                    }
                )
                if variant == "learn":
                    metrics.update({"gamma_q": 0.5, "gamma_d": 0.49})
                curves = {
                    "valid_ndcg_at_10": {"x": [0, 1, 2], "y": list(rng.uniform(0.1, 0.2, 3))},
                    "spearman_item_norm_popularity": {"x": [0, 1, 2], "y": list(rng.uniform(0, 1, 3))},
                    "item_norm_by_popularity": {"x": [1.0, 10.0, 100.0], "y": [0.2, 0.3, 0.5]},
                }
                cross = {v: float(rng.uniform(0.1, 0.3)) for v in ("cosine", "dot", "qnorm", "dnorm")}
                rows.append(
                    {
                        "family": "recsys",
                        "profile": "offline",
                        "run_id": f"{model}-{variant}-{seed}",
                        "variant": variant,
                        "seed": seed,
                        "status": "complete",
                        "wall_time_s": 1.0,
                        "model": model,
                        **metrics,
                        "params": {
                            "model": model,
                            "dataset": "ml-100k",
                            "loss": "bpr",
                            "variant": variant,
                            "seed": seed,
                        },
                        "metrics": metrics,
                        "curves": curves,
                        "extra": {"cross_ndcg_at_10": cross},
                    }
                )
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    "frame",
    [
        _synthetic_df(),
        _synthetic_df(seeds=(0,)),
        _synthetic_df(variants=("dot", "qnorm")),
        _synthetic_df().iloc[0:0],
    ],
    ids=["full", "one-seed", "no-cosine", "empty"],
)
def test_report_runs_on_synthetic_records(frame, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.setattr("matplotlib.pyplot.show", lambda *a, **k: None)
    recsys.SPEC.report(frame)
    out = evaluate(frame, load_claims(["recsys"]))
    assert out["verdict"].isin(VERDICTS).all()
    if frame.empty or frame["seed"].nunique() < 2 or "cosine" not in set(frame["variant"]):
        assert not out["verdict"].isin(["supported", "contradicted"]).any()


@pytest.mark.slow
def test_notebook_end_to_end(tmp_path):
    from embsym_lib.runner import run_grid

    points = expand(
        "recsys", "offline", variants=["qnorm"], seeds=[0], overrides={"epochs": 1, "embedding_size": 16}
    )
    points = [p for p in points if p.params["model"] == "bpr"]
    (result,) = run_grid(points, outputs_dir=tmp_path)
    assert result.status == "complete", result.error
    metrics = result.record["metrics"]
    for name in recsys.METRICS:
        assert 0.0 < metrics[name] <= 1.0
    assert all(math.isfinite(v) for v in metrics.values())
    assert result.record["extra"]["cross_ndcg_at_10"]["qnorm"] == pytest.approx(metrics["ndcg_at_10"])
    assert (result.run_dir / "recbole_checkpoints").is_dir() and (result.run_dir / "recbole.log").is_file()
    users, ndcg = read_units(result.run_dir)["ndcg_at_10"]
    assert len(users) == len(set(users)) > 100
    assert np.mean(ndcg) == pytest.approx(metrics["ndcg_at_10"], abs=1e-4)  # RecBole rounds to 4 places
