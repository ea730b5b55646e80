"""Knowledge-graph family: the PyKEEN scoring hook, the loss, the loaders (packaged graphs, fixture TSVs, a
pre-filled PyKEEN cache), training and the family's diagnostics; the shared contract (tests/cases.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from cases import FamilyContract, HookEqualsGrid
from helpers.fake_records import frame

from embsym_lib.claims import evaluate, load_claims
from embsym_lib.families.kg import pipeline, spec
from embsym_lib.params import expand
from embsym_lib.schema import defaults
from embsym_lib.similarity import FIXED_VARIANTS, VARIANTS, LearnableSimilarity, paired, pairwise

pykeen_adapter = pytest.importorskip("embsym_lib.adapters.pykeen")
ADAPTER = pykeen_adapter.ADAPTER

FB_FIXTURE = "path:tests/fixtures/kg/fb15k237_sample"
WN_FIXTURE = "path:tests/fixtures/kg/wn18rr_sample"
UNSEEN_FIXTURE = "path:tests/fixtures/kg/unseen"
MALFORMED_FIXTURE = "path:tests/fixtures/kg/malformed"
ROOT = Path(__file__).resolve().parents[1]


def _params(**overrides):
    """Every parameter at its schema default, on the FB15k-237 fixture, small."""
    params = {**defaults(spec.KgParams), "variant": "dot", "dataset": FB_FIXTURE}
    params.update({"embedding_dim": 8, "epochs": 2, "batch_size": 32, "lr": 0.05, "eval_batch_size": 64})
    params.update({"magnitude_queries": 100, **overrides})
    return params


def _similarity(variant):
    if variant == "learn":
        return LearnableSimilarity(0.3, 0.8)
    return None


# --- the scoring hook ---------------------------------------------------------------------------------


@pytest.mark.parametrize("composition", spec.COMPOSITIONS)
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
    assert set(pykeen_adapter.COMPOSITIONS) == set(spec.COMPOSITIONS)


class _ModelScoresLikeTheGrid(HookEqualsGrid):
    """PyKEEN's ``ERModel.score_t`` for (h, r) queries: a tiny model whose entities are the candidates ``d``
    followed by one entity per query ``q``, and whose relations compose as the identity (distmult: all
    ones; complex: 1 + 0i), so that compose(h, r) = q exactly and every score goes through
    ``GridInteraction`` as in training and evaluation."""

    composition: str

    def scores_through_hook(self, variant, q, d):
        from pykeen.triples import CoreTriplesFactory

        n, m = q.shape[0], d.shape[0]
        training = CoreTriplesFactory(
            mapped_triples=torch.tensor([[m, 0, 0]]),
            num_entities=m + n,
            num_relations=1,
            create_inverse_triples=True,
        )
        params = _params(variant=variant, composition=self.composition, embedding_dim=q.shape[1])
        model = ADAPTER.build_model(params, training=training)
        identity = torch.ones(q.shape[1])
        if self.composition == "complex":
            identity[q.shape[1] // 2 :] = 0.0
        with torch.no_grad():
            model.entity_representations[0]._embeddings.weight.copy_(torch.cat([d, q]))
            model.relation_representations[0]._embeddings.weight.copy_(identity.expand(2, -1))
            hr = torch.stack([torch.arange(m, m + n), torch.zeros(n, dtype=torch.long)], dim=-1)
            return model.score_t(hr, tails=torch.arange(m))


class TestModelScoresLikeTheGridDistmult(_ModelScoresLikeTheGrid):
    composition = "distmult"


class TestModelScoresLikeTheGridComplex(_ModelScoresLikeTheGrid):
    composition = "complex"


@pytest.fixture(scope="module")
def fixture_dataset():
    return pipeline.load_dataset(FB_FIXTURE)


@pytest.mark.parametrize("variant", FIXED_VARIANTS)
def test_model_scores_go_through_the_grid(fixture_dataset, variant):
    model = ADAPTER.build_model(_params(variant=variant), training=fixture_dataset.training)
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


# --- loaders ------------------------------------------------------------------------------------------


def test_packaged_data_is_deterministic_and_has_the_documented_sizes():
    sizes = {"nations": 14, "kinships": 104, "umls": 135}
    for name, entities in sizes.items():
        a, b = pipeline.load_dataset(name), pipeline.load_dataset(name)
        assert a.training.num_entities == entities
        assert a.training.create_inverse_triples
        assert torch.equal(a.training.mapped_triples, b.training.mapped_triples)
        assert torch.equal(a.testing.mapped_triples, b.testing.mapped_triples)


def test_paper_dataset_names_resolve_to_pykeen_classes_without_download():
    from pykeen.datasets import WN18RR, FB15k237, Nations, PathDataset

    assert pipeline.dataset_class("fb15k237") is FB15k237
    assert pipeline.dataset_class("wn18rr") is WN18RR
    assert pipeline.dataset_class("nations") is Nations
    # The packaged datasets are PathDatasets: a `path:` directory loads through the same class.
    assert issubclass(Nations, PathDataset)


@pytest.mark.parametrize(
    "name, entity, relation",
    [(FB_FIXTURE, "/m/027rn", "/film/film/genre"), (WN_FIXTURE, "00260881", "_hypernym")],
)
def test_fixture_tsv_directories_load_through_pathdataset(name, entity, relation):
    from pykeen.datasets import PathDataset

    ds = pipeline.load_dataset(name)
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
    (FB15k-237: FB15K-237.2.zip holding Release/{train,valid,test}.txt; WN18RR: the extracted .txt files).
    Before it is filled, the paper profile stops with one clear error before any compute."""
    import zipfile

    from embsym_lib.data.sources import SOURCES
    from embsym_lib.fetch import present
    from embsym_lib.params import ParamError

    _forbid_downloads(monkeypatch)
    cache = tmp_path / "kg"  # where `embsym data fetch kg --root <tmp_path>` puts it
    fb_dir = cache / "fb15k237"
    fb_dir.mkdir(parents=True)  # PyKEEN makes a dataset's folder before it downloads: not the data
    with pytest.raises(
        ParamError,
        match=r"parameter 'cache_root': fb15k237 is not in the PyKEEN cache .*FB15K-237\.2\.zip.*"
        r"`embsym data fetch kg` downloads it there",
    ):
        expand("kg", "paper", overrides={"cache_root": str(cache)})
    assert not present(SOURCES[("kg", "fb15k237")], tmp_path)

    fixtures = Path(__file__).parent / "fixtures" / "kg"
    with zipfile.ZipFile(fb_dir / "FB15K-237.2.zip", "w") as zf:
        for split in ("train", "valid", "test"):
            zf.write(fixtures / "fb15k237_sample" / f"{split}.tsv", f"Release/{split}.txt")
    wn_dir = cache / "wn18rr"
    wn_dir.mkdir()
    for split in ("train", "valid", "test"):
        (wn_dir / f"{split}.txt").write_bytes((fixtures / "wn18rr_sample" / f"{split}.tsv").read_bytes())

    for name, sample, entity in (
        ("fb15k237", "fb15k237_sample", "/m/027rn"),
        ("wn18rr", "wn18rr_sample", "00260881"),
    ):
        assert present(SOURCES[("kg", name)], tmp_path)  # `embsym data fetch kg` would do nothing
        ds = pipeline.load_data(_params(dataset=name, cache_root=str(cache)))
        assert isinstance(ds, pipeline.dataset_class(name))
        assert ds.training.create_inverse_triples
        assert entity in ds.training.entity_to_id
        expected = sum(1 for _ in open(fixtures / sample / "train.tsv"))
        assert ds.training.num_triples == expected
        assert ds.testing.num_triples > 0 and ds.validation.num_triples > 0
    # filled, the paper profile validates against it
    assert len(expand("kg", "paper", overrides={"cache_root": str(cache)})) == 60


