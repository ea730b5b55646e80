"""Retrieval family: scoring hooks, exact search + pytrec_eval, data generation, loaders on fixtures,
validation, the report, and one end-to-end notebook run."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from embsym_lib.adapters import sentence_transformers as st
from embsym_lib.claims import VERDICTS, evaluate, load_claims
from embsym_lib.data import beir
from embsym_lib.data import retrieval as rdata
from embsym_lib.families import retrieval as fam
from embsym_lib.ir_metrics import evaluate_run, exact_match, exact_search, to_run, token_f1
from embsym_lib.records import read_units
from embsym_lib.similarity import FIXED_VARIANTS, VARIANTS, LearnableSimilarity, make_similarity, pairwise

FIXTURES = Path(__file__).parent / "fixtures" / "retrieval"


@pytest.mark.parametrize("variant", VARIANTS)
def test_loss_hook_scores_equal_library(variant):
    torch.manual_seed(0)
    q, d = torch.randn(5, 8) * 3, torch.randn(7, 8) * 2
    sim = st.retrieval_similarity(variant)
    got = sim(q, d)
    want = sim.pairwise(q, d) if isinstance(sim, LearnableSimilarity) else pairwise(q, d, variant)
    torch.testing.assert_close(got, want)
    if variant != "learn":
        torch.testing.assert_close(got, make_similarity(variant).pairwise(q, d))


def test_learn_gammas_are_loss_parameters():
    class Dummy(torch.nn.Module):
        pass

    sim = st.retrieval_similarity("learn")
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    loss = MultipleNegativesRankingLoss(Dummy(), scale=20.0, similarity_fct=sim)
    names = {n for n, _ in loss.named_parameters()}
    assert {"similarity_fct.raw_gamma_q", "similarity_fct.raw_gamma_d"} <= names


@pytest.mark.parametrize("variant", FIXED_VARIANTS)
def test_exact_search_matches_full_sort(variant):
    torch.manual_seed(1)
    q, d = torch.randn(9, 6), torch.randn(50, 6) * torch.rand(50, 1) * 4
    scores, idx = exact_search(q, d, variant, k=10, query_batch=4, doc_batch=7)
    full = pairwise(q, d, variant)
    want_s, want_i = full.topk(10, dim=1)
    torch.testing.assert_close(scores, want_s)
    assert torch.equal(idx, want_i)


def test_exact_search_exclude_and_metrics():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    d = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    scores, idx = exact_search(q, d, "cosine", k=3, exclude={0: [0]})
    assert 0 not in to_run(["a", "b"], ["x", "y", "z"], scores, idx)["a"] or True
    run = to_run(["a", "b"], ["x", "y", "z"], scores, idx)
    assert "x" not in run["a"]
    m = evaluate_run({"a": {"y": 1}, "b": {"z": 1}}, run)
    assert m["ndcg10"] == pytest.approx(1.0) and m["mrr10"] == pytest.approx(1.0)
    m2 = evaluate_run({"a": {"z": 1}, "b": {"z": 1}}, run)
    assert m2["mrr10"] == pytest.approx((0.5 + 1.0) / 2)


def test_qa_metrics():
    assert exact_match("The Paris!", "paris") == 1.0
    assert token_f1("in paris france", "paris") == pytest.approx(2 * (1 / 3) * 1 / (1 / 3 + 1))
    assert token_f1("", "x") == 0.0


def test_pydoc_generation_is_deterministic(tmp_path, monkeypatch):
    # Smaller package families than the real ones, so that generating twice stays fast.
    monkeypatch.setattr(
        rdata,
        "PYDOC_DOMAINS",
        {
            "scientific": ("networkx",),
            "stdlib": ("json", "email"),
            "deeplearning": ("timm",),
            "web": ("click", "jinja2"),
        },
    )
    sizes = rdata.PydocSizes(
        n_train=40,
        n_dev_queries=10,
        dev_corpus=20,
        n_heldout=10,
        n_test_queries=10,
        test_corpus=30,
        max_doc_chars=300,
    )
    m1 = rdata.generate_pydoc(tmp_path / "a", sizes)
    m2 = rdata.generate_pydoc(tmp_path / "b", sizes)
    assert m1 == m2
    for name in ("train", "pydoc_scientific", "pydoc_stdlib", "pydoc_deeplearning", "pydoc_web"):
        for f in ("corpus.jsonl", "queries.jsonl"):
            assert (tmp_path / "a" / name / f).read_bytes() == (tmp_path / "b" / name / f).read_bytes()
    test = beir.load_beir(tmp_path / "a" / "pydoc_scientific")
    assert test.sizes() == {"queries": 10, "corpus": 30, "qrels": 10}
    pairs = rdata.load_training_pairs("pydoc", tmp_path / "a")
    assert len(pairs) == 40
    train_q = set(beir.load_beir(tmp_path / "a" / "train", "train").queries.values())
    assert not train_q & set(test.queries.values())


def test_split_docstring():
    assert rdata.split_docstring("Short.") is None
    doc = "Compute the thing for the input.\n\nLong body " + "words " * 30
    summary, body = rdata.split_docstring(doc)
    assert summary == "Compute the thing for the input." and body.startswith("Long body")


def test_beir_loader_and_cqadupstack():
    data = beir.load_beir(FIXTURES / "scifact")
    assert data.query_ids() == ["q1", "q2"]
    assert data.qrels["q2"] == {"d3": 2}
    assert data.doc_texts()[0] == "Aspirin Aspirin reduces fever and pain."
    cqa = beir.load_beir(FIXTURES / "cqadupstack")
    assert set(cqa.queries) == {"android/qa", "english/qa"}
    assert cqa.qrels["english/qa"] == {"english/a1": 1}


def test_paper_loaders_on_fixtures():
    dl19 = rdata.load_test_set("trec_dl19", FIXTURES)
    assert list(dl19.queries) == ["19335"] and dl19.qrels["19335"]["p1"] == 3 and len(dl19.corpus) == 3
    dev = rdata.load_test_set("msmarco_dev", FIXTURES)
    assert dev.sizes()["queries"] == 2
    bio = rdata.load_test_set("biology", FIXTURES)
    assert bio.excluded == {"0": {"b3"}, "1": set()} and bio.qrels["1"] == {"b2": 1}
    mus = rdata.load_test_set("musique", FIXTURES)
    assert mus.qrels == {"m1": {"d4": 1}}
    pairs = rdata.load_training_pairs("msmarco_qa", FIXTURES)
    assert pairs == [
        ("what is a fever", "A fever is a high body temperature."),
        ("where is paris", "Paris is the capital of France."),
    ]
    questions, corpus = rdata.load_rag_set("nq", FIXTURES)
    assert questions[0]["answers"] == ["Paris", "in Paris"] and "d3" in corpus


def test_bright_parquet(tmp_path):
    for kind in ("examples", "documents"):
        rows = list(beir.read_jsonl(FIXTURES / "bright" / kind / "biology.jsonl"))
        (tmp_path / "bright" / kind).mkdir(parents=True)
        pd.DataFrame(rows).to_parquet(tmp_path / "bright" / kind / "biology.parquet")
    assert rdata.load_test_set("biology", tmp_path).qrels == rdata.load_test_set("biology", FIXTURES).qrels


def test_evaluate_on_fixture_with_random_embeddings():
    """The evaluation path (exact search, exclusions, cross-evaluation, Cohen's d) on a paper-format set."""
    data = {
        "biology": rdata.load_test_set("biology", FIXTURES),
        "scifact": rdata.load_test_set("scifact", FIXTURES),
    }

    class FakeModel:
        def encode(self, texts, **kw):
            g = torch.Generator().manual_seed(len(texts))
            return torch.randn(len(texts), 4, generator=g) * 3

    params = {"encode_batch_size": 8, "pool_k": 10, "irrelevant_pool": "top_k"}
    res = fam.evaluate(FakeModel(), st.score_function("dnorm"), data, fam.ENCODERS["minilm"], params)
    for r in res.values():
        assert 0 <= r["ndcg10"] <= 1 and set(r["cross_ndcg10"]) == set(FIXED_VARIANTS)
        assert r["cross_ndcg10"]["dnorm"] == pytest.approx(r["cross_ndcg10"]["cosine"])
    flat_trained = {"best_dev_ndcg10": 0.5, "history": [{}], "similarity": st.score_function("dnorm")}
    metrics = fam.flat_metrics(res, flat_trained, {}, {})
    assert "ndcg10_mean" in metrics and "ndcg10_bright12" in metrics and "ndcg10_ood" in metrics
    learned = LearnableSimilarity(0.2, 0.7)
    metrics = fam.flat_metrics(res, {**flat_trained, "similarity": learned}, {}, {})
    assert metrics["gamma_q"] == pytest.approx(0.2) and metrics["gamma_d"] == pytest.approx(0.7)


def _base_params(**kw):
    params = {
        "variant": "dot",
        "seed": 0,
        "profile": "offline",
        "run_dir": "",
        "encoder": "minilm",
        "test_sets": ["pydoc_scientific"],
        "data_source": "pydoc",
        "data_dir": "",
        "lr": 1e-5,
        "scale": 20.0,
        "batch_size": 8,
        "max_seq_length": 32,
        "epochs": 1.0,
        "irrelevant_pool": "corpus",
        "pooling": "",
        "rag_sets": [],
        "encoder_overrides": {},
    }
    params.update(kw)
    return params


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"encoder": "gpt9"}, "unknown encoder"),
        ({"test_sets": ["nope"]}, "unknown retrieval dataset"),
        ({"test_sets": []}, "test_sets is empty"),
        ({"irrelevant_pool": "all"}, "unknown irrelevant_pool"),
        ({"batch_size": 1}, "batch_size"),
        ({"scale": 0.0}, "scale must be > 0"),
        ({"data_source": "msmarco_qa", "data_dir": "/no/such/dir"}, "does not exist"),
        ({"test_sets": ["scifact"]}, "need data_dir"),
        ({"rag_sets": ["squad"]}, "unknown RAG set"),
        ({"encoder_overrides": {"scratch": {"momentum": 1}}}, "unknown keys"),
        ({"pooling": "attention"}, "unknown pooling"),
    ],
)
def test_validation_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        fam.validate(_base_params(**bad))


