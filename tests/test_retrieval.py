"""Retrieval family: the shared contract (schema, notebook, report, claims, a tiny run), the scoring hook
equals the grid, exact search + pytrec_eval, data generation, loaders on fixtures, the paper profile's
data checks, the evaluation path on fixtures and a run that trains in two processes."""

from __future__ import annotations

import json
import os
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
from embsym_lib.records import DATA_ENV, OUTPUTS_ENV, PROJECT_ROOT
from embsym_lib.runtime import resolve_precision
from embsym_lib.similarity import FIXED_VARIANTS, VARIANTS, LearnableSimilarity, pairwise

FIXTURES = Path(__file__).parent / "fixtures" / "retrieval"
USER = "tests/fixtures/retrieval_user"  # users' own BEIR folders (relative: to the project root)
PLANETS = f"path:{USER}/planets"
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


@pytest.fixture(autouse=True)
def _one_pydoc_cache(monkeypatch):
    """This module's runs share one generated pydoc benchmark (the project's own sweep cache,
    outputs/data/retrieval, where `make reproduce` keeps it) instead of generating it again (~1.5 min)
    under each test's outputs folder; ``$EMBSYM_DATA`` wins where it is set."""
    if not os.environ.get(DATA_ENV):
        monkeypatch.setenv(DATA_ENV, str(PROJECT_ROOT / "outputs" / "data"))


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
        ({"train": "no"}, "parameter 'train'"),
        ({"test_sets": [f"path:{USER}/nope"]}, "retrieval_user/nope' does not exist"),
        ({"test_sets": [f"path:{USER}/no_qrels"]}, "missing qrels/test.tsv in"),
        ({"test_sets": [f"path:{USER}/bad_header"]}, "expected a BEIR qrels header"),
        ({"test_sets": [f"path:{USER}/bad_json"]}, "corpus.jsonl, line 1: not JSON"),
        ({"test_sets": ["path:"]}, "names no folder"),
        ({"test_sets": ["path:/data/scifact"]}, "would mix its results with the paper's 'scifact'"),
        ({"test_sets": ["path:/data/mean"]}, "would mix its results"),
        ({"test_sets": [PLANETS, "path:/elsewhere/planets"]}, "would both report as 'planets'"),
        ({"test_sets": [f"{USER}/planets"]}, f"write 'path:{USER}/planets'"),
    )
    unit_means = {
        "ndcg10/pydoc_scientific": "ndcg10_pydoc_scientific",
        "mrr10/pydoc_stdlib": "mrr10_pydoc_stdlib",
    }

    def expands_without_data(self, profile: str) -> bool:
        return profile != "paper"  # the paper profile reads data/retrieval (embsym data fetch)

    def fake_records(self) -> pd.DataFrame:
        return fake_records()

    def check_record(self, record, run_dir):
        metrics = record["metrics"]
        for key in ("ndcg10_mean", "ndcg10_id", "ndcg10_ood", "mrr10_mean", "recall100_mean", "rag_f1"):
            assert 0.0 <= metrics[key] <= 1.0
        assert 0.0 < metrics["gamma_q"] < 1.0
        assert record["extra"]["fisher"]["predicted"] in ("qnorm", "dnorm")
        assert set(record["curves"]) >= {"dev_ndcg10_own", "dev_ndcg10_cosine", "gamma_d"}
        # the offline profile's precision (auto), as it resolved on this machine
        precision = resolve_precision("auto", "cpu")
        assert record["params"]["precision"] == "auto"
        assert record["extra"]["encoder"] == {
            "name": "scratch",
            "checkpoint": "scratch",
            "pooling": "mean",
            "precision": precision,
        }
        assert record["extra"]["train_pairs"] == 32 and record["params"]["eval_batch_size"] == 64


class TestRetrievalHook(HookEqualsGrid):
    """The adapter's score, as sentence-transformers' loss calls it (``similarity_fct``)."""

    def scores_through_hook(self, variant, q, d):
        return st.retrieval_loss(None, st.retrieval_similarity(variant)).similarity_fct(q, d)