def test_profiles_sweep_the_documented_datasets():
    offline = expand("kg", "offline")
    assert {p.params["dataset"] for p in offline} == {"nations", "kinships", "umls"}
    assert len(offline) == 5 * 3 * 3
    paper = expand(
        "kg", "paper", check_data=False
    )  # the data: test_paper_loaders_read_a_prefilled_pykeen_cache
    assert {(p.params["dataset"], p.params["composition"]) for p in paper} == {
        (d, c) for d in ("fb15k237", "wn18rr") for c in ("distmult", "complex")
    }
    assert expand("kg", "offline", variants=["dot"], seeds=[0], overrides={"dataset": WN_FIXTURE})


# --- training, cross-evaluation, diagnostics ------------------------------------------------------------


def test_training_on_a_fixture_registers_and_trains_learn_gammas(fixture_dataset):
    fresh = ADAPTER.build_model(_params(variant="learn"), training=fixture_dataset.training)
    assert ADAPTER.similarity(fresh).gammas() == pytest.approx({"gamma_q": 0.5, "gamma_d": 0.5})
    params = _params(variant="learn", epochs=3)
    model, result, evaluator = pipeline.train(params, fixture_dataset)
    # pipeline() builds its optimizer from model.get_grad_params(); the γ must be among them.
    grad_params = {id(p) for p in model.get_grad_params()}
    similarity = model.interaction.similarity
    assert id(similarity.raw_gamma_q) in grad_params and id(similarity.raw_gamma_d) in grad_params
    g = pipeline.gammas(model)
    assert g["gamma_q"] != pytest.approx(0.5, abs=1e-6) or g["gamma_d"] != pytest.approx(0.5, abs=1e-6)
    metrics = pipeline.evaluate(result)
    assert all(0.0 <= metrics[m] <= 1.0 for m in spec.METRICS)
    assert metrics["hits_at_1"] <= metrics["hits_at_3"] <= metrics["hits_at_10"]
    assert len(pipeline.loss_curve(result)["train_loss"]["y"]) == 3
    # one unit per test triple and side; their mean is the pipeline's own MRR
    ids, rr = pipeline.units(evaluator, fixture_dataset)["mrr"]
    assert len(ids) == len(set(ids)) == 2 * fixture_dataset.testing.num_triples
    assert np.mean(rr) == pytest.approx(metrics["mrr"], rel=1e-6)


