"""The paper's mechanism numbers (reference/mechanism.csv) beside ours: every paper row once with its value
as printed, ours read from the right metric of the right runs, and the tests left to the claims engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers.fake_records import frame

from embsym_lib.families.clip import tables as clip_tables
from embsym_lib.families.retrieval import tables as retrieval_tables
from embsym_lib.reference import REFERENCE_DIR, load_mechanism

PAPER_FILE = Path("/work/shared/paper/mechanism.csv")
VARIANTS = ("cosine", "dot", "qnorm", "dnorm", "learn")
SEEDS = (0, 1, 2)
ENCODERS = {"minilm": 0.0, "scratch": 0.5}  # encoder -> offset planted in all its metrics


def planted(encoder: str, variant: str, seed: int) -> dict[str, float]:
    """Metrics distinct per encoder, variant and seed, so that reading the wrong one shows."""
    base = ENCODERS[encoder] + 0.1 * VARIANTS.index(variant) + 0.01 * seed
    return {
        "cohen_d_mean": base,
        "query_norm_cv_mean": 0.02 + base / 10,
        "xeval_ndcg10_dot": 0.30 + base / 2,
        "xeval_ndcg10_cosine": 0.05 + base / 3,
        "xeval_ndcg10_qnorm": 0.9,  # never asked for: a trap for a wrong scoring column
        "dev_ndcg10_best": 0.40 + base / 4,
    }


def retrieval_records() -> pd.DataFrame:
    """Fine-tuned runs of minilm (every variant) and scratch (no dnorm), plus runs that must not count:
    evaluation-only (PT) runs and the fixed-scale ablation, with absurd metrics."""
    rows = []
    for encoder in ENCODERS:
        for variant in VARIANTS:
            if (encoder, variant) == ("scratch", "dnorm"):
                continue  # a hole: its rows say "not run"
            for seed in SEEDS:
                for params, metrics in (
                    ({"train": True, "scale_matched": False}, planted(encoder, variant, seed)),
                    ({"train": False}, dict.fromkeys(planted(encoder, variant, seed), 99.0)),
                    (
                        {"train": True, "scale_matched": True},
                        dict.fromkeys(planted(encoder, variant, seed), -9.0),
                    ),
                ):
                    rows.append(
                        {
                            "family": "retrieval",
                            "variant": variant,
                            "seed": seed,
                            "params": {"encoder": encoder, **params},
                            "metrics": metrics,
                        }
                    )
    return frame(rows)


def planted_values(encoder: str, trained_with: str, metric: str) -> list[float]:
    return [planted(encoder, trained_with, s)[metric] for s in SEEDS]


def mean_and_sd(cell: str) -> tuple[float, float]:
    mean, _, sd = cell.partition(" ± ")
    return float(mean), float(sd)


def family_rows(quantities) -> pd.DataFrame:
    paper = load_mechanism()
    return paper[paper["quantity"].isin(quantities)].reset_index(drop=True)


# --- the shipped reference ----------------------------------------------------------------------------


@pytest.mark.skipif(not PAPER_FILE.exists(), reason="the shared paper folder is not on this machine")
def test_the_shipped_copy_is_the_papers_file_unchanged():
    assert (REFERENCE_DIR / "mechanism.csv").read_bytes() == PAPER_FILE.read_bytes()


def test_the_loader_skips_the_comment_header_and_keeps_table_names_as_text():
    paper = load_mechanism()
    lines = (REFERENCE_DIR / "mechanism.csv").read_text().splitlines()
    data = [line for line in lines if line and not line.startswith("#")][1:]  # less the column header
    assert list(paper.columns) == ["table", "encoder", "setting", "quantity", "variant", "value"]
    assert len(paper) == len(data)
    assert list(paper["value"]) == [float(line.rsplit(",", 1)[1]) for line in data]  # as printed
    assert {"3", "19a", "19b", "18", "22", "23", "6"} == set(paper["table"])


def test_every_paper_row_belongs_to_exactly_one_family():
    retrieval = set(retrieval_tables.RETRIEVAL_QUANTITIES)
    clip = set(clip_tables.MECHANISM_METRICS)
    assert not retrieval & clip
    assert set(load_mechanism()["quantity"]) == retrieval | clip


# --- retrieval ------------------------------------------------------------------------------------------


def test_retrieval_table_shows_every_paper_row_once_with_its_value_unchanged():
    paper = family_rows(retrieval_tables.RETRIEVAL_QUANTITIES)
    table = retrieval_tables.mechanism_table(retrieval_records())
    assert len(table) == len(paper)
    key = ["paper table", "paper encoder", "paper setting", "quantity", "variant"]
    assert not table.duplicated(key).any()
    assert list(table["paper table"]) == [f"Table {t}" for t in paper["table"]]
    assert list(table["quantity"]) == list(paper["quantity"])
    assert list(table["variant"]) == list(paper["variant"])
    assert list(table["paper"]) == list(paper["value"])  # exactly as printed, no rescaling
    # ours are labelled as ours, per our encoder, never as the paper's encoder
    assert [c for c in table.columns if c.startswith("ours")] == ["ours: minilm", "ours: scratch"]
    assert not table.isna().any().any() and not (table == "").any().any()  # never blank


def test_retrieval_settings_are_shown_readably():
    table = retrieval_tables.mechanism_table(retrieval_records())
    settings = set(table["paper setting"])
    assert {"fine-tuned, all categories", "from scratch, BEIR", "dot-trained, validation set"} <= settings
    assert not any(":" in s for s in settings)


@pytest.mark.parametrize(
    "quantity, variant, trained_with, metric, scale",
    [
        ("cohens_d", "qnorm", "qnorm", "cohen_d_mean", 1.0),
        ("cohens_d", "learn", "learn", "cohen_d_mean", 1.0),
        ("query_cv", "dot", "dot", "query_norm_cv_mean", 100.0),  # the paper's CV is in percent
        ("query_cv", "dnorm", "dnorm", "query_norm_cv_mean", 100.0),
        ("collapse", "dot", "dot", "xeval_ndcg10_dot", 1.0),  # dot-trained, scored with dot
        ("collapse", "cosine", "dot", "xeval_ndcg10_cosine", 1.0),  # dot-trained, scored with cosine
        ("validation_ndcg10", "cosine", "cosine", "dev_ndcg10_best", 100.0),
        ("validation_ndcg10", "dnorm", "dnorm", "dev_ndcg10_best", 100.0),
    ],
)
def test_ours_is_the_mean_over_seeds_of_the_right_metric_of_the_right_runs(
    quantity, variant, trained_with, metric, scale
):
    table = retrieval_tables.mechanism_table(retrieval_records())
    rows = table[(table["quantity"] == quantity) & (table["variant"] == variant)]
    assert len(rows)
    values = planted_values("minilm", trained_with, metric)
    for cell in rows["ours: minilm"]:
        mean, sd = mean_and_sd(cell)
        assert mean == pytest.approx(scale * np.mean(values), abs=0.01)
        assert sd == pytest.approx(scale * np.std(values, ddof=1), abs=0.01)


def test_query_cv_is_converted_to_percent():
    table = retrieval_tables.mechanism_table(retrieval_records())
    cell = table[(table["quantity"] == "query_cv") & (table["variant"] == "dot")]["ours: scratch"].iloc[0]
    fraction = np.mean(planted_values("scratch", "dot", "query_norm_cv_mean"))  # 0.08: a fraction
    assert mean_and_sd(cell)[0] == pytest.approx(100 * fraction, abs=0.01)


def test_rows_without_runs_say_not_run():
    table = retrieval_tables.mechanism_table(retrieval_records())
    dnorm = table[(table["variant"] == "dnorm") & table["quantity"].isin(["query_cv", "validation_ndcg10"])]
    assert len(dnorm) and (dnorm["ours: scratch"] == retrieval_tables.NOT_RUN).all()
    assert (dnorm["ours: minilm"] != retrieval_tables.NOT_RUN).all()
    # no fine-tuned run at all (only evaluation-only ones): one "ours" column, "not run" throughout
    pt_only = retrieval_records()
    pt_only = pt_only[[p["train"] is False for p in pt_only["params"]]]
    table = retrieval_tables.mechanism_table(pt_only)
    ours = table.set_index("quantity")["ours"]
    assert (ours.drop(list(retrieval_tables.CLAIMS_ONLY)) == retrieval_tables.NOT_RUN).all()


def test_tests_and_correlations_point_to_the_claims_table():
    table = retrieval_tables.mechanism_table(retrieval_records())
    claims_only = table[table["quantity"].isin(["paired_p", "d_gain_correlation", "cohens_d_dataset"])]
    assert len(claims_only) == 9 + 2 + 5
    for column in ("ours: minilm", "ours: scratch"):
        assert (claims_only[column] == retrieval_tables.SEE_CLAIMS).all()
    assert (
        table.loc[~table.index.isin(claims_only.index), "ours: minilm"] != retrieval_tables.SEE_CLAIMS
    ).all()


@pytest.mark.filterwarnings("ignore:No artists with labels")  # the fake runs draw no training curves
def test_retrieval_sections_include_the_mechanism_table():
    import matplotlib.pyplot as plt

    df = retrieval_records()
    all_items = retrieval_tables.sections(df)
    plt.close("all")
    items = [i for i in all_items if "mechanism numbers beside ours" in i.text]
    assert len(items) == 1
    pd.testing.assert_frame_equal(items[0].table, retrieval_tables.mechanism_table(df))


# --- CLIP -----------------------------------------------------------------------------------------------

ZERO_SHOT = {"r1_t2i_cosine": 0.31, "r1_t2i_dot": 0.24, "r1_i2t_cosine": 0.9, "r1_i2t_dot": 0.8}


def clip_records(zero_shot_model: str = "ViT-B-32", zero_shot_pretrained: str = "openai") -> pd.DataFrame:
    """norm_sym runs that ran the zero-shot analysis, metrics distinct per seed (i2t planted as a trap)."""
    rows = []
    for seed in SEEDS:
        zs = {k: v + 0.01 * seed for k, v in ZERO_SHOT.items()}
        zs.update(cohen_d_image=0.001 * (seed + 1), cohen_d_text=-0.002 * (seed + 1))
        source = f"{zero_shot_model} ({zero_shot_pretrained})" if zero_shot_model else "stand-in"
        rows.append(
            {
                "family": "clip",
                "variant": "cosine",
                "seed": seed,
                "params": {
                    "loss_direction": "sym",
                    "dataset": "coco",
                    "zero_shot_model": zero_shot_model,
                    "zero_shot_pretrained": zero_shot_pretrained,
                },
                # the trained model's own metrics: never the zero-shot ones
                "metrics": {
                    "r1_t2i_cosine": 0.7,
                    "r1_t2i_dot": 0.6,
                    "cohen_d_image": 5.0,
                    "cohen_d_text": 5.0,
                },
                "extra": {"zero_shot": {"source": source, "metrics": zs}},
            }
        )
    return frame(rows)


def test_clip_table_shows_every_paper_row_once_beside_the_pretrained_zero_shot_analysis():
    paper = family_rows(clip_tables.MECHANISM_METRICS)
    table = clip_tables.mechanism_table(clip_records())
    assert len(table) == len(paper) == 4
    assert list(table["paper"]) == list(paper["value"])
    assert set(table["paper setting"]) == {"zero-shot, MS-COCO"}
    assert list(zip(table["quantity"], table["variant"], strict=True)) == list(
        zip(paper["quantity"], paper["variant"], strict=True)
    )
    ours = table.set_index(["quantity", "variant"])["ours: ViT-B-32 (openai), coco"]
    for variant in ("cosine", "dot"):
        values = [ZERO_SHOT[f"r1_t2i_{variant}"] + 0.01 * s for s in SEEDS]
        assert mean_and_sd(ours[("r1_t2i", variant)])[0] == pytest.approx(100 * np.mean(values), abs=0.01)
    assert mean_and_sd(ours[("cohens_d_image", "cosine")])[0] == pytest.approx(0.002, abs=1e-4)
    assert mean_and_sd(ours[("cohens_d_text", "cosine")])[0] == pytest.approx(-0.004, abs=1e-4)


@pytest.mark.parametrize("model, weights", [("", ""), ("ViT-B-32", "")])  # stand-in; random init
def test_clip_zero_shot_without_pretrained_weights_is_not_run(model, weights):
    table = clip_tables.mechanism_table(clip_records(model, weights))
    assert [c for c in table.columns if c.startswith("ours")] == ["ours"]
    assert (table["ours"] == clip_tables.ZERO_SHOT_NOT_RUN).all()


def test_clip_sections_include_the_mechanism_table():
    df = clip_records()
    items = [i for i in clip_tables.sections(df) if "zero-shot numbers beside ours" in i.text]
    assert len(items) == 1
    pd.testing.assert_frame_equal(items[0].table, clip_tables.mechanism_table(df))