def fake_records() -> pd.DataFrame:
    """Fine-tuned runs of two encoders, and evaluation-only (PT) runs of minilm: a fixed model, the same
    at every seed, well below the fine-tuned ones."""
    rng = np.random.default_rng(0)
    rows = []
    for encoder, train in (("minilm", True), ("scratch", True), ("minilm", False)):
        for v in VARIANTS:
            for seed in (0, 1):
                base = {"cosine": 0.5, "dot": 0.52, "qnorm": 0.53, "dnorm": 0.5, "learn": 0.51}[v]
                base += rng.normal(0, 0.01) if train else -0.2
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
                    "train": train,
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
    return df.assign(
        encoder=[p["encoder"] for p in df["params"]],
        train=[p["train"] for p in df["params"]],
        **pd.DataFrame(list(df["metrics"])),
    )


def test_learn_gammas_are_loss_parameters():
    loss = st.retrieval_loss(torch.nn.Module(), st.retrieval_similarity("learn"), 20.0)
    names = {n for n, _ in loss.named_parameters()}
    assert {"similarity_fct.raw_gamma_q", "similarity_fct.raw_gamma_d"} <= names


@pytest.mark.parametrize("variant", ["cosine", "dot", "qnorm", "dnorm", "learn"])
def test_scale_matched_trains_at_one_effective_temperature_and_evaluates_as_the_variant(variant):
    from embsym_lib.similarity import ScaleMatched, make_similarity

    torch.manual_seed(0)
    q, d = 3 * torch.randn(8, 6, dtype=torch.float64), 0.5 * torch.randn(8, 6, dtype=torch.float64)
    hook = st.retrieval_loss(None, st.retrieval_similarity(variant, scale_matched=True)).similarity_fct
    assert isinstance(hook, ScaleMatched)
    plain = make_similarity(variant)
    # training: the plain variant's logits divided by a batch constant (so one ranking per query) ...
    ratio = hook(q, d) / plain(q, d)
    assert torch.allclose(ratio, ratio[0, 0].expand_as(ratio), rtol=1e-5)
    # ... which brings every variant's mean un-normalized factor to 1 (cosine's is 1 already)
    scaled = hook(10 * q, 10 * d) / hook(q, d)
    assert torch.allclose(scaled, torch.ones_like(scaled), rtol=1e-4) or variant == "learn"
    # evaluation ranks with the variant itself (a corpus chunk's batch mean must not enter a score)
    evaluated = st.grid_similarity(hook)
    assert not isinstance(evaluated, ScaleMatched) and evaluated.variant == variant
    if variant == "learn":  # γ are still the loss's parameters
        loss = st.retrieval_loss(torch.nn.Module(), hook, 20.0)
        assert {"similarity_fct.similarity.raw_gamma_q"} <= {n for n, _ in loss.named_parameters()}


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
    assert rag.rag_prompt("q?", ["a", "b"]) == (
        "Question: q?\nAnswer the question based on the following context:\n[1] a\n[2] b\nAnswer:"
    )


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


def test_the_paper_dev_set_is_ms_marco_qa_validation_without_any_test_query(monkeypatch):
    overrides = {
        "data_dir": str(FIXTURES),
        "test_sets": ["msmarco_dev", "scifact"],
        "dev_queries": 0,
        "dev_corpus": 0,
        "fisher_pairs": 2,
        "fisher_variants": ["qnorm"],
        "rag_sets": [],
    }
    params = expand("retrieval", "paper", variants=["qnorm"], seeds=[0], overrides=overrides)[0].params
    data = pipeline.prepare_data(params)
    dev = data["dev"]
    # "What reduces  fever" is msmarco_dev's q1 ("what reduces fever"): dropped; a row without a selected
    # passage has nothing to select on
    assert sorted(dev.queries.values()) == ["what do plants need", "why is the sky blue"]
    assert dev.notes["queries_dropped_as_test_queries"] == 1
    asked = {" ".join(t.casefold().split()) for test in data["tests"].values() for t in test.queries.values()}
    assert not asked & {" ".join(t.casefold().split()) for t in dev.queries.values()}
    assert dev.qrels["102"] == {"102:1": 1} and len(dev.corpus) == 7  # rows with a selected passage
    # the Fisher predictor's held-out pairs come from the same validation split, never from a test set
    assert data["heldout"] == [
        ("What reduces  fever", "Aspirin and ibuprofen reduce fever."),
        ("why is the sky blue", "The sky looks blue because of Rayleigh scattering."),
    ]
    # a distributed worker rebuilds exactly the notebook's dev set from its query ids
    worker = pipeline.prepare_training_data(params, dev_query_ids=dev.query_ids())["dev"]
    assert worker.queries == dev.queries and worker.corpus == dev.corpus and worker.qrels == dev.qrels
    with pytest.raises(ValueError, match="every query of the dev set"):
        rdata.without_test_queries(dev, {"same": dev})