def test_validation_paper_fixture_ok_and_missing_file(tmp_path):
    fam.validate(
        _base_params(
            data_source="msmarco_qa",
            data_dir=str(FIXTURES),
            test_sets=["scifact", "trec_dl19", "biology", "musique", "msmarco_dev"],
        )
    )
    with pytest.raises(ValueError, match="fiqa"):
        fam.validate(_base_params(data_source="msmarco_qa", data_dir=str(FIXTURES), test_sets=["fiqa"]))


def test_params_expand():
    from embsym_lib.params import expand

    points = expand("retrieval", "offline")
    assert len(points) == 5 * 3 * 2
    assert {p.params["encoder"] for p in points} == {"minilm", "scratch"}
    paper = expand(
        "retrieval",
        "paper",
        variants=["qnorm"],
        seeds=[0],
        overrides={"data_dir": str(FIXTURES), "test_sets": ["scifact", "trec_dl19"]},
    )
    assert {p.params["encoder"] for p in paper} == {"contriever", "retromae", "e5", "bert"}


def _synthetic_df():
    rng = np.random.default_rng(0)
    rows = []
    for encoder in ("minilm", "scratch"):
        for v in VARIANTS:
            for seed in (0, 1):
                base = {"cosine": 0.5, "dot": 0.52, "qnorm": 0.53, "dnorm": 0.5, "learn": 0.51}[
                    v
                ] + rng.normal(0, 0.01)
                datasets = {
                    n: {
                        "group": "in_domain" if n == "pydoc_scientific" else "ood",
                        "ndcg10": base + rng.normal(0, 0.02),
                        "cohen_d": rng.normal(0.3, 0.2),
                        "query_norm_cv": abs(rng.normal(0.1, 0.02)),
                    }
                    for n in rdata.PYDOC_TEST_SETS
                }
                metrics = {
                    "ndcg10_mean": base,
                    "ndcg10_id": base,
                    "ndcg10_ood": base,
                    "ndcg10_in_domain": base,
                    "cohen_d_mean": 0.3,
                    **{f"xeval_ndcg10_{y}": base for y in FIXED_VARIANTS},
                }
                if v == "learn":
                    metrics.update(gamma_q=0.5, gamma_d=0.501)
                metrics.update({f"ndcg10_{n}": r["ndcg10"] for n, r in datasets.items()})
                metrics.update({f"cohen_d_{n}": r["cohen_d"] for n, r in datasets.items()})
                curves = {
                    "dev_query_norm_mean": {"x": [0, 1], "y": [1.0, 1.1]},
                    "gamma_q": {"x": [0, 1], "y": [0.5, 0.5]},
                }
                rows.append(
                    {
                        "family": "retrieval",
                        "run_id": f"{encoder}-{v}-s{seed}",
                        "variant": v,
                        "seed": seed,
                        "encoder": encoder,
                        "params": {
                            "encoder": encoder,
                            "reader": "offline:tiny-t5",
                            "irrelevant_pool": "corpus",
                            "test_sets": list(rdata.PYDOC_TEST_SETS),
                            "variant": v,
                            "seed": seed,
                        },
                        "metrics": metrics,
                        "curves": curves,
                        "extra": {"datasets": datasets, "fisher": {"predicted": "qnorm"}},
                        **metrics,
                    }
                )
    return pd.DataFrame(rows)


