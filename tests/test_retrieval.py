"""Retrieval family: the shared contract (schema, notebook, report, claims, a tiny run), the scoring hook
equals the grid, exact search + pytrec_eval, data generation, loaders on fixtures, the paper profile's
data checks, the evaluation path on fixtures and a run that trains in two processes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from cases import FamilyContract, HookEqualsGrid
from helpers.fake_records import frame

from embsym_lib import schema
from embsym_lib.adapters import sentence_transformers as st
from embsym_lib.claims import evaluate, load_claims
from embsym_lib.data import beir
from embsym_lib.data import retrieval as rdata
from embsym_lib.families.retrieval import pipeline, rag
from embsym_lib.families.retrieval.spec import RetrievalParams
from embsym_lib.ir_metrics import evaluate_run, exact_match, exact_search, to_run, token_f1
from embsym_lib.params import ParamError, expand
from embsym_lib.similarity import FIXED_VARIANTS, VARIANTS, LearnableSimilarity, pairwise

FIXTURES = Path(__file__).parent / "fixtures" / "retrieval"
TINY = {
    "test_sets": ["pydoc_scientific", "pydoc_stdlib"],
    "test_queries": 10,
    "test_corpus": 40,
    "dev_queries": 8,
    "dev_corpus": 20,
    "batch_size": 8,
    "max_seq_length": 32,
    "n_evals": 1,
    "fisher_pairs": 32,
    "fisher_batch": 16,
    "fisher_variants": ["learn"],
    "rag_questions": 4,
    "encoder_overrides": {"scratch": {"n_train_pairs": 32, "epochs": 1.0}},
}


class TestRetrievalContract(FamilyContract):
    family = "retrieval"
    tiny = TINY
    tiny_axes = {"encoder": "scratch"}
    bad = (
        ({"encoder": "gpt9"}, "unknown encoder 'gpt9'"),
        ({"test_sets": ["nope"]}, "unknown retrieval dataset 'nope'"),
        ({"test_sets": []}, "test_sets is empty"),
        ({"irrelevant_pool": "all"}, "parameter 'irrelevant_pool'"),
        ({"batch_size": 1}, "parameter 'batch_size'"),
        ({"scale": 0.0}, "parameter 'scale'"),
        ({"lr": float("nan")}, "parameter 'lr': input should be a finite number"),
        ({"data_source": "msmarco_qa", "data_dir": "/no/such/dir"}, "does not exist"),
        ({"test_sets": ["scifact"]}, "need data_dir"),
        ({"rag_sets": ["squad"]}, "parameter 'rag_sets.0'"),
        ({"encoder_overrides": {"scratch": {"momentum": 1}}}, "unknown keys \\['momentum'\\]"),
        (
            {"encoder_overrides": {"scratch": {"batch_size": 1}}},
            "encoder_overrides\\['scratch'\\]\\['batch_size'\\]",
        ),
        ({"pooling": "attention"}, "parameter 'pooling'"),
        ({"gather_across_devices": "yes"}, "parameter 'gather_across_devices'"),
        ({"train_processes": 0}, "parameter 'train_processes'"),
        ({"fisher_variants": ["euclidean"]}, "parameter 'fisher_variants.0'"),
    )
    unit_means = {
        "ndcg10/pydoc_scientific": "ndcg10_pydoc_scientific",
        "mrr10/pydoc_stdlib": "mrr10_pydoc_stdlib",
    }

    def expands_without_data(self, profile: str) -> bool:
        return profile != "paper"  # the paper profile reads /data/embsym/retrieval

    def fake_records(self) -> pd.DataFrame:
        return fake_records()

    def check_record(self, record, run_dir):
        metrics = record["metrics"]
        for key in ("ndcg10_mean", "ndcg10_id", "ndcg10_ood", "mrr10_mean", "recall100_mean", "rag_f1"):
            assert 0.0 <= metrics[key] <= 1.0
        assert 0.0 < metrics["gamma_q"] < 1.0
        assert record["extra"]["fisher"]["predicted"] in ("qnorm", "dnorm")
        assert set(record["curves"]) >= {"dev_ndcg10_own", "dev_ndcg10_cosine", "gamma_d"}
        assert record["extra"]["encoder"] == {"name": "scratch", "checkpoint": "scratch", "pooling": "mean"}
        assert record["extra"]["train_pairs"] == 32 and record["params"]["eval_batch_size"] == 64


class TestRetrievalHook(HookEqualsGrid):
    """The adapter's score, as sentence-transformers' loss calls it (``similarity_fct``)."""

    def scores_through_hook(self, variant, q, d):
        return st.retrieval_loss(None, st.retrieval_similarity(variant)).similarity_fct(q, d)


def fake_records() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for encoder in ("minilm", "scratch"):
        for v in VARIANTS:
            for seed in (0, 1):
                base = {"cosine": 0.5, "dot": 0.52, "qnorm": 0.53, "dnorm": 0.5, "learn": 0.51}[v]
                base += rng.normal(0, 0.01)
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
                    "query_norm_cv_mean": 0.1,
                    "fisher_log10_kappa_qnorm": 1.0,
                    "fisher_log10_kappa_dnorm": 1.2,
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
                params = {
                    "encoder": encoder,
                    "reader": "offline:tiny-t5",
                    "irrelevant_pool": "corpus",
                    "test_sets": list(rdata.PYDOC_TEST_SETS),
                }
                extra = {"datasets": datasets, "fisher": {"predicted": "qnorm"}}
                rows.append(
                    {
                        "family": "retrieval",
                        "variant": v,
                        "seed": seed,
                        "params": params,
                        "metrics": metrics,
                        "curves": curves,
                        "extra": extra,
                    }
                )
    df = frame(rows)
    return df.assign(encoder=[p["encoder"] for p in df["params"]], **pd.DataFrame(list(df["metrics"])))


def test_learn_gammas_are_loss_parameters():
    loss = st.retrieval_loss(torch.nn.Module(), st.retrieval_similarity("learn"), 20.0)
    names = {n for n, _ in loss.named_parameters()}
    assert {"similarity_fct.raw_gamma_q", "similarity_fct.raw_gamma_d"} <= names


def test_one_encoder_registry_for_both_families():
    from embsym_lib.families import get_family

    for family in ("retrieval", "sts"):
        field = get_family(family).params.model_fields["encoder"]
        assert field.default == "minilm"
    assert {"minilm", "scratch", "contriever", "retromae", "e5", "bert"} == set(st.ENCODERS)
    with pytest.raises(ValueError, match="unknown encoder 'offline:minilm'"):
        st.encoder_info("offline:minilm")
    assert st.encoder_info(str(FIXTURES)).checkpoint == str(FIXTURES)  # a local folder


def test_encoder_overrides_apply_per_encoder():
    params = schema.validate(RetrievalParams, {"encoder": "scratch"}, "t")
    assert st.with_overrides(params)["lr"] == 0.0005 and st.with_overrides(params)["n_train_pairs"] == 768
    minilm = schema.validate(RetrievalParams, {"encoder": "minilm"}, "t")
    assert st.with_overrides(minilm)["lr"] == 3e-05
    over = schema.validate(RetrievalParams, {"encoder_overrides": {"bert": {"epochs": 3}}}, "t")
    assert over["encoder_overrides"] == {"bert": {"epochs": 3.0}}


@pytest.mark.parametrize("variant", FIXED_VARIANTS)
def test_exact_search_matches_full_sort(variant):
    torch.manual_seed(1)
    q, d = torch.randn(9, 6), torch.randn(50, 6) * torch.rand(50, 1) * 4
    scores, idx = exact_search(q, d, variant, k=10, query_batch=4, doc_batch=7)
    want_s, want_i = pairwise(q, d, variant).topk(10, dim=1)
    torch.testing.assert_close(scores, want_s)
    assert torch.equal(idx, want_i)


def test_exact_search_exclude_and_metrics():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    d = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    scores, idx = exact_search(q, d, "cosine", k=3, exclude={0: [0]})
    run = to_run(["a", "b"], ["x", "y", "z"], scores, idx)
    assert "x" not in run["a"]
    m = evaluate_run({"a": {"y": 1}, "b": {"z": 1}}, run)
    assert m["ndcg10"] == pytest.approx(1.0) and m["mrr10"] == pytest.approx(1.0)
    m2 = evaluate_run({"a": {"z": 1}, "b": {"z": 1}}, run)
    assert m2["mrr10"] == pytest.approx((0.5 + 1.0) / 2)


def test_qa_metrics_and_prompt():
    assert exact_match("The Paris!", "paris") == 1.0
    assert token_f1("in paris france", "paris") == pytest.approx(2 * (1 / 3) * 1 / (1 / 3 + 1))
    assert token_f1("", "x") == 0.0
    assert rag.rag_prompt("q?", ["a", "b"]) == "question: q? context: [1] a [2] b answer:"


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


def test_paper_profile_on_fixture_data_and_a_missing_file():
    paper = expand(
        "retrieval",
        "paper",
        variants=["qnorm"],
        seeds=[0],
        overrides={
            "data_dir": str(FIXTURES),
            "test_sets": ["scifact", "trec_dl19", "biology", "musique", "msmarco_dev"],
        },
    )
    assert {p.params["encoder"] for p in paper} == {"contriever", "retromae", "e5", "bert"}
    assert all(p.params["threads"] == 16 and p.params["eval_batch_size"] == 256 for p in paper)
    with pytest.raises(ParamError, match="test set 'fiqa': missing"):
        expand(
            "retrieval",
            "paper",
            variants=["qnorm"],
            seeds=[0],
            overrides={"data_dir": str(FIXTURES), "test_sets": ["fiqa"]},
        )
    assert expand("retrieval", "paper", check_data=False), "a dry run needs no data"


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

    params = {"eval_batch_size": 8, "pool_k": 10, "irrelevant_pool": "top_k"}
    encoder = st.GridEncoder(FakeModel(), st.ENCODERS["minilm"], st.score_function("dnorm"))
    res = pipeline.evaluate(encoder, data, params)
    for r in res.values():
        assert 0 <= r["ndcg10"] <= 1 and set(r["cross_ndcg10"]) == set(FIXED_VARIANTS)
        assert r["cross_ndcg10"]["dnorm"] == pytest.approx(r["cross_ndcg10"]["cosine"])
    with st.ADAPTER.scored_with(encoder, "dot"):
        dot = pipeline.evaluate(encoder, data, params)
    assert dot["scifact"]["ndcg10"] == pytest.approx(res["scifact"]["cross_ndcg10"]["dot"])
    assert encoder.score is st.score_function("dnorm")
    trained = {"best_dev_ndcg10": 0.5, "history": [{}], "similarity": st.ADAPTER.similarity(encoder)}
    metrics = pipeline.flat_metrics(res, trained, {}, {})
    assert "ndcg10_mean" in metrics and "ndcg10_bright12" in metrics and "ndcg10_ood" in metrics
    metrics = pipeline.flat_metrics(res, {**trained, "similarity": LearnableSimilarity(0.2, 0.7)}, {}, {})
    assert metrics["gamma_q"] == pytest.approx(0.2) and metrics["gamma_d"] == pytest.approx(0.7)
    units = pipeline.units(res)
    assert units["ndcg10/biology"][0] == data["biology"].query_ids()


def test_retrieval_claims_on_fake_records():
    out = evaluate(fake_records(), load_claims(["retrieval"])).set_index(["id", "setting"])
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
def test_notebook_trains_in_two_processes(tmp_path):
    """train_processes=2 through the runner: torchrun starts two gloo processes on the CPU, the replicas
    (encoder and learn's gammas, which live outside DDP) end bit-identical, negatives are gathered, and the
    trained state comes back into the notebook, which evaluates and writes the record."""
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