def test_a_missing_validation_split_is_refused_before_any_compute(tmp_path):
    import shutil

    shutil.copytree(FIXTURES, tmp_path / "data")
    (tmp_path / "data" / "msmarco_qa" / "validation.jsonl").unlink()
    with pytest.raises(ParamError, match="training data .*missing .*validation"):
        expand(
            "retrieval",
            "paper",
            variants=["qnorm"],
            seeds=[0],
            overrides={"data_dir": str(tmp_path / "data"), "test_sets": ["scifact"]},
        )


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
    assert {p.params["encoder"] for p in paper} == {"contriever", "retromae", "e5", "bert", "scratch"}
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


def test_cqadupstack_is_searched_forum_by_forum_and_averaged_as_beir_does():
    import zlib

    class TextHashModel:  # one fixed vector per text, whatever else is encoded with it
        def encode(self, texts, **kw):
            rows = [
                torch.randn(4, generator=torch.Generator().manual_seed(zlib.crc32(t.encode()))) for t in texts
            ]
            return torch.stack(rows) * 3

    cqa = pipeline.subsample(rdata.load_test_set("cqadupstack", FIXTURES), 1, 0)
    assert [p.name for p in cqa.parts] == ["android", "english"] and len(cqa.queries) == 2
    params = {"eval_batch_size": 8, "pool_k": 10, "irrelevant_pool": "top_k"}
    encoder = st.GridEncoder(TextHashModel(), st.ENCODERS["minilm"], st.score_function("qnorm"))
    (res,) = pipeline.evaluate(encoder, {"cqadupstack": cqa}, params).values()
    sim = st.ADAPTER.similarity(encoder)
    alone = {p.name: pipeline.evaluate_set(encoder, sim, p, params) for p in cqa.parts}
    assert res["parts"] == {f: r["ndcg10"] for f, r in alone.items()}
    assert res["ndcg10"] == pytest.approx(np.mean([r["ndcg10"] for r in alone.values()]))
    assert res["cross_ndcg10"]["dot"] == pytest.approx(
        np.mean([r["cross_ndcg10"]["dot"] for r in alone.values()])
    )
    assert set(res["per_query"]) == {"android/qa", "english/qa"} and res["group"] == "beir14"
    assert set(pipeline.units({"cqadupstack": res})["ndcg10/cqadupstack"][0]) == {"android/qa", "english/qa"}


def test_retrieval_claims_on_fake_records():
    out = evaluate(fake_records(), load_claims(["retrieval"])).set_index(["id", "setting"])
    minilm = "encoder=minilm"  # a claim that does not name train sees the fine-tuned runs only
    assert out.loc[("retrieval.rag.qnorm_beats_cosine", minilm), "reason"].startswith(
        "the offline reader is a randomly initialised tiny T5"
    )
    assert (
        "no retrieval runs with encoder=contriever"
        in out.loc["retrieval.contriever.qnorm_beats_cosine.id", "reason"].iloc[0]
    )
    # four test sets: no correlation across them can reach significance, and the row says so
    corr = out.loc[("retrieval.cohen_d_tracks_relative_gain", minilm)]
    assert corr["verdict"] == "inconclusive" and "cannot reach significance" in corr["reason"]
    # the PT claim pairs each fine-tuned seed with the evaluation-only runs of the same variant
    pt = out.loc[("retrieval.finetuning_beats_pretrained", "encoder=minilm")]
    assert pt["verdict"] == "supported" and pt["n_seeds"] == 2
    assert len(pt["contrasts"]) == len(VARIANTS) and pt["baseline"] < 0.4
    # the evaluation-only runs enter only the claims that name train: no other row is about them
    assert not any("train" in setting for claim_id, setting in out.index if claim_id != pt.name[0])


