"""Recsys family: grid scoring inside RecBole models, loaders on fixture atomic files, a short training,
and the shared contract (schema, notebook, params files, report, claims, one tiny run end to end)."""

from __future__ import annotations

import typing
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from cases import FamilyContract, HookEqualsGrid
from helpers.fake_records import frame

from embsym_lib import schema
from embsym_lib.families.recsys import pipeline, spec
from embsym_lib.losses import info_nce
from embsym_lib.params import ParamError, expand
from embsym_lib.similarity import VARIANTS, paired, pairwise

RECSYS_FIXTURES = Path(__file__).parent / "fixtures" / "recsys"
BASE_PARAMS = {
    "variant": "cosine",
    "dataset": "ml-1m",
    "data_dir": str(RECSYS_FIXTURES),
    "embedding_dim": 8,
    "epochs": 1,
    "stopping_step": 1,
    "batch_size": 64,
    "eval_batch_size": 100_000,
    "lr": 0.01,
    "cross_evaluate": False,
}


def _params(tmp_path, **changes):
    params = schema.validate(spec.RecsysParams, {**BASE_PARAMS, **changes}, "test")
    params["run_dir"] = str(tmp_path / f"run-{params['dataset']}-{params['model']}-{params['seed']}")
    return params


def _build(params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return pipeline.build(params)


@pytest.fixture(scope="module")
def ml1m_setup(tmp_path_factory):
    return _build(_params(tmp_path_factory.mktemp("recsys")))


def _interaction(setup, n: int = 16):
    """A training batch as RecBole's pairwise dataloader yields it (user, item, sampled negative)."""
    return next(iter(setup.train_data))[:n]


def _model_for(setup, name: str, variant: str, loss: str = "bpr", reg_weight: float = 1e-5, shift=True):
    from embsym_lib.adapters import recbole as adapter

    config = setup.config
    for key, value in {"similarity_variant": variant, "grid_loss": loss, "reg_weight": reg_weight}.items():
        config[key] = value
    torch.manual_seed(0)
    model = adapter.model_class(name)(config, setup.train_data.dataset)
    if variant == "learn" and shift:  # move off the symmetric start so that a q/d mix-up would show
        with torch.no_grad():
            model.similarity.raw_gamma_q.fill_(1.3)
            model.similarity.raw_gamma_d.fill_(-0.4)
    return model.eval()


def test_spec_names_agree_with_the_adapter():
    from embsym_lib.adapters import recbole as adapter

    assert spec.MODELS == tuple(adapter.MODELS) and spec.LOSSES == adapter.LOSSES
    assert set(typing.get_args(spec.Dataset)) == set(spec.DATASETS)
    assert set(pipeline.RECBOLE_KEYS) == set(spec.METRICS)
    assert set(spec.SHIPPED_DATASETS) == set(adapter.SHIPPED_DATASETS)


@pytest.mark.parametrize("name", spec.MODELS)
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


@pytest.mark.parametrize("name", spec.MODELS)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("loss", spec.LOSSES)
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
    summary = pipeline.describe_data(ml1m_setup)
    # ratings >= 3 drop user 15 entirely; the 10-core item filter drops item 15 (3 ratings).
    assert (summary["users"], summary["items"], summary["interactions"]) == (14, 14, 168)
    assert summary["train_interactions"] + summary["valid_interactions"] + summary["test_interactions"] == 168
    assert ml1m_setup.config["data_path"].endswith("recsys/ml-1m")
    # our names reach RecBole under its own keys; device=cpu is honoured whatever GPU is visible
    config = ml1m_setup.config
    assert (config["embedding_size"], config["learning_rate"], config["train_batch_size"]) == (8, 0.01, 64)
    assert config["device"] == torch.device("cpu") and not config["use_gpu"]


def test_amazon_fixture_loads_with_five_core(tmp_path):
    setup = _build(_params(tmp_path, dataset="Amazon_Beauty", model="lightgcn"))
    summary = pipeline.describe_data(setup)
    assert (summary["users"], summary["items"], summary["interactions"]) == (8, 8, 48)
    tokens = set(setup.dataset.field2id_token["user_id"][1:])
    assert "AZZZSPARSEUSER1" not in tokens and "A1YJEY40YUW4SE" in tokens


def test_fixture_side_files_are_valid_atomic_files(tmp_path):
    """The .item / .user fixtures parse through RecBole's create_dataset when loaded."""
    from embsym_lib.adapters import recbole as adapter

    params = _params(tmp_path)
    settings = {**pipeline.recbole_settings(params), **adapter.recbole_keys(params)}
    settings["load_col"] = {
        "inter": pipeline.INTER_COLUMNS,
        "item": ["item_id", "movie_title", "release_year", "genre"],
        "user": ["user_id", "age", "gender", "occupation"],
    }
    with adapter.working_directory(tmp_path), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        config = adapter.recbole_config("bpr", "ml-1m", str(RECSYS_FIXTURES), settings, tmp_path, "cpu")
        dataset = adapter.create_dataset(config)
    assert {"genre", "release_year"} <= set(dataset.item_feat.columns)
    assert {"age", "gender", "occupation"} <= set(dataset.user_feat.columns)


def test_split_is_deterministic_per_seed(tmp_path):
    def train_pairs(seed):
        setup = _build(_params(tmp_path, seed=seed))
        feat = setup.train_data.dataset.inter_feat
        return sorted(zip(feat["user_id"].tolist(), feat["item_id"].tolist(), strict=True))

    first = train_pairs(0)
    assert first == train_pairs(0)
    assert first != train_pairs(1)


def test_short_training_records_norm_history(tmp_path):
    params = _params(tmp_path, model="bpr", variant="qnorm", epochs=2, stopping_step=5)
    setup = _build(params)
    history = pipeline.train(setup, params)
    result = pipeline.evaluate(setup, history)
    assert all(0.0 <= result["metrics"][m] <= 1.0 for m in spec.METRICS)
    users, ndcg = result["units"]["ndcg_at_10"]
    assert len(users) == len(set(users)) > 0
    assert np.mean(ndcg) == pytest.approx(result["metrics"]["ndcg_at_10"], abs=1e-5)
    assert len(history["valid"]) == 2 and len(history["train_loss"]) == 2
    assert "spearman_item_norm_popularity" in history["valid"][0]
    checkpoints = Path(setup.config["checkpoint_dir"])
    assert checkpoints.is_dir() and tmp_path in checkpoints.parents and any(checkpoints.iterdir())
    cross = pipeline.cross_evaluate(setup, history)
    assert cross["qnorm"] == pytest.approx(cross["dot"]) and cross["dnorm"] == pytest.approx(cross["cosine"])
    assert setup.model.similarity.variant == "qnorm"
    diag = pipeline.norm_diagnostics(setup)
    assert -1.0 <= diag["spearman_item_norm_popularity"] <= 1.0
    curves = pipeline.curves(history, pipeline.popularity_profile(setup))
    assert curves["valid_ndcg_at_10"]["x"] == [0, 1] and len(curves["item_norm_by_popularity"]["y"]) == 10


def test_atomic_file_without_item_column_fails_before_compute(tmp_path):
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "ml-1m.inter").write_text("user_id:token\trating:float\n1\t5\n")
    with pytest.raises(ParamError, match="header lacks \\['item_id'\\]"):
        expand(
            "recsys",
            "offline",
            variants=["dot"],
            seeds=[0],
            overrides={"dataset": "ml-1m", "data_dir": str(tmp_path)},
        )