def test_cross_evaluation_and_diagnostics(fixture_dataset):
    params = _params(variant="dot", epochs=2, composition="complex")
    model, _, _ = pipeline.train(params, fixture_dataset)
    assert model.interaction.composition == "complex"
    cross = pipeline.cross_evaluate(model, fixture_dataset, params)
    assert set(cross) == set(FIXED_VARIANTS)
    # Per-query ranking: qnorm ranks like dot, dnorm like cosine.
    assert cross["qnorm"] == pytest.approx(cross["dot"], abs=1e-6)
    assert cross["dnorm"] == pytest.approx(cross["cosine"], abs=1e-6)
    assert model.interaction.variant == "dot"  # restored after re-scoring
    diag = pipeline.norm_diagnostics(model, fixture_dataset, params)
    assert diag["entity_norm_cv"] > 0 and diag["query_norm_cv"] > 0
    assert -1.0 <= diag["norm_answer_freq_spearman"] <= 1.0
    counter = pipeline.norm_and_answer_frequency(model, fixture_dataset)
    assert len(counter) == fixture_dataset.training.num_entities
    queries, entities = ADAPTER.embed(model, fixture_dataset.training.mapped_triples, params)
    assert queries.shape == (2 * fixture_dataset.training.num_triples, 8)
    assert entities.shape == (fixture_dataset.training.num_entities, 8)


def test_candidate_frequency_counts_both_directions():
    triples = torch.tensor([[0, 0, 1], [2, 0, 1], [1, 1, 3]])
    assert pykeen_adapter.candidate_frequency(triples, 4, both_directions=False).tolist() == [0, 2, 0, 1]
    assert pykeen_adapter.candidate_frequency(triples, 4, both_directions=True).tolist() == [1, 3, 1, 1]


def test_dataset_paths_are_checked_only_with_the_data():
    from embsym_lib.schema import validate

    assert validate(spec.KgParams, {"dataset": "path:nowhere"}, "kg", check_data=False)["dataset"]


# --- a user's folder: malformed lines refused, what PyKEEN drops counted ---------------------------------

# tests/fixtures/kg/unseen: valid.tsv has 25 triples, 4 with an entity or relation never seen in train.tsv
# (lines 7, 14, 15, 24) and one repeat of a kept triple; test.tsv has 23, 3 of them unseen (lines 6, 16,
# 23), and a blank last line.
UNSEEN_EXPECTED = {
    "file_triples": {"train": 160, "valid": 25, "test": 23},
    "dropped": {"valid": 4, "test": 3},
    "dropped_unseen": {"valid": {"entity": 3, "relation": 1}, "test": {"entity": 3, "relation": 1}},
    "duplicates": {"train": 0, "valid": 1, "test": 0},
}