def test_offline_profile_runs_pt_once_for_every_variant():
    """PT is one fixed model: one run per variant (seed 0), compared with every fine-tuned seed."""
    points = expand("retrieval", "offline", check_data=False)
    pt = [p for p in points if not p.params["train"]]
    fine_tuned = [p for p in points if p.params["train"]]
    assert sorted((p.params["variant"], p.params["seed"]) for p in pt) == sorted((v, 0) for v in VARIANTS)
    assert all(
        side.fixed for c in _claim("retrieval.finetuning_beats_pretrained").contrasts for side in [c.b]
    )
    assert {p.params["encoder"] for p in pt} == {"minilm"}
    plain = [p for p in fine_tuned if not p.params["scale_matched"]]
    assert {p.params["encoder"] for p in plain} == {"minilm", "scratch"} and len(plain) == 33
    fourth = sorted(p.params["variant"] for p in plain if p.params["seed"] == 3)  # the rule's contrasts
    assert fourth == ["cosine", "dnorm", "qnorm"] and {
        p.params["encoder"] for p in plain if p.params["seed"] == 3
    } == {"minilm"}
    matched = [p for p in fine_tuned if p.params["scale_matched"]]
    assert {p.params["encoder"] for p in matched} == {"scratch"} and len(matched) == 15
    # --set train=false restricts every block to evaluation-only runs
    only = expand("retrieval", "offline", variants=["dot"], seeds=[0], overrides={"train": False})
    assert sorted(p.params["encoder"] for p in only) == ["minilm", "scratch"]  # seed 3: no dot run
    assert not any(p.params["train"] for p in only)


# ----------------------------------------------------------------------------------------------
# users' own BEIR folders (test_sets: path:<folder>) and evaluation-only runs


def test_user_folder_loads_with_notes_and_its_own_group():
    info = rdata.resolve_test_set(PLANETS)
    assert (info.name, info.group, info.in_domain, info.user) == ("planets", "planets", None, True)
    assert Path(info.path).is_absolute()  # relative to the project root
    data = rdata.load_test_set(PLANETS, "/unused")
    assert data.sizes() == {"queries": 12, "corpus": 24, "qrels": 16}
    assert "q_unjudged" not in data.queries and data.qrels["q9"] == {"doc9": 1, "other8": 1}
    assert data.notes == {
        "folder": info.path,
        "judged_queries_without_text": 1,
        "judgments_of_missing_documents": 1,
        "queries_without_a_relevant_document": 0,
    }
    small = pipeline.subsample(data, 3, 10)
    assert small.notes == data.notes and len(small.corpus) == 10
    assert pipeline.user_data_report({"planets": small})["planets"]["evaluated"] == small.sizes()


