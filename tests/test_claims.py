"""The claims engine: the shipped claims files, selection of runs, and a clear verdict (never a crash or
p = 0) for every degenerate input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers.fake_records import frame, two_variant_runs

from embsym_lib import claims
from embsym_lib.claims import CONTRADICTED, INCONCLUSIVE, SUPPORTED, UNTESTABLE, ClaimSpecError
from embsym_lib.families import registry

ASYM = {"task": "asymmetric"}


def claim(family: str = "synthetic", **fields) -> claims.Claim:
    base = {"id": "t.claim", "statement": "s", "source": "s", "stands_for": "s", "metric": "ndcg@10"}
    return claims.parse_claim({**base, **fields}, family)


def rows(
    values: dict[tuple[str, int], float | None], metric: str = "ndcg@10", params=ASYM, family="synthetic"
):
    return frame(
        {
            "family": family,
            "variant": v,
            "seed": s,
            "params": dict(params),
            "metrics": {} if x is None else {metric: x},
        }
        for (v, s), x in values.items()
    )


def only_row(df, c):
    out = claims.evaluate(df, [c])
    assert len(out) == 1
    return out.iloc[0]


# --- the shipped claims files ---------------------------------------------------------------------------


def test_every_family_has_claims_and_every_claim_loads():
    loaded = claims.load_claims()
    assert {c.family for c in loaded} - {claims.POOLED} == set(registry())
    for family in registry():
        assert any(c.kind == "rule" for c in loaded if c.family == family), f"{family} has no rule claim"
    assert len({c.id for c in loaded}) == len(loaded)


def test_claims_without_runs_are_untestable_with_a_reason():
    out = claims.evaluate(frame([]))
    assert (out["verdict"] == UNTESTABLE).all()
    assert out["reason"].str.startswith("no ").all()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "magic"}, "unknown kind"),
        ({"relation": "bigger", "contrasts": [["qnorm", "cosine"]]}, "unknown relation"),
        ({"relation": "equivalent", "contrasts": [["qnorm", "cosine"]]}, "needs a margin"),
        ({"contrasts": [["qnorm"]]}, "pair"),
        ({"contrasts": [[0.5, "cosine"]]}, "first side"),
        ({"contrasts": [["qnorm", "cosine"]], "margin": -1}, "positive"),
        ({"contrasts": [["qnorm", "cosine"]], "colour": "red"}, "unknown keys"),
        ({"contrasts": []}, "lists its contrasts"),
        ({"kind": "rule", "margin": 0.01, "named": ["cosine"]}, "not magnitude-preserving"),
        ({"kind": "predictor", "scores": {"qnorm": "k"}}, "two sides in 'scores'"),
        ({"contrasts": [[{"variant": "qnorm", "value": 1}, "cosine"]]}, "either a variant"),
    ],
)
def test_bad_claims_are_refused_with_one_clear_error(fields, message):
    with pytest.raises(ClaimSpecError, match=message):
        claim(**fields)


def test_claims_naming_unknown_variants_are_refused(tmp_path):
    (tmp_path / "kg.yaml").write_text(
        "family: kg\nclaims:\n  - {id: kg.x, statement: s, source: s, stands_for: s, metric: mrr, contrasts: [[euclidean, cosine]]}\n"
    )
    with pytest.raises(ClaimSpecError, match="not in family 'kg'"):
        claims.load_claims(directory=tmp_path)
    (tmp_path / "kg.yaml").write_text(
        "family: kg\nclaims: [{id: kg.rule, statement: s, source: s, stands_for: s, kind: rule, margin: 0.01}]\n"
    )
    with pytest.raises(ClaimSpecError, match="pre-name"):
        claims.load_claims(directory=tmp_path)
    (tmp_path / "kg.yaml").write_text("family: kg\nclaims: [{id: kg.x, statement: 'a: b: c'\n")
    with pytest.raises(ClaimSpecError, match="not valid YAML"):
        claims.load_claims(directory=tmp_path)


# --- degenerate inputs (the calibration issue's item d) -----------------------------------------------


def test_constant_difference_is_untestable_not_p_zero():
    df = rows(
        {("qnorm", s): 0.6 + 0.01 * s for s in range(3)} | {("cosine", s): 0.5 + 0.01 * s for s in range(3)}
    )
    r = only_row(df, claim(where=ASYM, contrasts=[["qnorm", "cosine"]]))
    assert r["verdict"] == UNTESTABLE
    assert "+0.1 in every seed" in r["reason"]
    assert math.isnan(r["p"])


def test_identical_sides_are_untestable():
    df = rows({(v, s): 0.5 for v in ("qnorm", "cosine") for s in range(3)})
    assert only_row(df, claim(where=ASYM, contrasts=[["qnorm", "cosine"]]))["verdict"] == UNTESTABLE


def test_single_seed_is_untestable():
    df = rows({("qnorm", 0): 0.6, ("cosine", 0): 0.5})
    r = only_row(df, claim(where=ASYM, contrasts=[["qnorm", "cosine"]]))
    assert r["verdict"] == UNTESTABLE and "one seed" in r["reason"]


def test_missing_seeds_pair_what_is_there():
    df = rows(
        {("qnorm", 0): 0.61, ("qnorm", 1): 0.62, ("qnorm", 2): 0.64, ("cosine", 1): 0.5, ("cosine", 2): 0.51}
    )
    r = only_row(df, claim(where=ASYM, contrasts=[["qnorm", "cosine"]]))
    assert r["n_seeds"] == 2 and r["verdict"] in (SUPPORTED, INCONCLUSIVE)


def test_non_finite_metrics_are_dropped_and_said():
    df = rows({("qnorm", 0): None, ("qnorm", 1): float("nan"), ("cosine", 0): 0.5, ("cosine", 1): 0.4})
    r = only_row(df, claim(where=ASYM, contrasts=[["qnorm", "cosine"]]))
    assert r["verdict"] == UNTESTABLE
    assert "without" in r["reason"]


def test_a_missing_side_is_untestable_and_named():
    df = rows({("cosine", s): 0.5 + s / 100 for s in range(3)})
    r = only_row(df, claim(where=ASYM, contrasts=[["qnorm", "cosine"]]))
    assert r["verdict"] == UNTESTABLE and "no runs of qnorm" in r["reason"]


def test_two_records_for_one_seed_are_refused():
    df = frame(
        [
            {"family": "synthetic", "variant": v, "seed": 0, "params": ASYM, "metrics": {"ndcg@10": 0.5}}
            for v in ("qnorm", "qnorm", "cosine")
        ]
        + [
            {"family": "synthetic", "variant": v, "seed": 1, "params": ASYM, "metrics": {"ndcg@10": 0.6}}
            for v in ("qnorm", "cosine")
        ]
    )
    r = only_row(df, claim(where=ASYM, contrasts=[["qnorm", "cosine"]]))
    assert r["verdict"] == UNTESTABLE and "more than one record" in r["reason"]


def test_unless_makes_a_claim_untestable_with_its_reason():
    df = rows(
        {(v, s): 0.5 + 0.01 * s * (v == "qnorm") for v in ("qnorm", "cosine") for s in range(3)},
        params={**ASYM, "reader": "offline:tiny-t5"},
    )
    c = claim(
        where=ASYM,
        contrasts=[["qnorm", "cosine"]],
        unless=[{"where": {"reader": "offline:tiny-t5"}, "reason": "random reader"}],
    )
    r = only_row(df, c)
    assert (r["verdict"], r["reason"]) == (UNTESTABLE, "random reader")


# --- selection and direction --------------------------------------------------------------------------


def test_free_grid_axes_split_a_claim_into_settings():
    rng = np.random.default_rng(0)
    df = two_variant_runs(rng, family="kg", metric="mrr", params={"dataset": "nations"})
    df = frame(
        list(df.to_dict("records"))
        + list(
            two_variant_runs(rng, family="kg", metric="mrr", params={"dataset": "umls"}).to_dict("records")
        )
    )
    out = claims.evaluate(df, [claim(family="kg", metric="mrr", contrasts=[["qnorm", "cosine"]])])
    assert list(out["setting"]) == ["dataset=nations", "dataset=umls"]


def test_a_list_in_where_still_gives_one_setting_per_value():
    rng = np.random.default_rng(0)
    parts = [
        two_variant_runs(rng, family="retrieval", metric="m", params={"encoder": e})
        for e in ("minilm", "e5", "scratch")
    ]
    df = frame(r for p in parts for r in p.to_dict("records"))
    c = claim(
        family="retrieval", metric="m", where={"encoder": ["minilm", "e5"]}, contrasts=[["qnorm", "cosine"]]
    )
    assert list(claims.evaluate(df, [c])["setting"]) == ["encoder=e5", "encoder=minilm"]


def test_a_claim_sees_condition_axes_at_their_reference_unless_it_names_them():
    # retrieval's conditions: train (reference true) and scale_matched (reference false). The
    # evaluation-only and scale-matched runs plant opposite effects: a claim that does not name them
    # must not see them (no extra settings, no diluted effect); one that names them sees only them.
    rng = np.random.default_rng(0)
    kw = {"family": "retrieval", "metric": "m", "seeds": 5, "run_sd": 0.005}
    parts = [
        two_variant_runs(rng, params={"encoder": "scratch"}, effects={"qnorm": 0.1}, **kw),
        two_variant_runs(rng, params={"encoder": "scratch", "train": False}, effects={"cosine": 0.1}, **kw),
        two_variant_runs(
            rng, params={"encoder": "scratch", "scale_matched": True}, effects={"cosine": 0.1}, **kw
        ),
    ]
    df = frame(r for p in parts for r in p.to_dict("records"))
    plain = claims.evaluate(df, [claim(family="retrieval", metric="m", contrasts=[["qnorm", "cosine"]])])
    assert list(plain["setting"]) == ["encoder=scratch"]
    assert plain.iloc[0]["verdict"] == SUPPORTED and plain.iloc[0]["n_seeds"] == 5
    matched = claim(
        family="retrieval", metric="m", where={"scale_matched": True}, contrasts=[["qnorm", "cosine"]]
    )
    row = only_row(df, matched)
    assert row["verdict"] == CONTRADICTED and "scale_matched=True" in row["setting"]


def test_direction_less_and_contradiction():
    rng = np.random.default_rng(0)
    df = two_variant_runs(rng, params=ASYM, effects={"qnorm": 0.1}, seeds=5, run_sd=0.005)
    assert only_row(df, claim(where=ASYM, contrasts=[["qnorm", "cosine"]]))["verdict"] == SUPPORTED
    assert only_row(df, claim(where=ASYM, contrasts=[["cosine", "qnorm"]]))["verdict"] == CONTRADICTED
    assert (
        only_row(df, claim(where=ASYM, relation="less", contrasts=[["cosine", "qnorm"]]))["verdict"]
        == SUPPORTED
    )


def test_rule_follows_the_tasks_formal_symmetry():
    rng = np.random.default_rng(0)
    sym = two_variant_runs(
        rng,
        params={"task": "symmetric"},
        metric="spearman",
        variants=("cosine", "qnorm", "dot"),
        effects={"qnorm": -0.3},
        seeds=4,
        run_sd=0.002,
    )
    asym = two_variant_runs(
        rng, params=ASYM, variants=("cosine", "qnorm", "dot"), effects={"qnorm": 0.1}, seeds=4, run_sd=0.002
    )
    df = frame(list(sym.to_dict("records")) + list(asym.to_dict("records")))
    out = claims.evaluate(df, [claim(kind="rule", named=["qnorm"], margin=0.02, metric="")]).set_index(
        "setting"
    )
    assert out.loc["task=asymmetric", "verdict"] == SUPPORTED
    assert "asymmetric" in out.loc["task=asymmetric", "reason"]
    assert out.loc["task=symmetric", "verdict"] == SUPPORTED  # cosine ≥ dot within 0.02, ≫ qnorm
    assert "symmetric" in out.loc["task=symmetric", "reason"]


def test_rows_carry_effect_interval_runs_and_bh_q():
    rng = np.random.default_rng(2)
    df = two_variant_runs(rng, params=ASYM, effects={"qnorm": 0.05}, seeds=4)
    out = claims.evaluate(
        df,
        [
            claim(where=ASYM, contrasts=[["qnorm", "cosine"]]),
            claim(id="t.two", where=ASYM, contrasts=[["dnorm", "cosine"]]),
        ],
    )
    first = out.iloc[0]
    assert first["ci_low"] < first["effect"] < first["ci_high"]
    assert len(first["runs"]) == 8 and first["q_bh"] >= first["p"]
    assert out.iloc[1]["verdict"] == UNTESTABLE and math.isnan(out.iloc[1]["q_bh"])


def test_null_redraw_leaves_no_variant_effect():
    """``null_redraw`` shuffles variant labels among the runs of one setting and seed: a planted
    variant effect vanishes from the verdicts."""
    rng = np.random.default_rng(0)
    df = two_variant_runs(rng, params=ASYM, effects={"qnorm": 0.2}, seeds=3, run_sd=0.001)
    c = claim(where=ASYM, contrasts=[["qnorm", "cosine"]])
    assert only_row(df, c)["verdict"] == SUPPORTED
    outcomes = [only_row(claims.null_redraw(df, seed=s), c)["verdict"] for s in range(40)]
    assert outcomes.count(SUPPORTED) < len(outcomes) / 2


def test_holm_agrees_with_statsmodels():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(0)
    for m in (1, 2, 3, 7):
        p = rng.uniform(0, 0.2, m)
        assert claims.holm(p) == pytest.approx(list(multipletests(p, method="holm")[1]))


def _predictor_rows(family, params, metric, seeds, better_at, choice_at):
    rows = []
    for seed in range(seeds):
        better, choice = better_at(seed), choice_at(seed)
        for v in ("qnorm", "dnorm"):
            rows.append(
                {
                    "family": family,
                    "variant": v,
                    "seed": seed,
                    "params": dict(params),
                    "metrics": {metric: 0.5 + (0.1 if v == better else 0.0), "fisher_prefers_qnorm": choice},
                }
            )
    return rows


POOLED_PREDICTOR = {
    "id": "p.x",
    "statement": "s",
    "source": "s",
    "stands_for": "s",
    "kind": "predictor",
    "families": ["synthetic", "kg"],
    "scores": {"qnorm": "k_q", "dnorm": "k_d"},
    "choice": "fisher_prefers_qnorm",
}


def test_a_predictor_that_abstains_is_scored_on_its_decided_answers_seed_by_seed_in_a_setting():
    def better(seed):
        return "qnorm" if seed % 2 else "dnorm"

    def right_or_abstain(seed):
        return 0.0 if seed % 3 == 0 else (1.0 if better(seed) == "qnorm" else -1.0)

    df = frame(_predictor_rows("synthetic", ASYM, "ndcg@10", 12, better, right_or_abstain))
    predictor = claim(
        kind="predictor", scores={"qnorm": "k_q", "dnorm": "k_d"}, choice="fisher_prefers_qnorm", where=ASYM
    )
    r = only_row(df, predictor)
    assert r["ours"] == "8/8 correct, 4 abstained" and r["n_seeds"] == 12 and r["verdict"] == SUPPORTED


def test_the_pooled_predictor_gives_one_answer_per_setting():
    """Six settings where the predictor names each setting's winner: 6/6 (p = 0.03). The same answer
    repeated over 12 seeds of 2 settings is 2 answers, not 24: inconclusive."""
    rows = []
    tasks = ("asymmetric", "asymmetric_nuisance", "ablation")
    for i, task in enumerate(tasks):
        side = "qnorm" if i % 2 else "dnorm"
        sign = 1.0 if side == "qnorm" else -1.0
        rows += _predictor_rows(
            "synthetic", {**ASYM, "task": task}, "ndcg@10", 3, lambda s, b=side: b, lambda s, c=sign: c
        )
    for i, dataset in enumerate(("nations", "kinships", "umls")):
        side = "qnorm" if i % 2 else "dnorm"
        sign = 1.0 if side == "qnorm" else -1.0
        # one seed abstains, one names the wrong side: the setting's answer is still its majority
        rows += _predictor_rows(
            "kg",
            {"dataset": dataset},
            "mrr",
            4,
            lambda s, b=side: b,
            lambda s, c=sign: (0.0, -c, c, c)[s],
        )
    pooled = claims.parse_claim(POOLED_PREDICTOR, claims.POOLED)
    r = only_row(frame(rows), pooled)
    assert r["ours"] == "6/6 correct" and r["n_seeds"] == 6 and r["verdict"] == SUPPORTED
    assert "settings" in r["test"]
    repeated = _predictor_rows("synthetic", ASYM, "ndcg@10", 12, lambda s: "qnorm", lambda s: 1.0)
    repeated += _predictor_rows("kg", {"dataset": "nations"}, "mrr", 12, lambda s: "qnorm", lambda s: 1.0)
    r = only_row(frame(repeated), pooled)
    assert r["ours"] == "2/2 correct" and r["verdict"] == INCONCLUSIVE
    abstaining = frame([{**row, "metrics": {**row["metrics"], "fisher_prefers_qnorm": 0.0}} for row in rows])
    r = only_row(abstaining, pooled)
    assert r["verdict"] == UNTESTABLE and "abstained on all 6 setting(s)" in r["reason"]


@pytest.mark.parametrize("run_sd, decides", [(0.001, True), (0.05, False)])
def test_the_power_table_says_whether_the_design_detects_the_planned_effect(run_sd, decides):
    rng = np.random.default_rng(3)
    df = two_variant_runs(rng, params=ASYM, effects={"qnorm": 0.02}, seeds=5, run_sd=run_sd, seed_sd=0.0)
    out = claims.evaluate(df, [claim(kind="rule", named=["qnorm"], margin=0.02, metric="")])
    (row,) = claims.power_table(out).to_dict("records")
    assert row["replicates"] == "5 seeds" and row["planned (% of baseline)"] == 2.0
    target = claims.PLANNED_RELATIVE_EFFECT * abs(out.iloc[0]["baseline"])
    assert row["decides the plan"] is decides
    assert math.isclose(
        row["detectable (% of baseline)"], 100 * out.iloc[0]["mde"] / abs(out.iloc[0]["baseline"])
    )
    # the seeds it asks for are the fewest at which the engine's own detectable effect reaches the plan
    needed, sd = row["replicates for the plan"], out.iloc[0]["sd"]
    assert claims._detectable_dz(needed) * sd <= target * 1.001
    assert needed == 2 or claims._detectable_dz(needed - 1) * sd > target
    assert (needed <= 5) is decides


# --- a fixed side: one model, the same at every seed (the PT column) ------------------------------------

FIXED_PT = {"variant": "qnorm", "where": {"train": False}, "fixed": True}


def pt_and_finetuned(finetuned: dict[int, float], pretrained: dict[int, float]):
    def record(seed, value, train):
        params = {"encoder": "minilm", "train": train, "scale_matched": False}
        return {
            "family": "retrieval",
            "variant": "qnorm",
            "seed": seed,
            "params": params,
            "metrics": {"m": value},
        }

    return frame(
        [record(s, x, True) for s, x in finetuned.items()]
        + [record(s, x, False) for s, x in pretrained.items()]
    )


def fixed_claim():
    return claim(
        family="retrieval",
        metric="m",
        contrasts=[[{"variant": "qnorm", "where": {"train": True}}, FIXED_PT]],
    )


def test_a_fixed_side_with_one_run_is_compared_with_every_seed():
    df = pt_and_finetuned({0: 0.551, 1: 0.548, 2: 0.556, 3: 0.552}, {0: 0.50})
    r = only_row(df, fixed_claim())
    assert r["verdict"] == SUPPORTED and r["n_seeds"] == 4


def test_a_fixed_side_finds_nothing_when_training_changes_nothing():
    df = pt_and_finetuned({0: 0.51, 1: 0.488, 2: 0.503}, {0: 0.50})
    assert only_row(df, fixed_claim())["verdict"] == INCONCLUSIVE


def test_a_fixed_side_whose_runs_differ_is_untestable():
    df = pt_and_finetuned({0: 0.551, 1: 0.548, 2: 0.556}, {0: 0.50, 1: 0.52})
    r = only_row(df, fixed_claim())
    assert r["verdict"] == UNTESTABLE and "not one fixed model" in r["reason"]


def test_a_prediction_carried_by_one_variants_runs_counts_for_its_seed():
    """The Fisher predictor runs only in ``fisher_variants``' runs (cosine): its answer at a seed comes
    from that run, the truth from the qnorm and dnorm runs of the same seed."""
    from embsym_lib.diagnostics import fisher_wanted

    assert fisher_wanted({"variant": "cosine", "fisher_variants": ["cosine"], "fisher_pairs": 64})
    assert not fisher_wanted({"variant": "qnorm", "fisher_variants": ["cosine"], "fisher_pairs": 64})
    assert not fisher_wanted({"variant": "cosine", "fisher_variants": ["cosine"], "fisher_pairs": 0})
    rows = []
    for seed in range(10):
        better = "qnorm" if seed % 2 else "dnorm"
        for v in ("cosine", "qnorm", "dnorm"):
            metrics = {"ndcg@10": 0.5 + (0.1 if v == better else 0.0)}
            if v == "cosine":
                metrics["fisher_prefers_qnorm"] = 1.0 if better == "qnorm" else -1.0
            rows.append(
                {"family": "synthetic", "variant": v, "seed": seed, "params": dict(ASYM), "metrics": metrics}
            )
    predictor = claim(
        kind="predictor", scores={"qnorm": "k_q", "dnorm": "k_d"}, choice="fisher_prefers_qnorm", where=ASYM
    )
    r = only_row(frame(rows), predictor)
    assert r["ours"] == "10/10 correct" and r["verdict"] == SUPPORTED