def test_unseen_triples_are_counted_exactly_against_pykeens_factories(caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="pykeen"):
        ds = pipeline.load_dataset(UNSEEN_FIXTURE)
    assert not [r for r in caplog.records if "filtered out" in r.getMessage()]  # our report replaces them
    summary = pipeline.describe_data(ds, UNSEEN_FIXTURE)
    for key, value in UNSEEN_EXPECTED.items():
        assert summary[key] == value, key
    # what the run uses = the file's triples - dropped - repeats, as PyKEEN mapped them
    assert (summary["train_triples"], summary["valid_triples"], summary["test_triples"]) == (160, 20, 20)
    assert ds.validation.num_triples == 25 - 4 - 1 and ds.testing.num_triples == 23 - 3
    assert [e["line"] for e in summary["dropped_examples"]["valid"]] == [7, 14, 15, 24]
    assert summary["dropped_examples"]["test"][0] == {
        "line": 6,
        "triple": ["y_new1", "advises", "y_new2"],
        "unseen": ["head", "tail"],
    }
    lines = pipeline.data_log(UNSEEN_FIXTURE, summary)
    assert (
        "valid: 4 of 25 triples dropped" in lines[1]
        and "line 15 (e01, mentors, e02: relation unseen)" in lines[1]
    )
    assert (
        lines[2].startswith("test: 3 of 23 triples dropped")
        and lines[3] == "valid: 1 repeated triple, kept once by PyKEEN"
    )
    table = pipeline.data_table(summary)
    assert table.loc["valid"].tolist() == [25, 4, 1, 20]
    # the packaged datasets keep their summary (no file report)
    assert set(pipeline.describe_data(pipeline.load_dataset("nations"), "nations")) == set(pipeline.SIZES)


def test_a_malformed_folder_fails_validation_with_file_and_line_but_not_a_dry_run():
    from embsym_lib.schema import ParamError, validate

    with pytest.raises(
        ParamError, match=r"parameter 'dataset': tests/fixtures/kg/malformed/valid.tsv line 4 has 2"
    ):
        validate(spec.KgParams, {"dataset": MALFORMED_FIXTURE}, "kg")
    assert validate(spec.KgParams, {"dataset": MALFORMED_FIXTURE}, "kg", check_data=False)["dataset"]
    assert validate(spec.KgParams, {"dataset": UNSEEN_FIXTURE}, "kg")["dataset"] == UNSEEN_FIXTURE


GOOD = "a\tr\tb\nb\tr\tc\nc\ts\ta\n"


def _folder(tmp_path, train=GOOD, valid="a\tr\tc\n", test="b\ts\ta\n") -> Path:
    for name, text in (("train.tsv", train), ("valid.tsv", valid), ("test.tsv", test)):
        (tmp_path / name).write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return tmp_path


@pytest.mark.parametrize(
    "valid, message",
    [
        ("a\tr\tc\nb\tr\n", "valid.tsv line 2 has 2 tab-separated fields, expected 3"),
        ("a\tr\tc\tx\n", "line 1 has 4 tab-separated fields"),
        ("a\tr\tc\t\n", "line 1 has 4 tab-separated fields"),  # a trailing tab
        ("a\tr\tc\n\t\t\n", "line 2 has an empty head"),  # PyKEEN would read ('', '', '')
        ("a\t\tc\n", "line 1 has an empty relation"),
        ("a\tr\tc \n", "line 1 has whitespace around its tail 'c '"),
        (" a\tr\tc\n", "line 1 has whitespace around its head"),
        ("head\trelation\ttail\na\tr\tc\n", "line 1 looks like a header line"),
        ("\nSubject\tPredicate\tObject\na\tr\tc\n", "line 2 looks like a header line"),
        ("# my triples\na\tr\tc\n", "line 1 starts with '#' \\(comments are not supported\\)"),
        ('"a"\tr\tc\n', "line 1 has a head starting with"),
        (b"a\tr\tc\nb\xe9\tr\tc\n", "line 2 is not UTF-8 text"),
        ("", "valid.tsv has no triples"),
        ("\n  \n", "valid.tsv has no triples"),
    ],
)
def test_malformed_lines_are_refused_with_file_and_line(tmp_path, valid, message):
    from embsym_lib.schema import ParamError, validate

    folder = _folder(tmp_path, valid=valid)
    with pytest.raises(ParamError, match=message) as err:
        validate(spec.KgParams, {"dataset": f"path:{folder}"}, "kg")
    assert str(err.value).startswith(f"kg: parameter 'dataset': {folder / 'valid.tsv'} ")