# A user's own interactions under a name of their own: <data_dir>/<name>/<name>.inter (8 users x 6 items).
MY_SHOP = {"dataset": "my_shop", "data_dir": str(RECSYS_FIXTURES)}


def _offline_points(overrides):
    return expand("recsys", "offline", variants=["dot"], seeds=[0], overrides=overrides)


def test_user_atomic_files_under_their_own_name_validate():
    points = _offline_points(MY_SHOP)
    assert {p.params["dataset"] for p in points} == {"my_shop"}
    assert spec.inter_file("my_shop", str(RECSYS_FIXTURES)) == RECSYS_FIXTURES / "my_shop" / "my_shop.inter"
    assert spec.inter_columns(spec.inter_file("my_shop", str(RECSYS_FIXTURES)))[:2] == ["user_id", "item_id"]
    with pytest.raises(ParamError, match="parameter 'dataset': input should be 'ml-100k'.*got 'my_shop'"):
        _offline_points({"dataset": "my_shop"})  # a name of one's own needs data_dir
    with pytest.raises(ParamError, match="parameter 'dataset'"):
        _offline_points({"dataset": "../my_shop", "data_dir": str(RECSYS_FIXTURES)})  # a folder name, no path


def test_user_atomic_files_load_unfiltered(tmp_path):
    setup = _build(_params(tmp_path, **MY_SHOP))
    summary = pipeline.describe_data(setup)
    assert (summary["users"], summary["items"], summary["interactions"]) == (8, 10, 48)  # every row kept
    assert setup.config["data_path"].endswith("recsys/my_shop")


@pytest.mark.parametrize("name", ["ml-1m", "my_shop"])
def test_user_atomic_files_missing_or_without_user_id_fail_before_compute(tmp_path, name):
    overrides = {"dataset": name, "data_dir": str(tmp_path)}
    with pytest.raises(ParamError, match=f"RecBole atomic file not found: .*{name}/{name}.inter"):
        _offline_points(overrides)
    folder = tmp_path / name
    folder.mkdir()
    rows = (RECSYS_FIXTURES / "my_shop" / "my_shop.inter").read_text().splitlines()
    header = rows[0].replace("user_id:token", "customer:token")
    (folder / f"{name}.inter").write_text("\n".join([header, *rows[1:4]]) + "\n")
    with pytest.raises(ParamError, match="header lacks \\['user_id'\\]"):
        _offline_points(overrides)


