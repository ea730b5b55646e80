import math

import numpy as np
import pandas as pd
import pytest
import torch
from cases import FamilyContract
from helpers.fake_records import frame

from embsym_lib import collate, testbed
from embsym_lib.claims import VERDICTS, evaluate
from embsym_lib.collate import load_records
from embsym_lib.families import get_family
from embsym_lib.similarity import ScaleMatched, make_similarity


def test_tasks_are_deterministic_and_carry_their_ground_truth():
    a, b = (
        testbed.make_asymmetric_task(n_docs=300, n_train=256, n_test=50),
        testbed.make_asymmetric_task(n_docs=300, n_train=256, n_test=50),
    )
    assert torch.equal(a.doc_x, b.doc_x) and torch.equal(a.train_pos, b.train_pos)
    assert a.test_relevant == b.test_relevant
    # Relevance favours high-quality documents: relevant documents have higher mean quality.
    rel = {j for docs in a.test_relevant for j in docs}
    quality = a.doc_quality
    assert quality[list(rel)].mean() > quality.mean() + 0.3
    s = testbed.make_symmetric_task(n_train=256, n_test=128)
    assert torch.equal(s.test_a, testbed.make_symmetric_task(n_train=256, n_test=128).test_a)
    assert s.train_y.min() >= -1 and s.train_y.max() <= 1


def test_scale_matching_equalizes_the_mean_magnitude_factor():
    q, d = torch.randn(8, 4) * 5, torch.randn(8, 4) * 3
    for variant in ("cosine", "dot", "qnorm", "dnorm"):
        scores = ScaleMatched(make_similarity(variant)).pairwise(q, d)
        unit = make_similarity("cosine").pairwise(q, d)
        # Same directions: the matched scores are cosine times a relative magnitude with batch mean 1.
        ratio = scores / unit
        assert ratio.mean().item() == pytest.approx(1.0, rel=1e-5)


def test_the_two_by_two_design_puts_the_label_where_it_says():
    """symmetric_signal: the label moves with the inputs' norms; symmetric: it does not (nuisance).
    asymmetric_nuisance: relevance ignores document quality, document norms vary at random."""
    import numpy as np

    def norm_label_correlation(task):
        norms = task.test_a.norm(dim=-1) * task.test_b.norm(dim=-1)
        return float(np.corrcoef(norms.log().numpy(), task.test_y.numpy())[0, 1])

    assert (
        norm_label_correlation(testbed.make_symmetric_task(n_train=64, n_test=2000, magnitude_signal=0.5))
        > 0.3
    )
    assert abs(norm_label_correlation(testbed.make_symmetric_task(n_train=64, n_test=2000))) < 0.1
    plain = testbed.make_asymmetric_task(n_docs=300, n_train=64, n_test=200)
    nuisance = testbed.make_asymmetric_task(
        n_docs=300, n_train=64, n_test=200, quality_weight=0.0, doc_magnitude_noise=0.5
    )
    rel = {j for docs in nuisance.test_relevant for j in docs}
    assert abs(nuisance.doc_quality[list(rel)].mean() - nuisance.doc_quality.mean()) < 0.3
    assert nuisance.doc_x.norm(dim=-1).std() > 1.5 * plain.doc_x.norm(dim=-1).std()
    # without the new options the tasks are the ones before: same draws, same data
    assert torch.equal(plain.doc_x, testbed.make_asymmetric_task(n_docs=300, n_train=64, n_test=200).doc_x)


def test_the_ablation_takes_updates_of_one_fixed_norm():
    task = testbed.make_asymmetric_task(n_docs=300, n_train=256, n_test=20, n_heldout=64)
    out = testbed.train_asymmetric(
        task, "qnorm", 0, epochs=1, batch_size=64, hidden=16, embed_dim=8, ablation=True, sgd_lr=0.05
    )
    assert out["curves"]["update_norm"]["y"] == pytest.approx([0.05], rel=1e-6)