def test_a_test_split_pykeen_would_empty_is_refused(tmp_path):
    from embsym_lib.schema import ParamError, validate

    folder = _folder(tmp_path, test="a\tr\tz\nq\tr\ta\n")
    with pytest.raises(
        ParamError, match="none of the 2 triples of .*test.tsv has its head, relation and tail"
    ):
        validate(spec.KgParams, {"dataset": f"path:{folder}"}, "kg")


def test_accepted_variations_read_as_pykeen_reads_them(tmp_path):
    """Blank lines, CRLF line ends, a byte-order mark, no final newline, a header-like line after line 1, a
    quote inside a field and a valid split PyKEEN empties: validated, and PyKEEN's mapping agrees."""
    from embsym_lib.schema import validate

    train = '\ufeffa\tr\tb\r\n\r\nb\tr\tc\r\n   \r\nc\ts\ta\r\nx"y\tr\ta\r\nb\tr\tc'
    folder = _folder(tmp_path, train=train, valid="head\tr\tz\n", test="b\ts\ta\nh\tr\tt\n")
    name = f"path:{folder}"
    assert validate(spec.KgParams, {"dataset": name}, "kg")["dataset"] == name
    ds = pipeline.load_dataset(name)
    assert 'x"y' in ds.training.entity_to_id and "\ufeffa" not in ds.training.entity_to_id
    summary = pipeline.describe_data(ds, name)  # raises if PyKEEN mapped other triples than counted
    assert summary["file_triples"] == {"train": 5, "valid": 1, "test": 2}
    assert summary["duplicates"]["train"] == 1 and summary["train_triples"] == 4
    assert summary["dropped"] == {"valid": 1, "test": 1} and summary["valid_triples"] == 0
    assert summary["dropped_examples"]["valid"][0]["unseen"] == ["head", "tail"]