def test_report_runs_on_synthetic_and_partial_df(monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    df = _synthetic_df()
    fam.report(df)
    fam.report(df[(df["seed"] == 0) & df["variant"].isin(["cosine", "dot"])].reset_index(drop=True))
    fam.report(df.iloc[0:0])
    assert not fam.reference().empty


def test_retrieval_claims_on_synthetic_records():
    out = evaluate(_synthetic_df(), load_claims(["retrieval"])).set_index(["id", "setting"])
    assert out["verdict"].isin(VERDICTS).all()
    assert out.loc[("retrieval.rag.qnorm_beats_cosine", "encoder=minilm"), "reason"].startswith(
        "the offline reader is a randomly initialised tiny T5"
    )
    assert (
        "no retrieval runs with encoder=contriever"
        in out.loc["retrieval.contriever.qnorm_beats_cosine.id", "reason"].iloc[0]
    )
    # four test sets: no correlation across them can reach significance, and the row says so
    corr = out.loc[("retrieval.cohen_d_tracks_relative_gain", "encoder=minilm")]
    assert corr["verdict"] == "inconclusive" and "cannot reach significance" in corr["reason"]


@pytest.mark.slow
def test_notebook_end_to_end(tmp_path):
    from embsym_lib.params import expand
    from embsym_lib.runner import run_grid

    points = expand(
        "retrieval",
        "offline",
        variants=["learn"],
        seeds=[0],
        overrides={
            "test_sets": ["pydoc_scientific", "pydoc_stdlib"],
            "test_queries": 10,
            "test_corpus": 40,
            "dev_queries": 8,
            "dev_corpus": 20,
            "n_train_pairs": 32,
            "batch_size": 8,
            "max_seq_length": 32,
            "n_evals": 1,
            "fisher_pairs": 32,
            "fisher_batch": 16,
            "fisher_variants": ["learn"],
            "rag_questions": 4,
            "encoder_overrides": {"scratch": {"n_train_pairs": 32, "epochs": 1.0}},
        },
    )
    points = [p for p in points if p.params["encoder"] == "scratch"]
    results = run_grid(points, outputs_dir=tmp_path)
    assert results[0].status == "complete", results[0].error
    metrics = results[0].record["metrics"]
    for key in ("ndcg10_mean", "ndcg10_id", "ndcg10_ood", "mrr10_mean", "recall100_mean", "rag_f1"):
        assert 0.0 <= metrics[key] <= 1.0 and math.isfinite(metrics[key])
    assert 0.0 < metrics["gamma_q"] < 1.0
    assert results[0].record["extra"]["fisher"]["predicted"] in ("qnorm", "dnorm")
    assert set(results[0].record["curves"]) >= {"dev_ndcg10_own", "dev_ndcg10_cosine", "gamma_d"}
    units = read_units(results[0].run_dir)
    for name in ("pydoc_scientific", "pydoc_stdlib"):
        queries, ndcg = units[f"ndcg10/{name}"]
        assert len(queries) == 10 and np.mean(ndcg) == pytest.approx(metrics[f"ndcg10_{name}"])


@pytest.mark.slow
def test_notebook_trains_in_two_processes(tmp_path):
    """train_processes=2 through the runner: torchrun starts two gloo processes on the CPU, the replicas
    (encoder and learn's gammas, which live outside DDP) end bit-identical, negatives are gathered, and the
    trained state comes back into the notebook, which evaluates and writes the record."""
    import json

    from embsym_lib.params import expand
    from embsym_lib.runner import run_grid

    n_pairs, batch = 48, 6
    points = expand(
        "retrieval",
        "offline",
        variants=["learn"],
        seeds=[0],
        overrides={
            "encoder": "scratch",
            "test_sets": ["pydoc_scientific"],
            "test_queries": 6,
            "test_corpus": 20,
            "dev_queries": 6,
            "dev_corpus": 16,
            "batch_size": batch,
            "max_seq_length": 24,
            "n_evals": 1,
            "fisher_pairs": 0,
            "rag_sets": [],
            "encoder_overrides": {"scratch": {"n_train_pairs": n_pairs, "epochs": 1.0}},
            "train_processes": 2,
            "gather_across_devices": True,
        },
    )
    (result,) = run_grid(points, outputs_dir=tmp_path)
    assert result.status == "complete", result.error
    record = result.record
    assert record["extra"]["training"] == {
        "world_size": 2,
        "global_batch_size": 2 * batch,
        "gather_across_devices": True,
    }
    assert record["extra"]["total_steps"] == n_pairs // (2 * batch)
    ddp = Path(record["params"]["run_dir"]) / "ddp"
    ranks = [json.loads((ddp / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["sum"] == ranks[1]["sum"] and ranks[0]["sq"] == ranks[1]["sq"]
    assert all(r["gather_across_devices"] for r in ranks)
    state = torch.load(ddp / "trained.pt", map_location="cpu", weights_only=False)
    assert state["similarity"]["raw_gamma_q"].item() != 0.0  # gamma was trained
    assert record["metrics"]["gamma_q"] == pytest.approx(
        torch.sigmoid(state["similarity"]["raw_gamma_q"]).item()
    )
    assert 0.0 <= record["metrics"]["ndcg10_mean"] <= 1.0