def test_ranking_metrics_against_hand_computed_values():
    scores = torch.tensor([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    out = testbed.ranking_metrics(scores, [[0], [0]])
    assert out["mrr@10"] == pytest.approx((1 + 1 / 3) / 2)
    assert out["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4)) / 2)
    assert out["recall@100"] == 1.0


@pytest.mark.slow
def test_synthetic_notebook_end_to_end_and_report(synthetic_runs):
    points, results = synthetic_runs["points"], synthetic_runs["results"]
    assert [r.status for r in results] == ["complete"] * len(points), [r.error for r in results]
    for r in results:
        m = r.record["metrics"]
        key = "spearman" if r.point.params["task"] == "symmetric" else "ndcg@10"
        assert 0.0 <= m[key] <= 1.0 and math.isfinite(m[key])
        assert r.record["params"]["epochs"] == 2 and r.record["seed"] in (0, 1)
        assert r.record["git"]["commit"] and r.record["versions"]["torch"]
        assert r.record["memory"]["peak_rss_mib"] > 0
        if r.point.params["task"] == "asymmetric":
            assert len(r.record["curves"]["val_ndcg@10"]["y"]) == 2
            # the predictor runs once per seed, in fisher_variants' runs (cosine)
            assert ("fisher_log10_kappa_qnorm" in m) == (r.point.params["variant"] == "cosine")
            assert m.get("fisher_log10_kappa_qnorm", 0.0) >= 0
            # Document norms carry nothing under a normalized document side.
            assert (m["ndcg@10_drop_norm_shuffled"] == 0.0) == (r.point.params["variant"] == "cosine")
    df = load_records(synthetic_runs["outputs"], profile="offline", params_dir=synthetic_runs["params_dir"])
    assert len(df) == len(points)
    rule = evaluate(df).query("id == 'synthetic.rule'").set_index("setting")
    assert set(rule.index) == {"task=asymmetric", "task=symmetric"}
    assert rule["verdict"].isin(VERDICTS).all() and (rule["n_seeds"] == 2).all()
    html = synthetic_runs["report"].read_text()
    assert (
        "Controlled synthetic testbed" in html and 'id="claims-table"' in html and 'id="forest-plot"' in html
    )
    assert "report section failed" not in html
    assert "data:image/png;base64" in html, "figures are embedded"
    assert 'id="power"' in html and "replicates for the plan" in html  # the rule rows' power table


def test_collate_flags_runs_pooled_across_different_parameters(synthetic_runs):
    df = load_records(synthetic_runs["outputs"], profile="offline", params_dir=synthetic_runs["params_dir"])
    spec = get_family("synthetic")
    assert collate.mixed_parameters(spec, df) == {}
    df.at[0, "params"] = {**df.at[0, "params"], "epochs": 99}
    assert collate.mixed_parameters(spec, df) == {"epochs": ["2", "99"]}


class TestSyntheticContract(FamilyContract):
    family = "synthetic"
    tiny = {"n_docs": 300, "n_train": 512, "n_test": 100, "n_heldout": 128, "epochs": 2, "batch_size": 64}
    tiny_axes = {"task": "asymmetric"}
    bad = (
        ({"n_docs": 3}, "n_relevant \\(5\\) must be smaller than n_docs \\(3\\)"),
        ({"batch_size": 9000}, "batch_size \\(9000\\) exceeds n_train"),
        ({"n_heldout": 10}, "parameter 'n_heldout': input should be greater than or equal to 64"),
        ({"lr": float("nan")}, "parameter 'lr': input should be a finite number"),
        ({"device": "cuda"}, "parameter 'device'"),
    )
    unit_means = {"ndcg@10": "ndcg@10"}
    not_recorded_by_tiny_run = frozenset({"spearman"})  # the symmetric task's

    def fake_records(self) -> pd.DataFrame:
        rng = np.random.default_rng(0)
        rows = []
        for task in ("asymmetric", "asymmetric_nuisance", "symmetric", "symmetric_signal", "ablation"):
            for variant in ("cosine", "dot", "qnorm", "dnorm", "learn"):
                for seed in (0, 1, 2):
                    value = 0.5 + 0.05 * (variant == "qnorm") + rng.normal(0, 0.01)
                    metric = "spearman" if task.startswith("symmetric") else "ndcg@10"
                    cross = {f"xeval_{v}_{metric}": value for v in ("cosine", "dot", "qnorm", "dnorm")}
                    metrics = {
                        metric: value,
                        **cross,
                        "fisher_log10_kappa_qnorm": 1.0,
                        "fisher_log10_kappa_dnorm": 1.3,
                        "fisher_prefers_qnorm": 1.0,
                    }
                    metrics["ndcg@10_drop_norm_shuffled"] = 0.0 if variant == "cosine" else 0.01
                    curves = {f"val_{metric}": {"x": [1, 2], "y": [value - 0.1, value]}}
                    rows.append(
                        {
                            "family": "synthetic",
                            "variant": variant,
                            "seed": seed,
                            "params": {"task": task},
                            "metrics": metrics,
                            "curves": curves,
                            "extra": {"fisher": {"predicted": "qnorm"}},
                        }
                    )
        df = frame(rows)
        return df.assign(task=[p["task"] for p in df["params"]], **pd.DataFrame(list(df["metrics"])))

    def check_record(self, record, run_dir):
        metrics = record["metrics"]
        assert metrics["fisher_log10_kappa_qnorm"] >= 0 and metrics["fisher_prefers_qnorm"] in (-1, 0, 1)
        assert len(record["curves"]["val_ndcg@10"]["y"]) == 2
        assert 0.0 < metrics["gamma_q"] < 1.0