def test_user_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="no query of queries.jsonl has a relevant document"):
        rdata.load_test_set(f"path:{USER}/no_judged_query", "/unused")
    for folder, message in (
        ("bad_header", "expected a BEIR qrels header"),
        ("bad_json", "line 1: not JSON"),
        ("no_qrels", "missing qrels/test.tsv"),
    ):
        with pytest.raises(ValueError, match=message):
            beir.check_beir_folder(FIXTURES.parent / "retrieval_user" / folder)
    # what a cheap check cannot see, loading reports with the line
    bad = tmp_path / "broken"
    beir.write_beir(bad, {"d1": {"text": "x"}}, {"q1": "y"}, {"q1": {"d1": 1}})
    (bad / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\tmany\n")
    with pytest.raises(ValueError, match="line 2: score 'many' is not a number"):
        rdata.load_test_set(f"path:{bad}", "/unused")
    (bad / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    (bad / "queries.jsonl").write_text('{"_id": "q1", "text": "y"}\n{"_id": "q2"}\n')
    with pytest.raises(ValueError, match="queries.jsonl, record 2: expected an object with '_id', 'text'"):
        rdata.load_test_set(f"path:{bad}", "/unused")
    with pytest.raises(ValueError, match="would both report as 'planets'"):
        rdata.check_test_sets([PLANETS, "path:planets"])


def test_user_sets_stay_out_of_the_paper_means():
    def result(group, ndcg, in_domain=False, user=False):
        r = {"group": group, "in_domain": in_domain, "ndcg10": ndcg, "mrr10": ndcg, "recall100": ndcg}
        r.update(cross_ndcg10=dict.fromkeys(FIXED_VARIANTS, ndcg), cohen_d=ndcg, query_norm_cv=ndcg)
        return {**r, **({"user": True, "in_domain": None} if user else {})}

    paper = {"pydoc_scientific": result("in_domain", 0.6, True), "pydoc_web": result("ood", 0.2)}
    mine = {"planets": result("planets", 0.9, user=True), "moons": result("moons", 0.5, user=True)}
    trained = {"best_dev_ndcg10": 0.5, "similarity": "cosine"}
    alone = pipeline.flat_metrics(paper, trained, {}, {})
    both = pipeline.flat_metrics({**paper, **mine}, trained, {}, {})
    for key in ("ndcg10_mean", "ndcg10_id", "ndcg10_ood", "xeval_ndcg10_dot", "cohen_d_mean"):
        assert both[key] == pytest.approx(alone[key]), key
    assert both["ndcg10_planets"] == 0.9 and both["ndcg10_user"] == pytest.approx(0.7)
    assert "ndcg10_user" not in alone
    only = pipeline.flat_metrics(mine, {**trained, "best_dev_ndcg10": None}, {}, {})
    assert only["ndcg10_mean"] == pytest.approx(0.7) and "ndcg10_id" not in only
    assert "dev_ndcg10_best" not in only  # an evaluation-only run has no dev evaluation
    assert "paper-comparable" in pipeline.aggregate_note(mine)
    assert "leave" not in pipeline.aggregate_note(paper)


def test_evaluation_only_reads_no_pydoc_for_users_folders_alone(monkeypatch):
    def no_pydoc(*a, **k):
        raise AssertionError("the pydoc benchmark was generated")

    monkeypatch.setattr(rdata, "pydoc_dir", no_pydoc)
    params = schema.validate(
        RetrievalParams,
        {"train": False, "test_sets": [PLANETS], "rag_sets": [], "variant": "qnorm"},
        "t",
    )
    data = pipeline.prepare_data(params)
    assert data["root"] is None and data["train"] == [] and data["dev"] is None and data["heldout"] == []
    assert list(data["tests"]) == ["planets"]
    # evaluation only: no side predictor either (nothing trains); a trained run reads its data
    assert not pipeline.needs_data_root({**params, "variant": "cosine"})
    assert not pipeline.needs_data_root({**params, "variant": "dot"})
    assert pipeline.needs_data_root({**params, "train": True})


def test_pydoc_cache_lives_in_the_generated_data_dir(tmp_path, monkeypatch):
    made = []

    def fake_generate(folder, sizes):
        made.append(folder)
        Path(folder).mkdir(parents=True)
        return {"sets": {}}

    monkeypatch.setattr(rdata, "generate_pydoc", fake_generate)
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "data"))
    first = rdata.pydoc_dir()
    assert first.parent == tmp_path / "data" / "retrieval" and (first / "manifest.json").exists()
    assert rdata.pydoc_dir() == first and len(made) == 1  # reused
    monkeypatch.delenv(DATA_ENV)
    monkeypatch.setenv(OUTPUTS_ENV, str(tmp_path / "sweep"))
    assert rdata.pydoc_dir().parent == tmp_path / "sweep" / "data" / "retrieval"


def test_table1_layout_shows_pt_beside_fine_tuned_and_users_folders_apart():
    from embsym_lib.families.retrieval import tables

    df = fake_records()
    table = tables.ours_table(df)
    minilm = table[(table["encoder"] == "minilm") & (table["benchmark"] == "mean")]
    assert list(minilm["stage"]) == [tables.PT, tables.FT]
    assert minilm.iloc[0]["cosine"] == "30.00 ± 0.00"  # one fixed model: no spread over seeds
    assert set(table[table["encoder"] == "scratch"]["stage"]) == {tables.FT}
    assert "stage" not in tables.ours_table(df[df["train"]]).columns  # no PT runs: the layout as before
    # the fixed-scale ablation's runs are an arm of their own, never pooled with the plain scratch runs
    matched = df[df["encoder"] == "scratch"].copy()
    matched["params"] = [{**p, "scale_matched": True} for p in matched["params"]]
    matched[[c for c in matched.columns if c.startswith("ndcg10")]] = 0.0
    both = pd.concat([df, matched], ignore_index=True).drop(columns="encoder")
    table1 = tables.sections(both)[0].table
    arms = table1[table1["benchmark"] == "mean"].set_index(["encoder", "stage"])
    assert arms.loc[("scratch (scale-matched)", tables.FT), "cosine"] == "0.00 ± 0.00"
    assert arms.loc[("scratch", tables.FT), "cosine"] != "0.00 ± 0.00"
    # a user's folder: its own row, last, marked; the means do not include it
    with_user = df.copy()
    with_user["ndcg10_planets"] = 0.9
    with_user["extra"] = [
        {**e, "datasets": {**e["datasets"], "planets": {"group": "planets", "user": True}}}
        for e in with_user["extra"]
    ]
    rows = tables.ours_table(with_user)
    assert rows[rows["encoder"] == "minilm"]["benchmark"].iloc[-1] == "planets (your folder)"
    # the sections about training leave the evaluation-only runs out
    items = tables.sections(df)
    cross = next(i for i in items if "Cross-evaluation, minilm" in i.text)
    assert cross.table.loc["cosine", "cosine"] == pytest.approx(
        100
        * df[(df["encoder"] == "minilm") & df["train"] & (df["variant"] == "cosine")][
            "xeval_ndcg10_cosine"
        ].mean(),
        abs=0.01,  # the section rounds to two decimals
    )