@pytest.mark.slow
def test_a_user_folder_end_to_end_through_the_cli(tmp_path):
    """`embsym run kg --set dataset=path:...`: the record holds the drop counts, the notebook prints them,
    and PyKEEN's own drop warnings are gone."""
    import json
    import subprocess
    import sys

    outputs = tmp_path / "kg_userdata"
    cmd = [
        str(Path(sys.executable).parent / "embsym"),
        *("run", "kg", "--variants", "dot", "--seeds", "0", "--outputs", str(outputs)),
        *("--set", f"dataset={UNSEEN_FIXTURE}", "--set", "epochs=2", "--set", "embedding_dim=8"),
        *("--set", "batch_size=32", "--set", "eval_batch_size=64"),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (record_path,) = outputs.glob("kg/*/record.json")
    record = json.loads(record_path.read_text())
    assert record["status"] == "complete"
    data = record["extra"]["data"]
    for key, value in UNSEEN_EXPECTED.items():
        assert data[key] == value, key
    assert [e["line"] for e in data["dropped_examples"]["test"]] == [6, 16, 23]
    assert (data["valid_triples"], data["test_triples"]) == (20, 20)
    assert len(record["units"]) and record["units"]["mrr"] == 2 * 20  # every kept test triple, both sides
    executed = json.loads((record_path.parent / "kg.ipynb").read_text())
    printed = "".join(
        "".join(out.get("text", ""))
        for cell in executed["cells"]
        if cell["cell_type"] == "code"
        for out in cell["outputs"]
        if out["output_type"] == "stream"
    )
    assert "valid: 4 of 25 triples dropped" in printed and "test: 3 of 23 triples dropped" in printed
    assert "line 15 (e01, mentors, e02: relation unseen)" in printed
    assert "filtered out" not in printed and "not in the training set" not in printed

    # a malformed folder: exit code 2 before any compute (no run folder), naming the file and the line
    refused = tmp_path / "refused"
    bad = [*cmd[:3], "--set", f"dataset={MALFORMED_FIXTURE}", "--outputs", str(refused)]
    proc = subprocess.run(bad, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "tests/fixtures/kg/malformed/valid.tsv line 4 has 2 tab-separated fields" in proc.stderr
    assert not list(refused.glob("kg/*"))


# --- the contract, and the rule on fake records -----------------------------------------------------------


class TestKgContract(FamilyContract):
    family = "kg"

    def expands_without_data(self, profile: str) -> bool:
        return profile != "paper"  # PyKEEN's cache under cache_root: test_paper_loaders_read_a_prefilled_...

    tiny = {"embedding_dim": 8, "epochs": 2, "batch_size": 32, "eval_batch_size": 64}
    tiny_axes = {"dataset": "nations"}
    bad = (
        ({"dataset": "freebase"}, "unknown KG dataset 'freebase'"),
        ({"dataset": "path:tests/fixtures/kg/does_not_exist"}, "directory not found"),
        ({"dataset": "path:tests/fixtures/kg/incomplete"}, "no validation file"),
        ({"dataset": MALFORMED_FIXTURE}, "malformed/valid.tsv line 4 has 2 tab-separated fields, expected 3"),
        ({"composition": "rotate"}, "parameter 'composition'"),
        ({"composition": "complex", "embedding_dim": 7}, "even embedding_dim"),
        ({"training_loop": "owa"}, "parameter 'training_loop'"),
        ({"epochs": 0}, "parameter 'epochs': input should be greater than or equal to 1"),
        ({"scale": -1.0}, "parameter 'scale': input should be greater than 0"),
        ({"lr": float("nan")}, "parameter 'lr': input should be a finite number"),
        ({"learning_rate": 0.01}, "unknown parameter 'learning_rate'"),
    )
    unit_means = {"mrr": "mrr"}

    def fake_records(self) -> pd.DataFrame:
        """Nations with three seeds (qnorm and dot ahead by 0.1), UMLS with one."""
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
                        "norm_answer_freq_spearman": 0.5 + 0.1 * (variant == "qnorm") + rng.normal(0, 0.01),
                        "magnitude_d_top10": 0.9,
                    }
                    if variant == "learn":
                        metrics.update(gamma_q=0.49, gamma_d=0.51)
                    rows.append(
                        {
                            "family": "kg",
                            "variant": variant,
                            "seed": seed,
                            "params": {"dataset": dataset, "composition": "distmult"},
                            "metrics": metrics,
                            "curves": {"train_loss": {"x": [1, 2], "y": [2.0, 1.0]}},
                            "extra": {"cross_mrr": {v: mrr for v in FIXED_VARIANTS}},
                        }
                    )
        df = frame(rows)
        axes = pd.DataFrame([{a: p[a] for a in ("dataset", "composition")} for p in df["params"]])
        return pd.concat([df, axes, pd.DataFrame(list(df["metrics"]))], axis=1)

    def test_rule_on_fake_records(self):
        rule = (
            evaluate(self.fake_records(), load_claims(["kg"])).query("id == 'kg.rule'").set_index("setting")
        )
        assert rule.loc["dataset=nations, composition=distmult", "verdict"] == "supported"  # qnorm is +0.1
        assert rule.loc["dataset=umls, composition=distmult", "verdict"] == "untestable here"  # one seed

    def test_sections_without_axes_or_extras(self):
        import matplotlib

        matplotlib.use("Agg")
        df = self.fake_records()
        assert spec.SPEC.sections(df[df["variant"] == "dot"].drop(columns=["extra"]))
        assert spec.SPEC.sections(df[df["dataset"] == "umls"].drop(columns=["dataset", "composition"]))
        matplotlib.pyplot.close("all")

    def check_record(self, record, run_dir):
        metrics = record["metrics"]
        assert 0.0 < metrics["gamma_q"] < 1.0 and 0.0 < metrics["gamma_d"] < 1.0
        assert set(record["extra"]["cross_mrr"]) == set(FIXED_VARIANTS)
        assert len(record["curves"]["train_loss"]["y"]) == 2
        assert record["params"]["threads"] == 1 and "learning_rate" not in record["params"]
        assert (Path(run_dir) / "figures" / "training_loss.png").is_file()
        # the Fisher predictor ran before training, on validation triples
        assert (
            metrics["fisher_prefers_qnorm"] in (-1.0, 0.0, 1.0) and record["extra"]["fisher"]["n_pairs"] > 0
        )
