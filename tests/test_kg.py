"""Knowledge-graph family: the PyKEEN scoring hook, losses, loaders (packaged and fixture TSVs),
validation, the report, and one notebook run end to end."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from embsym_lib.claims import evaluate, load_claims
from embsym_lib.families import get_family, kg
from embsym_lib.params import ParamError, expand
from embsym_lib.records import read_units
from embsym_lib.similarity import FIXED_VARIANTS, VARIANTS, LearnableSimilarity, paired, pairwise

pykeen_adapter = pytest.importorskip("embsym_lib.adapters.pykeen")

FB_FIXTURE = "path:tests/fixtures/kg/fb15k237_sample"
WN_FIXTURE = "path:tests/fixtures/kg/wn18rr_sample"
TINY = {"embedding_dim": 8, "epochs": 1, "batch_size": 32, "eval_batch_size": 64}


def _params(**overrides):
    base = {
        "variant": "dot",
        "seed": 0,
        "profile": "offline",
        "run_dir": "",
        "dataset": FB_FIXTURE,
        "composition": "distmult",
        "embedding_dim": 8,
        "epochs": 2,
        "batch_size": 32,
        "learning_rate": 0.05,
        "scale": 20.0,
        "training_loop": "lcwa",
        "num_negatives": 4,
        "eval_batch_size": 64,
        "cross_evaluate": True,
        "magnitude_queries": 100,
        "device": "cpu",
        "cpu_threads": 0,
        "cache_root": "",
    }
    base.update(overrides)
    return base


def _similarity(variant):
    if variant == "learn":
        return LearnableSimilarity(0.3, 0.8)
    return None


@pytest.mark.parametrize("composition", kg.COMPOSITIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_interaction_scores_equal_the_library_similarity(variant, composition):
    torch.manual_seed(0)
    interaction = pykeen_adapter.GridInteraction(variant, composition, similarity=_similarity(variant))
    sim = interaction.similarity
    h, r, t = torch.randn(5, 6), torch.randn(5, 6), torch.randn(5, 6)
    all_t = torch.randn(7, 6) * torch.rand(7, 1) * 3
    q = pykeen_adapter.compose(h, r, composition)
    with torch.no_grad():
        expected_pairs = sim.paired(q, t) if variant == "learn" else paired(q, t, variant)
        expected_all = sim.pairwise(q, all_t) if variant == "learn" else pairwise(q, all_t, variant)
        assert torch.allclose(interaction.score_hrt(h, r, t).squeeze(-1), expected_pairs, atol=1e-5)
        assert torch.allclose(interaction.score_t(h, r, all_t), expected_all, atol=1e-5)


def test_complex_composition_is_complex_multiplication():
    torch.manual_seed(1)
    h, r, t = torch.randn(4, 6), torch.randn(4, 6), torch.randn(4, 6)
    q = pykeen_adapter.compose(h, r, "complex")
    hc, rc, tc = (torch.complex(x[:, :3], x[:, 3:]) for x in (h, r, t))
    complex_score = (hc * rc * tc.conj()).sum(-1).real
    assert torch.allclose(paired(q, t, "dot"), complex_score, atol=1e-5)
    assert set(pykeen_adapter.COMPOSITIONS) == set(kg.COMPOSITIONS)


@pytest.fixture(scope="module")
def fixture_dataset():
    return kg.load_dataset(FB_FIXTURE)


@pytest.mark.parametrize("variant", FIXED_VARIANTS)
def test_model_scores_go_through_the_grid(fixture_dataset, variant):
    model = pykeen_adapter.build_model(fixture_dataset.training, variant, embedding_dim=8, random_seed=0)
    assert model.use_inverse_triples
    assert not any(rep.constrainer for rep in model.entity_representations)
    model.eval()
    raw = fixture_dataset.training.mapped_triples[:6]
    hr = model.relation_inverter.map(raw[:, :2].clone())
    entities = model.entity_representations[0](indices=None)
    q = model.interaction.query(entities[hr[:, 0]], model.relation_representations[0](indices=hr[:, 1]))
    with torch.no_grad():
        assert torch.allclose(model.score_t(hr), pairwise(q, entities, variant), atol=1e-5)
        # predict_h runs as a tail query of the inverse relation: the query side stays compose(e, r).
        rt = raw[:, 1:].clone()
        inverse = model.relation_inverter.map(raw[:, [2, 1]].clone(), invert=True)
        q_inv = model.interaction.query(
            entities[inverse[:, 0]], model.relation_representations[0](indices=inverse[:, 1])
        )
        assert torch.allclose(model.predict_h(rt), pairwise(q_inv, entities, variant), atol=1e-5)


def test_scaled_cross_entropy_matches_pykeen_infonce_and_torch():
    from pykeen.losses import InfoNCELoss

    torch.manual_seed(0)
    scores, labels = torch.randn(4, 9), torch.zeros(4, 9)
    labels[torch.arange(4), torch.tensor([1, 3, 0, 8])] = 1.0
    ours = pykeen_adapter.ScaledCrossEntropyLoss(scale=20.0)
    theirs = InfoNCELoss(
        margin=0.0, log_adversarial_temperature=pykeen_adapter.log_scale_to_temperature(20.0)
    )
    expected = F.cross_entropy(20.0 * scores, labels.argmax(-1))
    assert torch.allclose(ours.process_lcwa_scores(scores, labels), expected, atol=1e-5)
    assert torch.allclose(theirs.process_lcwa_scores(scores, labels), expected, atol=1e-5)
    pos, neg = torch.randn(4, 1), torch.randn(4, 5)
    expected_s = F.cross_entropy(20.0 * torch.cat([pos, neg], -1), torch.zeros(4, dtype=torch.long))
    assert torch.allclose(ours.process_slcwa_scores(pos, neg), expected_s, atol=1e-5)
    with pytest.raises(ValueError, match="positive"):
        pykeen_adapter.ScaledCrossEntropyLoss(scale=0.0)


def test_packaged_data_is_deterministic_and_has_the_documented_sizes():
    sizes = {"nations": 14, "kinships": 104, "umls": 135}
    for name, entities in sizes.items():
        a, b = kg.load_dataset(name), kg.load_dataset(name)
        assert a.training.num_entities == entities
        assert a.training.create_inverse_triples
        assert torch.equal(a.training.mapped_triples, b.training.mapped_triples)
        assert torch.equal(a.testing.mapped_triples, b.testing.mapped_triples)


def test_paper_dataset_names_resolve_to_pykeen_classes_without_download():
    from pykeen.datasets import WN18RR, FB15k237, Nations, PathDataset

    assert kg.dataset_class("fb15k237") is FB15k237
    assert kg.dataset_class("wn18rr") is WN18RR
    assert kg.dataset_class("nations") is Nations
    # The packaged datasets are PathDatasets: a `path:` directory loads through the same class.
    assert issubclass(Nations, PathDataset)


@pytest.mark.parametrize(
    "name, entity, relation",
    [(FB_FIXTURE, "/m/027rn", "/film/film/genre"), (WN_FIXTURE, "00260881", "_hypernym")],
)
def test_fixture_tsv_directories_load_through_pathdataset(name, entity, relation):
    from pykeen.datasets import PathDataset

    ds = kg.load_dataset(name)
    assert isinstance(ds, PathDataset)
    assert ds.training.create_inverse_triples
    assert entity in ds.training.entity_to_id  # WN18RR's zero-padded synset ids stay strings
    assert relation in ds.training.relation_to_id
    assert ds.validation.num_triples > 0 and ds.testing.num_triples > 0
    assert ds.testing.entity_to_id == ds.training.entity_to_id


def _forbid_downloads(monkeypatch):
    import pykeen.datasets.base as datasets_base

    def refuse(*args, **kwargs):
        raise AssertionError("a KG loader tried to download")

    monkeypatch.setattr(datasets_base, "download", refuse)
    monkeypatch.setattr(datasets_base.requests, "get", refuse)


def test_paper_loaders_read_a_prefilled_pykeen_cache(tmp_path, monkeypatch):
    """FB15k-237 and WN18RR through PyKEEN's own classes, from a cache laid out like their real archives
    (FB15k-237: FB15K-237.2.zip holding Release/{train,valid,test}.txt; WN18RR: the extracted .txt files)."""
    import zipfile

    _forbid_downloads(monkeypatch)
    fixtures = Path(__file__).parent / "fixtures" / "kg"
    fb_dir = tmp_path / "fb15k237"
    fb_dir.mkdir()
    with zipfile.ZipFile(fb_dir / "FB15K-237.2.zip", "w") as zf:
        for split in ("train", "valid", "test"):
            zf.write(fixtures / "fb15k237_sample" / f"{split}.tsv", f"Release/{split}.txt")
    wn_dir = tmp_path / "wn18rr"
    wn_dir.mkdir()
    for split in ("train", "valid", "test"):
        (wn_dir / f"{split}.txt").write_bytes((fixtures / "wn18rr_sample" / f"{split}.tsv").read_bytes())

    for name, sample, entity in (
        ("fb15k237", "fb15k237_sample", "/m/027rn"),
        ("wn18rr", "wn18rr_sample", "00260881"),
    ):
        ds = kg.load_dataset(name, cache_root=str(tmp_path))
        assert isinstance(ds, kg.dataset_class(name))
        assert ds.training.create_inverse_triples
        assert entity in ds.training.entity_to_id
        expected = sum(1 for _ in open(fixtures / sample / "train.tsv"))
        assert ds.training.num_triples == expected
        assert ds.testing.num_triples > 0 and ds.validation.num_triples > 0


def test_training_on_a_fixture_registers_and_trains_learn_gammas(fixture_dataset):
    fresh = pykeen_adapter.build_model(fixture_dataset.training, "learn", embedding_dim=8)
    assert fresh.interaction.similarity.gammas() == pytest.approx({"gamma_q": 0.5, "gamma_d": 0.5})
    params = _params(variant="learn", epochs=3)
    model, result, evaluator = kg.train(params, fixture_dataset)
    # pipeline() builds its optimizer from model.get_grad_params(); the γ must be among them.
    grad_params = {id(p) for p in model.get_grad_params()}
    similarity = model.interaction.similarity
    assert id(similarity.raw_gamma_q) in grad_params and id(similarity.raw_gamma_d) in grad_params
    g = kg.gammas(model)
    assert g["gamma_q"] != pytest.approx(0.5, abs=1e-6) or g["gamma_d"] != pytest.approx(0.5, abs=1e-6)
    metrics = kg.evaluate(result)
    assert all(0.0 <= metrics[m] <= 1.0 for m in kg.METRICS)
    assert metrics["hits_at_1"] <= metrics["hits_at_3"] <= metrics["hits_at_10"]
    # one unit per test triple and side; their mean is the pipeline's own MRR
    ids, rr = kg.units(evaluator, fixture_dataset)["mrr"]
    assert len(ids) == len(set(ids)) == 2 * fixture_dataset.testing.num_triples
    assert np.mean(rr) == pytest.approx(metrics["mrr"], rel=1e-6)


def test_cross_evaluation_and_diagnostics(fixture_dataset):
    params = _params(variant="dot", epochs=2, composition="complex")
    model, _, _ = kg.train(params, fixture_dataset)
    assert model.interaction.composition == "complex"
    cross = kg.cross_evaluate(model, fixture_dataset, params)
    # Per-query ranking: qnorm ranks like dot, dnorm like cosine.
    assert cross["qnorm"] == pytest.approx(cross["dot"], abs=1e-6)
    assert cross["dnorm"] == pytest.approx(cross["cosine"], abs=1e-6)
    assert model.interaction.variant == "dot"  # restored after re-scoring
    diag = kg.norm_diagnostics(model, fixture_dataset, params)
    assert diag["entity_norm_cv"] > 0 and diag["query_norm_cv"] > 0
    assert -1.0 <= diag["norm_answer_freq_spearman"] <= 1.0


def test_candidate_frequency_counts_both_directions():
    triples = torch.tensor([[0, 0, 1], [2, 0, 1], [1, 1, 3]])
    assert pykeen_adapter.candidate_frequency(triples, 4, both_directions=False).tolist() == [0, 2, 0, 1]
    assert pykeen_adapter.candidate_frequency(triples, 4, both_directions=True).tolist() == [1, 3, 1, 1]


@pytest.mark.parametrize(
    "override, message",
    [
        ({"dataset": "freebase"}, "unknown KG dataset 'freebase'"),
        ({"dataset": "path:tests/fixtures/kg/does_not_exist"}, "directory not found"),
        ({"dataset": "path:tests/fixtures/kg/incomplete"}, "no validation file"),
        ({"composition": "rotate"}, "unknown composition 'rotate'"),
        ({"composition": "complex", "embedding_dim": 7}, "even embedding_dim"),
        ({"training_loop": "owa"}, "unknown training_loop"),
        ({"epochs": 0}, "epochs must be a positive integer"),
        ({"scale": -1.0}, "scale must be a positive number"),
    ],
)
def test_bad_parameters_fail_before_compute(override, message):
    with pytest.raises(ParamError, match=message):
        expand("kg", "offline", variants=["dot"], seeds=[0], overrides=override)


def test_profiles_expand():
    offline = expand("kg", "offline")
    assert {p.params["dataset"] for p in offline} == {"nations", "kinships", "umls"}
    assert len(offline) == 5 * 3 * 3
    paper = expand("kg", "paper")
    assert {p.params["dataset"] for p in paper} == {"fb15k237", "wn18rr"}
    assert expand("kg", "offline", variants=["dot"], seeds=[0], overrides={"dataset": WN_FIXTURE})


def _synthetic_records():
    rng = np.random.default_rng(0)
    rows = []
    for dataset in ("nations", "umls"):
        for variant in VARIANTS:
            for seed in range(3 if dataset == "nations" else 1):
                mrr = 0.5 + (0.1 if variant in ("dot", "qnorm") else 0.0) + rng.normal(0, 0.01)
                metrics = {
                    "mrr": mrr,
                    "hits_at_1": mrr - 0.2,
                    "hits_at_3": mrr,
                    "hits_at_10": min(1.0, mrr + 0.3),
                    "entity_norm_cv": 0.2,
                    "query_norm_cv": 0.3,
                    "norm_tail_freq_spearman": 0.4,
                    "norm_answer_freq_spearman": 0.5,
                    "magnitude_d_top10": 0.9,
                }
                if variant == "learn":
                    metrics.update(gamma_q=0.49, gamma_d=0.51)
                rows.append(
                    {
                        "family": "kg",
                        "profile": "offline",
                        "run_id": f"{dataset}-{variant}-{seed}",
                        "variant": variant,
                        "seed": seed,
                        "status": "complete",
                        "wall_time_s": 1.0,
                        "dataset": dataset,
                        "composition": "distmult",
                        "params": {
                            "dataset": dataset,
                            "composition": "distmult",
                            "variant": variant,
                            "seed": seed,
                        },
                        "metrics": metrics,
                        "curves": {},
                        "extra": {"cross_mrr": {v: mrr for v in FIXED_VARIANTS}},
                        **metrics,
                    }
                )
    return pd.DataFrame(rows)


def test_report_runs_on_synthetic_and_partial_records(monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    spec = get_family("kg")
    df = _synthetic_records()
    rule = evaluate(df, load_claims(["kg"])).query("id == 'kg.rule'").set_index("setting")
    assert rule.loc["dataset=nations, composition=distmult", "verdict"] == "supported"  # qnorm is +0.1
    assert rule.loc["dataset=umls, composition=distmult", "verdict"] == "untestable here"  # one seed
    spec.report(df)
    spec.report(df[df["variant"] == "dot"].drop(columns=["extra"]))
    spec.report(df.iloc[0:0])
    spec.report(df[df["dataset"] == "umls"].drop(columns=["dataset", "composition"]))


@pytest.mark.slow
def test_notebook_end_to_end(tmp_path):
    from embsym_lib.runner import run_grid

    points = expand("kg", "offline", variants=["learn"], seeds=[0], overrides={**TINY, "epochs": 2})
    points = [p for p in points if p.axes["dataset"] == "nations"]
    (result,) = run_grid(points, outputs_dir=tmp_path)
    assert result.status == "complete", result.error
    metrics = result.record["metrics"]
    for name in kg.METRICS:
        assert 0.0 <= metrics[name] <= 1.0
    assert all(math.isfinite(v) for v in metrics.values())
    assert 0.0 < metrics["gamma_q"] < 1.0 and 0.0 < metrics["gamma_d"] < 1.0
    assert set(result.record["extra"]["cross_mrr"]) == set(FIXED_VARIANTS)
    ids, rr = read_units(result.run_dir)["mrr"]
    assert result.record["units"] == {"mrr": len(ids)}
    assert np.mean(rr) == pytest.approx(metrics["mrr"], rel=1e-6)
    assert len(result.record["curves"]["train_loss"]["y"]) == 2