def test_cli_refuses_a_bad_user_folder_with_exit_code_2(tmp_path, capsys):
    from embsym_lib import cli

    argv = ["run", "retrieval", "--variants", "cosine", "--seeds", "0", "--outputs", str(tmp_path)]
    assert cli.main([*argv, "--set", f"test_sets=[path:{USER}/bad_header]"]) == 2
    assert "expected a BEIR qrels header" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing ran


@pytest.mark.slow
def test_cli_evaluates_a_user_folder_without_training(tmp_path, monkeypatch):
    """`embsym run retrieval --set train=false --set test_sets=[path:<folder>]`: the pretrained MiniLM
    scored on the user's BEIR folder under two variants; no pydoc benchmark is generated."""
    from embsym_lib import cli

    monkeypatch.delenv(DATA_ENV)  # generated data would go under tmp_path/data
    sets = ["train=false", "encoder=minilm", f"test_sets=[{PLANETS}]", "rag_sets=[]", "fisher_pairs=0"]
    argv = ["run", "retrieval", "--variants", "cosine", "dot", "--seeds", "0", "--outputs", str(tmp_path)]
    assert cli.main([*argv, *(a for s in sets for a in ("--set", s))]) == 0
    records = {
        r["variant"]: r for r in (json.loads(p.read_text()) for p in tmp_path.glob("retrieval/*/record.json"))
    }
    assert set(records) == {"cosine", "dot"}
    assert not (tmp_path / "data").exists()  # nothing generated
    for record in records.values():
        metrics, extra = record["metrics"], record["extra"]
        assert record["status"] == "complete" and record["params"]["train"] is False
        assert extra["stage"] == "pretrained (evaluation only)" and extra["total_steps"] == 0
        assert 0.0 <= metrics["ndcg10_planets"] <= 1.0 and metrics["ndcg10_mean"] == metrics["ndcg10_planets"]
        assert "dev_ndcg10_best" not in metrics and record["curves"] == {}
        assert extra["datasets"]["planets"]["group"] == "planets" and extra["datasets"]["planets"]["user"]
        assert extra["user_data"]["planets"]["judgments_of_missing_documents"] == 1
        assert record["units"] == {f"{m}/planets": 12 for m in ("ndcg10", "mrr10", "recall100")}
    # one encoder, two scorings: each run's own metric is the other's cross-evaluation entry
    cosine, dot = records["cosine"]["metrics"], records["dot"]["metrics"]
    assert dot["ndcg10_planets"] == pytest.approx(cosine["xeval_ndcg10_dot"])


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
            "scale_matched": False,
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
    # the profile's evaluation-only block (encoder set to scratch by the override) trains nothing
    (result,) = run_grid([p for p in points if p.params["train"]], outputs_dir=tmp_path)
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


def _claim(claim_id: str):
    from embsym_lib.claims import load_claims

    return next(c for c in load_claims() if c.id == claim_id)


def test_rag_table_puts_the_papers_table_4_beside_ours():
    from embsym_lib.families.retrieval.rag import rag_table

    df = pd.DataFrame(
        [
            {
                "variant": v,
                "seed": s,
                "params": {"encoder": "contriever", "reader": "google/flan-t5-large"},
                "rag_em_nq": 0.2 + 0.01 * s,
                "rag_f1_nq": 0.3,
            }
            for v in VARIANTS
            for s in (0, 1)
        ]
    )
    table = rag_table(df)
    paper = table.loc["paper (Contriever, Flan-T5-Large)"]
    assert paper.loc[("nq", "em"), "qnorm"] == "26.1" and len(paper) == 6
    ours = table.loc["ours (contriever, reader google/flan-t5-large)"]
    assert (
        ours.loc[("nq", "em"), "cosine"].startswith("20.5") and ours.loc[("nq", "f1"), "dot"] == "30.0 ± 0.0"
    )
    assert set(table.loc["ours"].index.get_level_values("set")) == {"hotpotqa", "triviaqa"}