def test_paper_profile_expands_with_fixture_dir():
    points = expand(
        "recsys", "paper", variants=["dnorm"], seeds=[0], overrides={"data_dir": str(RECSYS_FIXTURES)}
    )
    assert {(p.params["dataset"], p.params["model"]) for p in points} == {
        (d, m) for d in ("ml-1m", "Amazon_Beauty") for m in spec.MODELS
    }


class TestRecsysHook(HookEqualsGrid):
    """``GridBPR.full_sort_predict`` (a user against every item) scores like the grid's ``pairwise``."""

    @pytest.fixture(autouse=True)
    def _setup(self, ml1m_setup):
        self.setup = ml1m_setup

    def scores_through_hook(self, variant, q, d):
        from recbole.data.interaction import Interaction

        model = _model_for(self.setup, "bpr", variant, shift=False)
        assert q.shape[1] == model.user_embedding.weight.shape[1]
        with torch.no_grad():
            model.user_embedding.weight[1 : 1 + len(q)] = q
            model.item_embedding.weight[: len(d)] = d
            users = Interaction({model.USER_ID: torch.arange(1, 1 + len(q))})
            return model.full_sort_predict(users).view(len(q), -1)[:, : len(d)]


class TestRecsysContract(FamilyContract):
    family = "recsys"
    tiny = {"epochs": 1, "embedding_dim": 16}
    tiny_axes = {"model": "bpr"}
    bad = (
        ({"dataset": "netflix"}, "parameter 'dataset': input should be 'ml-100k'"),
        ({"dataset": "ml-1m"}, "dataset 'ml-1m' needs data_dir"),
        ({"dataset": "ml-1m", "data_dir": "/nonexistent/recsys"}, "atomic file not found"),
        ({"model": "sasrec"}, "parameter 'model'"),
        ({"loss": "hinge"}, "parameter 'loss'"),
        ({"epochs": 0}, "parameter 'epochs'"),
        ({"scale": -1.0}, "parameter 'scale'"),
        ({"n_layers": -1}, "parameter 'n_layers'"),
        ({"lr": float("nan")}, "parameter 'lr': input should be a finite number"),
        ({"learning_rate": 0.01}, "unknown parameter 'learning_rate'"),
    )
    unit_means = {"ndcg_at_10": "ndcg_at_10"}

    def expands_without_data(self, profile):
        return profile != "paper"  # ml-1m and Amazon_Beauty under data_dir (test_paper_profile_expands_...)

    def fake_records(self) -> pd.DataFrame:
        rng = np.random.default_rng(0)
        rows = []
        for model in spec.MODELS:
            for variant in VARIANTS:
                for seed in (0, 1, 2):
                    metrics = {m: float(rng.uniform(0.1, 0.3)) for m in spec.METRICS}
                    metrics.update(
                        {
                            "spearman_item_norm_popularity": float(rng.uniform(-0.2, 0.9)),
                            "item_norm_cv": 0.3,
                            "magnitude_d_top10": -0.5,
                            "best_epoch": 5.0,
                            "epochs_run": 9.0 if variant != "cosine" else 60.0,
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
                            "variant": variant,
                            "seed": seed,
                            "params": {"model": model, "dataset": "ml-100k", "loss": "bpr", "epochs": 60},
                            "metrics": metrics,
                            "curves": curves,
                            "extra": {"cross_ndcg_at_10": cross},
                        }
                    )
        df = frame(rows)
        axes = {a: [p[a] for p in df["params"]] for a in ("model", "dataset", "loss")}
        return df.assign(**axes, **pd.DataFrame(list(df["metrics"])))

    def check_record(self, record, run_dir):
        metrics, extra = record["metrics"], record["extra"]
        cross = extra["cross_ndcg_at_10"]
        assert cross["qnorm"] == pytest.approx(cross["dot"]) and cross["dnorm"] == pytest.approx(
            cross["cosine"]
        )
        assert 0.0 < metrics["gamma_q"] < 1.0 and metrics["epochs_run"] == 1.0
        assert extra["data"]["users"] == 943 and len(extra["valid_history"]) == 1
        assert set(record["curves"]) >= {"train_loss", "valid_ndcg_at_10", "item_norm_by_popularity"}
        assert (run_dir / "recbole_checkpoints").is_dir() and (run_dir / "recbole.log").is_file()
        assert record["params"]["threads"] == 1 and record["params"]["device"] == "cpu"
        assert (
            metrics["fisher_prefers_qnorm"] in (-1.0, 0.0, 1.0) and record["extra"]["fisher"]["n_pairs"] > 0
        )
