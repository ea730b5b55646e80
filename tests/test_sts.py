"""STS family: the shared contract (schema, notebook, report, claims, a tiny run), the pair score through
sentence-transformers' hooks equals the grid, λ's scale rules, the loss and evaluator, the generated pair
set, the STS-B / AllNLI loaders (fixture files) and the paper profile on them."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from cases import FamilyContract, HookEqualsGrid
from helpers.fake_records import frame
from scipy.stats import pearsonr, spearmanr

from embsym_lib.adapters import sentence_transformers as st
from embsym_lib.claims import evaluate, load_claims
from embsym_lib.data import sts as data
from embsym_lib.families.sts import pipeline, tables
from embsym_lib.params import expand
from embsym_lib.runtime import resolve_precision
from embsym_lib.similarity import FIXED_VARIANTS, VARIANTS, paired

FIXTURES = "tests/fixtures/sts"
USER = "tests/fixtures/sts_user"  # users' own pairs files
TINY = {
    "n_train": 64,
    "n_dev": 8,
    "n_test": 48,
    "scratch_hidden_size": 32,
    "scratch_intermediate_size": 64,
    "scratch_layers": 1,
    "gamma_lr": 0.05,
    "batch_size": 32,
    "evaluate_dev": True,
    "encoder_overrides": {"scratch": {"lr": 0.002, "epochs": 1, "trainable_layers": -1}},
}


class TestStsContract(FamilyContract):
    family = "sts"
    tiny = TINY
    tiny_axes = {"encoder": "scratch"}
    bad = (
        ({"dataset": "sick"}, "parameter 'dataset'"),
        ({"dataset": "stsb"}, "needs data_dir"),
        ({"dataset": "stsb", "data_dir": "no/such/dir"}, "does not exist"),
        ({"dataset": "stsb", "data_dir": FIXTURES}, "holds neither"),
        ({"dataset": "stsb", "data_dir": f"{FIXTURES}/stsb_sbert", "nli_file": "nope.tsv.gz"}, "nli_file"),
        ({"encoder": "bert-base-uncased"}, "unknown encoder"),
        ({"encoder": "offline:minilm"}, "unknown encoder"),
        ({"scale_rule": "both"}, "parameter 'scale_rule'"),
        ({"score_scale": 0.0}, "parameter 'score_scale'"),
        ({"pooling": "attention"}, "parameter 'pooling'"),
        ({"warmup_ratio": 1.5}, "parameter 'warmup_ratio'"),
        ({"trainable_layers": -2}, "parameter 'trainable_layers'"),
        ({"encoder_overrides": {"scratch": {"scratch_epochs": 8}}}, "unknown keys"),
        (
            {"encoder_overrides": {"scratch": {"lr": float("inf")}}},
            "encoder_overrides\\['scratch'\\]\\['lr'\\]",
        ),
        ({"evaluate_dev": 1}, "parameter 'evaluate_dev'"),
        ({"train": "no"}, "parameter 'train'"),
        ({"test_file": "no/such/pairs.tsv"}, "test_file: pairs file '.*no/such/pairs.tsv' not found"),
        ({"test_file": f"{USER}/no_score_column.tsv"}, "test_file: .*missing column 'score'"),
        ({"test_file": f"{USER}/score_out_of_range.tsv"}, "line 5: score 5.5 is outside \\[0, 5\\]"),
        ({"test_file": f"{USER}/score_not_a_number.csv"}, "line 3: score 'n/a' is not a number"),
    )

    def expands_without_data(self, profile: str) -> bool:
        return profile != "paper"  # the paper profile reads data/sts/ (embsym data fetch)

    def fake_records(self) -> pd.DataFrame:
        return fake_records()

    def check_record(self, record, run_dir):
        metrics = record["metrics"]
        names = ("spearman", "pearson", "spearman_untrained", *(f"spearman_as_{v}" for v in FIXED_VARIANTS))
        for name in names:
            assert math.isfinite(metrics[name]) and -1 <= metrics[name] <= 1
        assert metrics["gamma_q"] != 0.5 and 0 < metrics["gamma_q"] < 1
        assert record["curves"]["train_loss"]["x"] and record["curves"]["dev_spearman"]["x"]
        assert record["extra"]["paper_name"] == "learn" and record["extra"]["train_pairs"] == 64
        # the offline profile's precision (auto), as it resolved on this machine
        assert record["params"]["precision"] == "auto"
        assert record["extra"]["precision"] == resolve_precision("auto", "cpu")


class TestStsHook(HookEqualsGrid):
    """The pair score (λ = 1) as the regression loss calls it, on every (query, candidate) pair."""

    def scores_through_hook(self, variant, q, d):
        loss = st.PairScoreRegressionLoss(None, st.PairScore(variant, score_scale=1.0))
        n, m = q.shape[0], d.shape[0]
        return loss.similarity_fct(q.repeat_interleave(m, 0), d.repeat(n, 1)).view(n, m)


def fake_records() -> pd.DataFrame:
    """Fine-tuned runs of two encoders and evaluation-only (PT) runs of minilm."""
    rng = np.random.default_rng(0)
    rows = []
    for encoder, train in (("minilm", True), ("scratch", True), ("minilm", False)):
        for variant in VARIANTS:
            for seed in (0, 1, 2):
                metrics = {f"spearman_as_{v}": float(rng.uniform(0.3, 0.9)) for v in FIXED_VARIANTS}
                metrics.update(
                    spearman=float(rng.uniform(0.3, 0.9)),
                    pearson=float(rng.uniform(0.3, 0.9)),
                    spearman_swapped=0.5,
                    spearman_untrained=0.4,
                    norm_mean=5.0,
                    norm_cv=0.1,
                    norm_product_spearman=0.0,
                )
                if variant == "learn":
                    metrics.update(gamma_q=0.5, gamma_d=0.49)
                rows.append(
                    {
                        "family": "sts",
                        "variant": variant,
                        "seed": seed,
                        "params": {"encoder": encoder, "train": train},
                        "metrics": metrics,
                        "curves": {"train_loss": {"x": [1, 2], "y": [0.3, 0.2]}} if train else {},
                    }
                )
    df = frame(rows)
    return df.assign(
        encoder=[p["encoder"] for p in df["params"]],
        train=[p["train"] for p in df["params"]],
        **pd.DataFrame(list(df["metrics"])),
    )


def _pair(seed: int = 0, n: int = 12, dim: int = 8):
    g = torch.Generator().manual_seed(seed)
    scale = torch.rand(n, 1, generator=g) * 5 + 0.5
    return torch.randn(n, dim, generator=g) * scale, torch.randn(n, dim, generator=g) * scale


@pytest.mark.parametrize("variant", VARIANTS)
def test_pair_score_is_the_grid_score_scaled_per_side(variant):
    a, b = _pair()
    score = st.PairScore(variant, score_scale=0.01, scale_rule="per_side")
    unnormalized_sides = {"cosine": 0, "dot": 2, "qnorm": 1, "dnorm": 1}
    if variant == "learn":
        gq, gd = score.similarity.gamma_q.detach(), score.similarity.gamma_d.detach()
        factor = (a.norm(dim=-1) ** (1 - gq)) * (b.norm(dim=-1) ** (1 - gd)) * 0.01 ** ((2 - gq - gd) / 2)
        expected = factor * paired(a, b, "cosine")
    else:
        expected = 0.01 ** (unnormalized_sides[variant] / 2) * paired(a, b, variant)
    torch.testing.assert_close(score(a, b), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant", FIXED_VARIANTS)
def test_pair_score_any_side_rule(variant):
    a, b = _pair(1)
    expected = paired(a, b, variant) * (1.0 if variant == "cosine" else 0.01)
    torch.testing.assert_close(st.PairScore(variant, 0.01, "any_side")(a, b), expected)


def test_one_sided_variants_are_sent1norm_and_sent2norm():
    a, b = _pair(2)
    # Sent1Norm normalizes sentence 1 only: |s2| cos; Sent2Norm: |s1| cos. Swapping the query swaps them.
    cos = paired(a, b, "cosine")
    torch.testing.assert_close(paired(a, b, "qnorm"), b.norm(dim=-1) * cos)
    torch.testing.assert_close(paired(a, b, "dnorm"), a.norm(dim=-1) * cos)
    torch.testing.assert_close(paired(b, a, "qnorm"), paired(a, b, "dnorm"))
    assert tables.PAPER_NAMES["qnorm"] == "Sent1Norm" and tables.PAPER_NAMES["dnorm"] == "Sent2Norm"


def test_regression_loss_and_learnable_gammas():
    a, b = _pair(3)
    labels = torch.rand(a.shape[0])
    score = st.PairScore("learn", 0.01)
    loss = st.PairScoreRegressionLoss(model=None, similarity_fct=score)
    value = loss.compute_loss_from_embeddings([a, b], labels)
    torch.testing.assert_close(value, torch.mean((score(a, b) - labels) ** 2))
    value.backward()
    assert {n for n, p in loss.named_parameters() if p.grad is not None} == {
        "similarity_fct.similarity.raw_gamma_q",
        "similarity_fct.similarity.raw_gamma_d",
    }


class _StubEncoder:
    """Stands in for a SentenceTransformer: encode() looks the embeddings up by sentence."""

    def __init__(self, table):
        self.table = table
        self.model_card_data = None

    def encode(self, sentences, **kwargs):
        return np.stack([self.table[s] for s in sentences])


def test_evaluator_scores_every_variant(monkeypatch):
    a, b = _pair(4, n=30)
    split = pd.DataFrame(
        {
            "sentence1": [f"a{i}" for i in range(30)],
            "sentence2": [f"b{i}" for i in range(30)],
            "score": np.linspace(0, 5, 30),
        }
    )
    table = {**{f"a{i}": a[i].numpy() for i in range(30)}, **{f"b{i}": b[i].numpy() for i in range(30)}}
    encoder = st.GridEncoder(_StubEncoder(table), st.ENCODERS["minilm"], st.PairScore("qnorm"), "pairs")
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

    monkeypatch.setattr(
        EmbeddingSimilarityEvaluator, "store_metrics_in_model_card_data", lambda *a, **k: None
    )
    metrics = pipeline.evaluate(encoder, split, {"eval_batch_size": 8})
    gold = split["score"] / 5
    for v in FIXED_VARIANTS:
        scores = paired(a, b, v).numpy()
        assert metrics[f"spearman_as_{v}"] == pytest.approx(spearmanr(gold, scores).statistic)
        assert metrics[f"pearson_as_{v}"] == pytest.approx(pearsonr(gold, scores).statistic, rel=1e-5)
    assert metrics["spearman"] == pytest.approx(metrics["spearman_as_qnorm"])
    assert metrics["spearman_swapped"] == pytest.approx(metrics["spearman_as_dnorm"])
    with st.ADAPTER.scored_with(encoder, "dot"):
        assert encoder.score.variant == "dot" and encoder.score.score_scale == 0.01
        dot = pipeline.evaluate(encoder, split, {"eval_batch_size": 8})
    assert dot["spearman"] == pytest.approx(metrics["spearman_as_dot"])
    assert encoder.score.variant == "qnorm"


def test_generated_pairs_are_deterministic_graded_and_split_by_frame():
    first, again = (
        data.generate_pairs(200, 50, 80, data_seed=3),
        data.generate_pairs(200, 50, 80, data_seed=3),
    )
    for split in data.SPLITS:
        pd.testing.assert_frame_equal(first[split], again[split])
    other = data.generate_pairs(200, 50, 80, data_seed=4)
    assert not first["train"].equals(other["train"])
    assert [len(first[s]) for s in data.SPLITS] == [200, 50, 80]
    scores = pd.concat(first.values())["score"]
    assert scores.between(0, 5).all() and scores.nunique() > 10 and scores.std() > 0.8
    sentences = {s: set(first[s]["sentence1"]) | set(first[s]["sentence2"]) for s in data.SPLITS}
    assert not sentences["train"] & sentences["test"] and not sentences["train"] & sentences["dev"]


def test_overlap_label_is_symmetric():
    import random

    rng = random.Random(0)
    for _ in range(200):
        a = {slot: rng.choice(c) for slot, c in data.LEXICON.items()}
        b = {slot: rng.choice(c) for slot, c in data.LEXICON.items()}
        na, nb = rng.random() < 0.3, rng.random() < 0.3
        assert data.overlap_label(a, b, na, nb) == data.overlap_label(b, a, nb, na)
    assert data.overlap_label(a, a) == data.MAX_SCORE
    assert data.overlap_label(a, a, True, False) == data.MAX_SCORE - data.SLOT_WEIGHTS["verb"]


def test_stsb_loaders_read_both_published_formats():
    original = data.load_stsb(f"{FIXTURES}/stsb_original")
    sbert = data.load_stsb(f"{FIXTURES}/stsb_sbert")
    assert data.stsb_format(f"{FIXTURES}/stsb_original") == "original"
    assert data.stsb_format(f"{FIXTURES}/stsb_sbert") == "sbert"
    assert [len(original[s]) for s in data.SPLITS] == [6, 3, 4]
    assert original["train"].iloc[0].tolist() == [
        "A plane is taking off.",
        "An air plane is taking off.",
        5.0,
    ]
    # Quotes stay in the text; extra source columns are ignored.
    assert original["train"].iloc[4]["sentence1"] == 'Obama signs "jobs" bill'
    for split in ("dev", "test"):
        pd.testing.assert_frame_equal(original[split], sbert[split])
    with pytest.raises(FileNotFoundError, match="holds neither"):
        data.stsb_format(FIXTURES)


def test_allnli_loader_maps_labels_and_keeps_train_only():
    nli = data.load_allnli(f"{FIXTURES}/AllNLI.tsv.gz")
    assert len(nli) == 4
    assert sorted(nli["score"]) == [0.0, 2.5, 2.5, 5.0]
    assert len(data.load_allnli(f"{FIXTURES}/AllNLI.tsv.gz", max_pairs=2)) == 2


def test_paper_profile_loads_fixtures_through_the_family():
    points = expand(
        "sts",
        "paper",
        variants=["cosine"],
        seeds=[0],
        overrides={"data_dir": f"{FIXTURES}/stsb_original", "nli_file": f"{FIXTURES}/AllNLI.tsv.gz"},
    )
    assert {p.params["encoder"] for p in points} == {"contriever", "retromae"}
    assert {st.encoder_info(p.params["encoder"]).pooling for p in points} == {"mean", "cls"}
    assert all(p.params["threads"] == 4 and p.params["trainable_layers"] == -1 for p in points)
    splits = pipeline.load_pairs(points[0].params)
    assert len(splits["train"]) == 6 + 4 and len(splits["test"]) == 4
    assert expand("sts", "paper", check_data=False), "a dry run needs no data"


def test_scratch_trains_with_its_own_values():
    (point,) = expand("sts", "offline", variants=["dot"], seeds=[0], overrides={"encoder": "scratch"})
    p = st.with_overrides(point.params)
    assert (p["lr"], p["epochs"], p["trainable_layers"]) == (0.002, 8, -1)
    (minilm,) = expand("sts", "offline", variants=["dot"], seeds=[0], overrides={"encoder": "minilm"})
    assert st.with_overrides(minilm.params)["trainable_layers"] == 2


def test_claims_name_the_encoder_settings():
    df = fake_records()
    df = df[(df["variant"] != "dnorm") & df["train"]]
    table = evaluate(df, load_claims(["sts"])).set_index(["id", "setting"])
    assert {s for _, s in table.index} == {"encoder=minilm", "encoder=scratch"}
    one_sided = table.loc["sts.one_sided_below_cosine"]
    assert (one_sided["verdict"] == "untestable here").all()  # no dnorm runs
    assert one_sided["reason"].str.contains("no runs of dnorm").all()
    ref = tables.reference()
    assert set(ref["setting"]) == {"contriever", "retromae"} and "learn" not in set(ref["variant"])


# ----------------------------------------------------------------------------------------------
# a user's own pairs file (test_file) and evaluation-only runs (train: false)


def test_pairs_file_in_every_stsb_layout(tmp_path):
    tsv = data.read_pairs_file(f"{USER}/pairs.tsv")  # a header, an extra column, tab-separated
    assert len(tsv) == 20 and list(tsv.columns) == list(data.COLUMNS)
    assert tsv.iloc[0].tolist() == ["A man is playing a guitar.", "A man plays the guitar.", 4.8]
    csv_pairs = data.read_pairs_file(f"{USER}/pairs.csv")  # columns in another order, CSV quoting
    assert csv_pairs.iloc[-1].tolist() == ['He said "yes, of course", smiling.', "He agreed, smiling.", 2.5]
    headerless = data.read_pairs_file(f"{FIXTURES}/stsb_original/sts-test.csv")  # the STS benchmark's
    pd.testing.assert_frame_equal(headerless, data.load_stsb(f"{FIXTURES}/stsb_original")["test"])
    gz = tmp_path / "pairs.tsv.gz"
    import gzip

    gz.write_bytes(gzip.compress(open(f"{USER}/pairs.tsv", "rb").read()))
    pd.testing.assert_frame_equal(data.read_pairs_file(gz), tsv)
    assert data.check_pairs_file(f"{USER}/pairs.tsv") == 20


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sentence1,score\na,1\nb,2\n", "missing column 'sentence2'"),
        ("text_a\ttext_b\tlabel\na\tb\t1\n", "missing columns: expected a header naming"),
        ("sentence1\tsentence2\tscore\na\tb\t1\nc\t\t2\n", "line 3: sentence2 is empty"),
        ("sentence1\tsentence2\tscore\na\tb\t1\nc\td\n", "line 3: expected at least 3 columns, got 2"),
        ("sentence1,sentence2,score\na,b,-0.5\nc,d,2\n", "line 2: score -0.5 is outside \\[0, 5\\]"),
        ("sentence1,sentence2,score\na,b,nan\nc,d,2\n", "line 2: score nan is outside"),
        ("sentence1,sentence2,score\na,b,1\n", "1 pair\\(s\\); a correlation needs at least 2"),
        ("sentence1,sentence2,score\na,b,3\nc,d,3\n", "every score is 3: no correlation"),
        ("\n", "the first line is empty"),
    ],
)
def test_pairs_file_errors_name_the_line(tmp_path, text, message):
    path = tmp_path / "pairs.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        data.read_pairs_file(path)


def test_test_file_replaces_the_test_split_and_evaluation_only_trains_nothing():
    (point,) = expand(
        "sts",
        "offline",
        variants=["qnorm"],
        seeds=[0],
        overrides={"encoder": "minilm", "train": False, "test_file": f"{USER}/pairs.tsv"},
    )
    splits = pipeline.load_pairs(point.params)
    pd.testing.assert_frame_equal(splits["test"], data.read_pairs_file(f"{USER}/pairs.tsv"))
    assert len(splits["train"]) == 384  # the dataset's train split, unused without training
    history = pipeline.train(None, None, splits, point.params)
    assert history == {"loss_x": [], "loss_y": [], "dev_x": [], "dev_y": []}
    assert pipeline.curves_of(history) == {}
    assert pipeline.test_data(point.params).startswith("your file ") and "pairs.tsv" in pipeline.test_data(
        point.params
    )


def test_table5_shows_evaluation_only_rows_apart():
    df = fake_records()
    table = tables.table5(df)
    assert {"ours: minilm", "ours: scratch", "ours: minilm (PT, evaluation only)"} <= set(table.index)
    items = tables.sections(df)
    before_after = next(i for i in items if i.text.startswith("**Before vs after"))
    assert before_after.table.index.get_level_values("encoder").tolist().count("minilm") == len(VARIANTS)
    assert tables.sections(df[~df["train"]])  # evaluation-only runs alone still give Table 5


@pytest.mark.slow
def test_cli_scores_a_user_pairs_file_without_training(tmp_path):
    """`embsym run sts --set train=false --set test_file=<file>`: the pretrained MiniLM scored on the
    user's pairs under two variants, nothing trained."""
    import json

    from embsym_lib import cli

    sets = ["train=false", "encoder=minilm", f"test_file={USER}/pairs.tsv"]
    argv = ["run", "sts", "--variants", "cosine", "dot", "--seeds", "0", "--outputs", str(tmp_path)]
    assert cli.main([*argv, *(a for s in sets for a in ("--set", s))]) == 0
    records = {
        r["variant"]: r for r in (json.loads(p.read_text()) for p in tmp_path.glob("sts/*/record.json"))
    }
    assert set(records) == {"cosine", "dot"}
    for record in records.values():
        metrics, extra = record["metrics"], record["extra"]
        assert record["status"] == "complete" and record["params"]["train"] is False
        assert extra["stage"] == "pretrained (evaluation only)" and extra["test_pairs"] == 20
        assert extra["test_data"].endswith("tests/fixtures/sts_user/pairs.tsv")
        assert metrics["spearman"] == metrics["spearman_untrained"] and -1 <= metrics["spearman"] <= 1
        assert "train_loss_final" not in metrics and record["curves"] == {}
    # one encoder, two scorings: each run's metric is the other's cross-evaluation entry
    assert records["dot"]["metrics"]["spearman"] == pytest.approx(
        records["cosine"]["metrics"]["spearman_as_dot"]
    )
