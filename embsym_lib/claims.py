"""The claims engine: every verdict in the report comes from here, and only from here.

The paper's claims are data (``embsym_lib/reference/claims/<family>.yaml``; format and reasoning in
``docs/claims.md``): each names its contrast, metric, expected relation (and margin) before any
result is seen. ``evaluate(records)`` tests each claim on the run records and nothing else, and gives
exactly one of four verdicts:

- **supported**: the pre-registered test rejects in the claimed direction (equivalence: the
  difference lies inside the stated margin, TOST);
- **contradicted**: it rejects in the opposite direction (equivalence: outside the margin);
- **inconclusive**: neither; a non-significant result is never "supported";
- **untestable here**: the records cannot answer the claim, and the row says why.

How each claim is tested:

- A claim about *training* a variant is tested over training runs: seeds are the replicates, the two
  sides paired by seed (paired t; TOST for equivalence; one-sided non-inferiority). Pooling the
  per-query results of a few runs as if independent would test "these trained models differ", not
  "this variant trains better", and turns run-to-run noise into effects
  (``tests/test_claims_calibration.py`` measures it).
- A claim about one *fixed* model (``level: unit``: a pretrained checkpoint, no training) is tested
  over its paired per-unit results (queries, triples, episodes; ``records.read_units``): sign-flip
  permutation tests and a bootstrap interval.
- Every decision is two-sided at ``ALPHA`` (each direction at ALPHA/2), so a claim's false
  verdicts on null data, support and contradiction together, stay at or below ALPHA. Several
  contrasts combine as the claim says: ``all`` (every contrast must hold: intersection-union, each at
  ALPHA; contradicted if any is reversed after Holm) or ``any`` (one must hold: Holm; contradicted
  only if every one is reversed).
- Each row carries the effect with its 95% interval, the test, the deciding p (Holm-adjusted where
  several contrasts decide), seeds and units, the smallest effect the design detects with ``POWER``,
  the runs used, and a Benjamini-Hochberg q over every claim tested together.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from .families import FamilySpec, registry
from .symmetry import MAGNITUDE_PRESERVING

ALPHA = 0.05
POWER = 0.8
RESAMPLES = 9999  # permutation and bootstrap resamples of unit-level and correlation tests
# The effect every family's primary claim (its rule) is planned to detect, as a fraction of the baseline
# variant's metric: the smallest winner-vs-cosine gain the paper reports in domain (Contriever, MS MARCO
# dev, qnorm 31.35 vs cosine 30.86 nDCG@10: +1.6%; its other gains are 2-8%), rounded up.
# docs/power.md gives the pilot behind it and what each family's design detects.
PLANNED_RELATIVE_EFFECT = 0.02
CLAIMS_DIR = Path(__file__).resolve().parent / "reference" / "claims"

SUPPORTED, CONTRADICTED, INCONCLUSIVE, UNTESTABLE = (
    "supported",
    "contradicted",
    "inconclusive",
    "untestable here",
)
VERDICTS = (SUPPORTED, CONTRADICTED, INCONCLUSIVE, UNTESTABLE)
RELATIONS = ("greater", "less", "equivalent", "noninferior")
KINDS = ("contrast", "rule", "predictor", "correlation")
LEVELS = ("seed", "unit")
COMBINE = ("all", "any")
_ID = re.compile(r"^[a-z0-9_.\-]+$")


class ClaimSpecError(ValueError):
    """A claims file that cannot be evaluated as written."""


# ---------------------------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class Side:
    """One side of a contrast: the runs of ``variant`` (with the extra grid conditions ``where``)
    measured by ``metric`` (default: the claim's), or a constant ``value``."""

    variant: str | None = None
    metric: str | None = None
    where: dict[str, Any] = field(default_factory=dict)
    value: float | None = None
    # one fixed model (nothing trained, e.g. a pretrained checkpoint scored by the variant): its value is
    # the same at every seed, so one run stands for all of them and several runs must agree
    fixed: bool = False

    @property
    def is_constant(self) -> bool:
        return self.value is not None

    def label(self, claim_metric: str) -> str:
        if self.is_constant:
            return f"{self.value:g}"
        inner = [f"{k}={v}" for k, v in self.where.items()]
        if self.metric and self.metric != claim_metric:
            inner.append(self.metric)
        return f"{self.variant}" + (f" ({', '.join(inner)})" if inner else "")


@dataclass(frozen=True)
class Contrast:
    a: Side
    b: Side


@dataclass(frozen=True)
class Claim:
    """One claim of the paper, as its claims file states it (fields: ``docs/claims.md``)."""

    id: str
    family: str
    statement: str
    source: str
    stands_for: str
    kind: str = "contrast"
    metric: str = ""
    relation: str = "greater"
    margin: float | None = None
    combine: str = "all"
    contrasts: tuple[Contrast, ...] = ()
    level: str = "seed"
    where: dict[str, Any] = field(default_factory=dict)
    unless: tuple[tuple[dict[str, Any], str], ...] = ()
    scale: float | None = None
    paper: dict[str, Any] = field(default_factory=dict)
    named: tuple[str, ...] = ()  # rule: the variant(s) pre-named to beat cosine on an asymmetric task
    scores: dict[str, str] = field(default_factory=dict)  # predictor: side -> score metric (lower wins)
    choice: str = ""  # predictor: a metric whose sign is the prediction (+1 first side, -1 second, 0 none)
    families: tuple[str, ...] = ()  # a pooled claim (claims file "pooled.yaml"): the families it pools
    x: str = ""  # correlation: metric pattern with {unit}
    y: str = ""  # correlation: metric pattern whose relative gain (variant over baseline) is correlated
    variant: str = ""
    baseline: str = "cosine"
    units_param: str = ""  # correlation: the parameter listing the units (e.g. test_sets)


_CLAIM_KEYS = {f for f in Claim.__dataclass_fields__ if f != "family"}


def _side(raw: Any, cid: str) -> Side:
    if isinstance(raw, str):
        return Side(variant=raw)
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return Side(value=float(raw))
    if isinstance(raw, dict):
        unknown = set(raw) - {"variant", "metric", "where", "value", "fixed"}
        if unknown:
            raise ClaimSpecError(f"claim {cid}: unknown side keys {sorted(unknown)}")
        if ("value" in raw) == ("variant" in raw):
            raise ClaimSpecError(f"claim {cid}: a side names either a variant or a constant value")
        return Side(
            variant=raw.get("variant"),
            metric=raw.get("metric"),
            where=dict(raw.get("where") or {}),
            value=None if raw.get("value") is None else float(raw["value"]),
            fixed=bool(raw.get("fixed", False)),
        )
    raise ClaimSpecError(f"claim {cid}: cannot read side {raw!r}")


def parse_claim(raw: dict[str, Any], family: str) -> Claim:
    """One claim from its YAML mapping, checked; every problem is one ClaimSpecError naming the claim."""
    cid = raw.get("id", "?")
    unknown = set(raw) - _CLAIM_KEYS
    if unknown:
        raise ClaimSpecError(f"claim {cid}: unknown keys {sorted(unknown)}")
    for key in ("id", "statement", "source", "stands_for"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise ClaimSpecError(f"claim {cid}: {key!r} must be a non-empty string")
    if not _ID.match(cid):
        raise ClaimSpecError(f"claim {cid}: ids use lower-case letters, digits, '.', '_' and '-'")
    kind = raw.get("kind", "contrast")
    if kind not in KINDS:
        raise ClaimSpecError(f"claim {cid}: unknown kind {kind!r}; valid kinds are: {', '.join(KINDS)}")
    for key, allowed in (("relation", RELATIONS), ("combine", COMBINE), ("level", LEVELS)):
        if key in raw and raw[key] not in allowed:
            raise ClaimSpecError(f"claim {cid}: unknown {key} {raw[key]!r}; valid: {', '.join(allowed)}")
    margin = raw.get("margin")
    if margin is not None and not (
        isinstance(margin, (int, float)) and not isinstance(margin, bool) and margin > 0
    ):
        raise ClaimSpecError(f"claim {cid}: margin must be a positive number, got {margin!r}")
    contrasts = []
    for c in raw.get("contrasts") or ():
        if not (isinstance(c, (list, tuple)) and len(c) == 2):
            raise ClaimSpecError(f"claim {cid}: every contrast is a pair [a, b]")
        contrasts.append(Contrast(_side(c[0], cid), _side(c[1], cid)))
    unless = []
    for u in raw.get("unless") or ():
        if not isinstance(u, dict) or set(u) != {"where", "reason"}:
            raise ClaimSpecError(f"claim {cid}: every 'unless' entry has exactly 'where' and 'reason'")
        unless.append((dict(u["where"]), str(u["reason"])))
    fields = {k: v for k, v in raw.items() if k not in ("contrasts", "unless", "named", "margin", "families")}
    claim = Claim(
        **fields,
        family=family,
        margin=None if margin is None else float(margin),
        contrasts=tuple(contrasts),
        unless=tuple(unless),
        named=tuple(raw.get("named") or ()),
        families=tuple(raw.get("families") or ()),
    )
    _check_claim(claim)
    return claim


def _check_claim(c: Claim) -> None:
    if c.relation in ("equivalent", "noninferior") and c.margin is None:
        raise ClaimSpecError(f"claim {c.id}: relation {c.relation!r} needs a margin")
    if c.kind == "contrast":
        if not c.contrasts:
            raise ClaimSpecError(f"claim {c.id}: a contrast claim lists its contrasts")
        for con in c.contrasts:
            if con.a.is_constant:
                raise ClaimSpecError(f"claim {c.id}: the first side of a contrast is runs, not a constant")
            for s in (con.a, con.b):
                if not s.is_constant and not (s.metric or c.metric):
                    raise ClaimSpecError(f"claim {c.id}: no metric for side {s.variant}")
    elif c.kind == "rule":
        if c.margin is None:
            raise ClaimSpecError(
                f"claim {c.id}: a rule claim states the non-inferiority margin for symmetric tasks"
            )
        bad = [v for v in c.named if v not in MAGNITUDE_PRESERVING]
        if bad:
            raise ClaimSpecError(f"claim {c.id}: named {bad} are not magnitude-preserving variants")
    elif c.kind == "predictor":
        if len(c.scores) != 2:
            raise ClaimSpecError(f"claim {c.id}: a predictor claim names its two sides in 'scores'")
    if c.family == POOLED and (c.kind != "predictor" or not c.families):
        raise ClaimSpecError(f"claim {c.id}: a pooled claim is a predictor claim that lists its 'families'")
    elif c.kind == "correlation":
        if not (c.x and c.y and c.variant and c.units_param):
            raise ClaimSpecError(f"claim {c.id}: a correlation claim needs x, y, variant and units_param")
        if "{unit}" not in c.x or "{unit}" not in c.y:
            raise ClaimSpecError(f"claim {c.id}: x and y are metric patterns containing '{{unit}}'")
    if c.level == "unit" and c.kind != "contrast":
        raise ClaimSpecError(f"claim {c.id}: only contrast claims are tested at the unit level")


POOLED = "pooled"  # the claims file of claims that pool several families


def _check_against_spec(c: Claim, spec: FamilySpec) -> None:
    named = [s.variant for con in c.contrasts for s in (con.a, con.b) if not s.is_constant]
    named += [*c.named, *c.scores]
    if c.kind == "correlation":
        named += [c.variant, c.baseline]
    bad = sorted({v for v in named if v not in spec.variants})
    if bad:
        raise ClaimSpecError(f"claim {c.id}: variants {bad} are not in family {spec.name!r}")
    if c.kind == "rule" and not c.named and any(not t.symmetric for t in spec.tasks.values()):
        raise ClaimSpecError(
            f"claim {c.id}: {spec.name} has asymmetric tasks: pre-name the variant(s) the rule expects to beat cosine"
        )


def load_claims(families: Iterable[str] | None = None, directory: Path = CLAIMS_DIR) -> list[Claim]:
    """Every claim of the named families (default: every claims file), in file order."""
    known = registry()
    wanted = None if families is None else set(families)
    out: list[Claim] = []
    seen: set[str] = set()
    for path in sorted(Path(directory).glob("*.yaml")):
        try:
            doc = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ClaimSpecError(f"{path.name}: not valid YAML: {e}") from None
        family = doc.get("family", path.stem)
        if family not in known and family != POOLED:
            raise ClaimSpecError(f"{path.name}: unknown family {family!r}")
        for raw in doc.get("claims") or ():
            claim = parse_claim(raw, family)
            if claim.id in seen:
                raise ClaimSpecError(f"{path.name}: duplicate claim id {claim.id!r}")
            seen.add(claim.id)
            for name in claim.families or (family,):
                if name not in known:
                    raise ClaimSpecError(f"claim {claim.id}: unknown family {name!r}")
                _check_against_spec(claim, known[name])
            if wanted is None or family in wanted or set(claim.families) & wanted:
                out.append(claim)
    return out


# ------------------------------------------------------------------------------------------- selection


def _matches(params: dict[str, Any], where: dict[str, Any]) -> bool:
    for key, want in where.items():
        have = params.get(key)
        if (have not in want) if isinstance(want, list) else (have != want):
            return False
    return True


def _at_reference(params: dict[str, Any], conditions: dict[str, Any]) -> bool:
    """A run at the reference value of each condition (a record without the parameter predates it and
    ran at the reference)."""
    return all(params.get(axis, value) == value for axis, value in conditions.items())


def _instances(claim: Claim, spec: FamilySpec, df: pd.DataFrame) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    """The claim's settings: ``where`` fixes some grid axes; a condition axis the claim does not name
    stays at its reference value (``FamilySpec.conditions``); every other grid axis that no side sets
    splits the records, one instance per value (e.g. one KG claim per dataset)."""
    if df.empty:
        return []
    side_axes = {k for con in claim.contrasts for s in (con.a, con.b) for k in s.where}
    unnamed = {a: v for a, v in spec.conditions.items() if a not in claim.where and a not in side_axes}
    df = df[[_matches(p, claim.where) and _at_reference(p, unnamed) for p in df["params"]]]
    fixed = {a for a, v in claim.where.items() if not isinstance(v, list)}
    free = [a for a in spec.grid_axes if a not in fixed and a not in side_axes and a not in unnamed]
    keys = [_axes_key(p, free) for p in df["params"]]
    out = []
    for key in sorted(set(keys)):
        part = df[[k == key for k in keys]]
        first = part["params"].iloc[0]
        setting = {a: v for a, v in claim.where.items() if a in fixed}
        setting.update({a: first[a] for a in free if first.get(a) is not None})
        out.append((setting, part))
    return out


def _axes_key(params: dict[str, Any], axes: Sequence[str]) -> str:
    return json.dumps([params.get(a) for a in axes], default=str)


def _runs_of(side: Side, df: pd.DataFrame) -> pd.DataFrame:
    keep = [
        v == side.variant and _matches(p, side.where)
        for v, p in zip(df["variant"], df["params"], strict=True)
    ]
    return df[keep]


@dataclass
class SideData:
    """Per-seed values of one side and the runs they come from; ``problem`` if the side is unusable."""

    values: dict[int, float]  # seed -> value
    runs: list[str]
    problem: str = ""


def _side_data(side: Side, metric: str, df: pd.DataFrame) -> SideData:
    rows = _runs_of(side, df)
    name = side.metric or metric
    values: dict[int, float] = {}
    runs: list[str] = []
    duplicated, missing = set(), 0
    for seed, metrics, family, run_id in zip(
        rows["seed"], rows["metrics"], rows["family"], rows["run_id"], strict=True
    ):
        v = (metrics or {}).get(name)
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            missing += 1
            continue
        if int(seed) in values:
            duplicated.add(int(seed))
        values[int(seed)] = float(v)
        runs.append(f"{family}/{run_id}")
    problem = ""
    if duplicated:
        problem = f"seeds {sorted(duplicated)} of {side.variant} have more than one record in this setting"
    elif not values:
        problem = f"no runs of {side.label(metric)}" + (
            f" with a finite {name} ({missing} without)" if missing else ""
        )
    return SideData(values, runs, problem)


# ----------------------------------------------------------------------------------------------- tests


@dataclass
class TestResult:
    """One contrast's test; effect = mean(a − b) in metric units.

    ``p_support`` / ``p_contra``: two-sided-scale p-values of the claimed relation and of its reversal
    (each compared with ALPHA; one-sided tests enter doubled, so each direction spends ALPHA/2)."""

    effect: float
    ci95: tuple[float, float]
    p_two: float
    p_support: float
    p_contra: float
    n_seeds: int
    n_units: int
    test: str
    mde: float
    relation: str
    mean_b: float = float("nan")
    sd: float = float("nan")  # of the paired differences: what the design's power depends on


def _directional(relation: str, effect: float, p_two: float) -> tuple[float, float]:
    agrees = effect * (-1 if relation == "less" else 1) > 0
    return (p_two, 1.0) if agrees else (1.0, p_two)


@functools.cache
def _normal_power_z() -> float:
    """z_{1-α/2} + z_{power}: a two-sided test's detectable effect in standard errors (normal approximation)."""
    from scipy import stats as st

    return float(st.norm.ppf(1 - ALPHA / 2) + st.norm.ppf(POWER))


@functools.lru_cache(maxsize=64)
def _detectable_dz(n: int) -> float:
    """The standardized paired effect (mean / sd of the differences) that a two-sided paired t-test
    over n pairs detects with POWER at ALPHA."""
    from statsmodels.stats.power import TTestPower

    return float(np.ravel(TTestPower().solve_power(effect_size=None, nobs=n, alpha=ALPHA, power=POWER))[0])


def _t_test(diffs: np.ndarray, relation: str, margin: float | None) -> TestResult:
    from scipy import stats as st
    from statsmodels.stats.weightstats import DescrStatsW

    n = diffs.size
    res = st.ttest_1samp(diffs, 0.0)
    effect, p_two = float(diffs.mean()), float(res.pvalue)
    ci95 = tuple(float(x) for x in res.confidence_interval(0.95))
    sd = float(diffs.std(ddof=1))
    if relation == "equivalent":
        p_support = float(DescrStatsW(diffs).ttost_mean(-margin, margin)[0])
        above = st.ttest_1samp(diffs, margin, alternative="greater").pvalue
        below = st.ttest_1samp(diffs, -margin, alternative="less").pvalue
        p_contra = min(1.0, 2 * float(min(above, below)))
        test = f"TOST paired t over seeds, margin ±{margin:g}"
        # the margin that TOST establishes with POWER when the true difference is 0
        mde = float((st.t.ppf(1 - ALPHA, n - 1) + st.t.ppf(1 - (1 - POWER) / 2, n - 1)) * sd / math.sqrt(n))
    else:
        if relation == "noninferior":
            p_support = min(1.0, 2 * float(st.ttest_1samp(diffs, -margin, alternative="greater").pvalue))
            p_contra = p_two if effect < 0 else 1.0
            test = f"non-inferiority paired t over seeds, margin {margin:g}"
        else:
            p_support, p_contra = _directional(relation, effect, p_two)
            test = "paired t over seeds (two-sided)"
        mde = float(_detectable_dz(n) * sd)
    return TestResult(effect, ci95, p_two, p_support, p_contra, n, 0, test, mde, relation, sd=sd)


def _sign_flip_p(x: np.ndarray, alternative: str, rng: np.random.Generator) -> float:
    from scipy import stats as st

    return float(
        st.permutation_test(
            (x,),
            lambda v, axis=-1: np.mean(v, axis=axis),
            permutation_type="samples",
            vectorized=True,
            n_resamples=RESAMPLES,
            alternative=alternative,
            rng=rng,
        ).pvalue
    )


def _unit_test(diffs: np.ndarray, relation: str, margin: float | None, seed: int = 0) -> TestResult:
    """Paired per-unit test of one fixed model: sign-flip permutation p-values, bootstrap 95% CI."""
    from scipy import stats as st

    rng = np.random.default_rng(seed)
    n, effect = diffs.size, float(diffs.mean())
    p_two = _sign_flip_p(diffs, "two-sided", rng)
    boot = st.bootstrap(
        (diffs,), np.mean, confidence_level=0.95, n_resamples=RESAMPLES, method="percentile", rng=rng
    )
    ci95 = (float(boot.confidence_interval.low), float(boot.confidence_interval.high))
    test = "sign-flip permutation over paired units (one fixed model)"
    if relation == "equivalent":
        p_support = max(
            _sign_flip_p(diffs + margin, "greater", rng), _sign_flip_p(diffs - margin, "less", rng)
        )
        p_contra = min(
            1.0,
            2 * min(_sign_flip_p(diffs - margin, "greater", rng), _sign_flip_p(diffs + margin, "less", rng)),
        )
        test += f", equivalence margin ±{margin:g}"
    elif relation == "noninferior":
        p_support = min(1.0, 2 * _sign_flip_p(diffs + margin, "greater", rng))
        p_contra = p_two if effect < 0 else 1.0
        test += f", non-inferiority margin {margin:g}"
    else:
        p_support, p_contra = _directional(relation, effect, p_two)
    sd = float(diffs.std(ddof=1))
    mde = float(_normal_power_z() * sd / math.sqrt(n))
    return TestResult(effect, ci95, p_two, p_support, p_contra, 0, n, test, mde, relation, sd=sd)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (step-down, monotone, capped at 1).

    Written out here because ``statsmodels.stats.multitest.multipletests(method="holm")`` calls
    ``gc.collect()`` on every call (~0.4 s in a process that holds torch); a test checks that both
    give the same numbers."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p)
    stepped = np.maximum.accumulate(p[order] * np.arange(p.size, 0, -1))
    out = np.empty_like(p)
    out[order] = np.minimum(stepped, 1.0)
    return [float(x) for x in out]


def decide(results: Sequence[TestResult], how: str = "all") -> tuple[str, float, list[float]]:
    """(verdict, deciding p, the p reported per contrast) of a claim over one or more contrasts.

    One contrast: supported iff p_support < ALPHA, contradicted iff p_contra < ALPHA.
    ``all``: supported iff every p_support < ALPHA (intersection-union); contradicted iff some
    Holm-adjusted p_contra < ALPHA. ``any``: supported iff some Holm-adjusted p_support < ALPHA;
    contradicted iff every p_contra < ALPHA.
    """
    sup = [t.p_support for t in results]
    con = [t.p_contra for t in results]
    if len(results) == 1:
        verdict = SUPPORTED if sup[0] < ALPHA else CONTRADICTED if con[0] < ALPHA else INCONCLUSIVE
        # a directional claim reports its two-sided p whichever way the effect went
        directional = results[0].relation in ("greater", "less")
        p = min(sup[0], con[0]) if directional else (con[0] if verdict == CONTRADICTED else sup[0])
        return verdict, p, [p]
    if how == "all":
        if max(sup) < ALPHA:
            return SUPPORTED, max(sup), sup
        con_adj = holm(con)
        if min(con_adj) < ALPHA:
            return CONTRADICTED, min(con_adj), con_adj
        return INCONCLUSIVE, max(sup), sup
    sup_adj = holm(sup)
    if min(sup_adj) < ALPHA:
        return SUPPORTED, min(sup_adj), sup_adj
    if max(con) < ALPHA:
        return CONTRADICTED, max(con), con
    return INCONCLUSIVE, min(sup_adj), sup_adj


# ------------------------------------------------------------------------------------------ evaluation


@dataclass
class Row:
    """One claim in one setting: a row of the report's claims table."""

    claim: Claim
    setting: dict[str, Any]
    verdict: str
    reason: str = ""
    test: str = ""
    effect: float = float("nan")
    ci_low: float = float("nan")
    ci_high: float = float("nan")
    p: float = float("nan")
    n_seeds: int = 0
    n_units: int = 0
    mde: float = float("nan")
    sd: float = float("nan")  # of the paired differences of the least powered contrast
    scale: float = 1.0
    baseline: float = float("nan")
    runs: list[str] = field(default_factory=list)
    contrasts: list[dict[str, Any]] = field(default_factory=list)
    ours: str = ""
    relative: bool = False  # a performance metric compared between runs: also shown as % of side b


def _scale_of(claim: Claim, spec: FamilySpec, metric: str) -> float:
    if claim.scale is not None:
        return float(claim.scale)
    return spec.metric_scale if metric in spec.metrics else 1.0


def _unless_reason(claim: Claim, df: pd.DataFrame) -> str | None:
    for where, reason in claim.unless:
        if len(df) and all(_matches(p, where) for p in df["params"]):
            return reason
    return None


def _setup(claim: Claim, spec: FamilySpec, df: pd.DataFrame) -> tuple[list[Contrast], str, str, str, str]:
    """(contrasts, metric, relation, combination, note). A rule claim's come from the task's formal
    symmetry, its metric is the claim's or else the task's primary metric."""
    if claim.kind != "rule":
        return list(claim.contrasts), claim.metric, claim.relation, claim.combine, ""
    params = df["params"].iloc[0]
    sym, metric = spec.symmetry_of(params), claim.metric or spec.primary_metric_of(params)
    if sym.symmetric:
        present = set(df["variant"])
        contrasts = [Contrast(Side("cosine"), Side(v)) for v in MAGNITUDE_PRESERVING if v in present]
        note = f"task {sym.name} is symmetric: cosine should be at least as good as every magnitude-preserving variant"
        return contrasts, metric, "noninferior", "all", note
    contrasts = [Contrast(Side(v), Side("cosine")) for v in claim.named]
    note = f"task {sym.name} is asymmetric: the pre-named {' / '.join(claim.named)} should beat cosine"
    return contrasts, metric, "greater", "any", note


def _seed_contrast(
    con: Contrast, metric: str, relation: str, margin: float | None, df: pd.DataFrame
) -> tuple[TestResult | None, str, list[str]]:
    a = _side_data(con.a, metric, df)
    b = None if con.b.is_constant else _side_data(con.b, metric, df)
    for side in (a, b):
        if side is not None and side.problem:
            return None, side.problem, []
    if b is not None and con.b.fixed:  # one model, whatever the seed: its runs must agree
        if np.ptp(list(b.values.values())) > 1e-9 * max(1.0, max(abs(v) for v in b.values.values())):
            return None, f"the runs of {con.b.label(metric)} differ: not one fixed model", []
        b_value, b_runs, b = next(iter(b.values.values())), b.runs, None
    else:
        b_value, b_runs = con.b.value, []
    if b is None:
        seeds = sorted(a.values)
        diffs = np.array([a.values[s] for s in seeds]) - float(b_value)
        mean_b = float(b_value)
    else:
        seeds = sorted(set(a.values) & set(b.values))
        if not seeds:
            return None, "the two sides share no seed", []
        diffs = np.array([a.values[s] - b.values[s] for s in seeds])
        mean_b = float(np.mean([b.values[s] for s in seeds]))
    runs = a.runs + (b.runs if b else b_runs)
    if len(seeds) < 2:
        return None, f"one seed ({seeds[0]}): no estimate of run-to-run variance (needs ≥ 2 seeds)", runs
    if np.ptp(diffs) <= 1e-12 * max(1.0, float(np.abs(diffs).max())):
        return (
            None,
            f"the difference is {diffs[0]:+.4g} in every seed: no run-to-run variance to test it against",
            runs,
        )
    result = _t_test(diffs, relation, margin)
    result.mean_b = mean_b
    return result, "", runs


def _unit_contrast(
    con: Contrast, metric: str, relation: str, margin: float | None, df: pd.DataFrame
) -> tuple[TestResult | None, str, list[str]]:
    from .records import read_units

    arrays, runs = [], []
    for side in (con.a, con.b):
        if side.is_constant:
            arrays.append(None)
            continue
        rows = _runs_of(side, df)
        key = side.metric or metric
        found = [
            (read_units(Path(d)).get(key), f"{f}/{r}")
            for d, f, r in zip(rows.get("record_dir", []), rows["family"], rows["run_id"], strict=True)
        ]
        if not found:
            return None, f"no runs of {side.label(metric)}", []
        if any(units is None for units, _ in found):
            return None, f"run {next(r for u, r in found if u is None)} has no per-unit '{key}' results", []
        # one fixed model: every run (e.g. each seed's analysis of one pretrained checkpoint) must agree
        first_ids, first_values = found[0][0]
        if any(
            list(ids) != list(first_ids) or not np.array_equal(values, first_values)
            for (ids, values), _ in found[1:]
        ):
            return None, f"the {len(found)} runs of {side.label(metric)} differ: not one fixed model", []
        arrays.append(found[0][0])
        runs += [r for _, r in found]
    ids_a, va = arrays[0]
    if arrays[1] is None:
        diffs, mean_b = va - float(con.b.value), float(con.b.value)
    else:
        ids_b, vb = arrays[1]
        common = sorted(set(ids_a) & set(ids_b))
        ia, ib = {u: i for i, u in enumerate(ids_a)}, {u: i for i, u in enumerate(ids_b)}
        va = np.asarray([va[ia[u]] for u in common], float)
        vb = np.asarray([vb[ib[u]] for u in common], float)
        diffs, mean_b = va - vb, float(vb.mean()) if len(vb) else float("nan")
    diffs = diffs[np.isfinite(diffs)]
    if diffs.size < 10:
        return None, f"only {diffs.size} paired units with finite values (needs ≥ 10)", runs
    if np.ptp(diffs) == 0:
        return None, f"the difference is {diffs[0]:+.4g} on every unit", runs
    result = _unit_test(diffs, relation, margin)
    result.mean_b = mean_b
    return result, "", runs


def _evaluate_contrasts(claim: Claim, spec: FamilySpec, setting: dict[str, Any], df: pd.DataFrame) -> Row:
    contrasts, metric, relation, how, note = _setup(claim, spec, df)
    row = Row(claim, setting, UNTESTABLE, reason=note)
    if not contrasts:
        row.reason = "no magnitude-preserving variant among these runs to compare with cosine"
        return row
    run_test = _unit_contrast if claim.level == "unit" else _seed_contrast
    results, problems, runs = [], [], []
    for con in contrasts:
        label = f"{con.a.label(metric)} − {con.b.label(metric)}"
        result, why, used = run_test(con, metric, relation, claim.margin, df)
        runs += used
        if result is None:
            problems.append(f"{label}: {why}")
            row.contrasts.append({"contrast": label, "reason": why})
            continue
        results.append(result)
        row.contrasts.append(
            {
                "contrast": label,
                "metric": con.a.metric or metric,
                "effect": result.effect,
                "ci_low": result.ci95[0],
                "ci_high": result.ci95[1],
                "mean_b": result.mean_b,
                "n": result.n_seeds or result.n_units,
            }
        )
    row.runs = sorted(set(runs))
    row.scale = _scale_of(claim, spec, contrasts[0].a.metric or metric)
    if problems:
        row.reason = "; ".join(problems)
        return row
    row.verdict, row.p, per_contrast = decide(results, how)
    for detail, p in zip(row.contrasts, per_contrast, strict=True):
        detail["p"] = p
    sign = -1 if relation == "less" else 1
    # the headline contrast: for 'all' the weakest (it decides support), for 'any' the strongest
    pick = min if how == "all" else max
    head = pick(results, key=lambda t: sign * t.effect)
    row.effect, (row.ci_low, row.ci_high), row.baseline = head.effect, head.ci95, head.mean_b
    row.test = head.test + (
        f"; {how} of {len(results)} contrasts" + (" (intersection-union)" if how == "all" else " (Holm)")
        if len(results) > 1
        else ""
    )
    row.n_seeds = min(t.n_seeds for t in results)
    row.n_units = min(t.n_units for t in results)
    weakest = max(results, key=lambda t: t.mde)
    row.mde, row.sd = weakest.mde, weakest.sd
    row.relative = all(
        not c.b.is_constant
        and (c.a.metric or metric) in spec.metrics
        and (c.b.metric or metric) in spec.metrics
        for c in contrasts
    )
    return row


def _mean_metric(runs: pd.DataFrame, name: str) -> float:
    """Mean of a metric over runs, ignoring runs where it is missing or not finite (NaN: none)."""
    vals = [(m or {}).get(name) for m in runs["metrics"]]
    vals = [float(v) for v in vals if isinstance(v, (int, float)) and math.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def _seed_predictions(
    claim: Claim, spec: FamilySpec, df: pd.DataFrame
) -> list[tuple[str, float, float, list[str]]]:
    """(prediction, outcome of the first side, of the second, runs) per seed of one setting, for every
    seed where both sides ran and differ; the prediction is a side, or "" (abstained).

    The prediction at a seed: the sign of the ``choice`` metric (+1 the first of ``scores``' sides, -1
    the second, 0 no preference), or else the side with the lower ``scores`` metric. It comes from data
    no compared run trained on, so every run of the seed that carries it records the same one. The
    truth: the side whose runs score higher on the claim's metric (default: the task's primary metric)."""
    (s1, k1), (s2, k2) = claim.scores.items()
    out = []
    for _, part in df.groupby("seed"):
        metric = claim.metric or spec.primary_metric_of(part["params"].iloc[0])
        out1 = _mean_metric(part[part["variant"] == s1], metric)
        out2 = _mean_metric(part[part["variant"] == s2], metric)
        if claim.choice:
            choice = _mean_metric(part, claim.choice)
            predicted = None if not math.isfinite(choice) else s1 if choice > 0 else s2 if choice < 0 else ""
        else:
            score1, score2 = _mean_metric(part, k1), _mean_metric(part, k2)
            finite = math.isfinite(score1) and math.isfinite(score2) and score1 != score2
            predicted = (s1 if score1 < score2 else s2) if finite else None
        if predicted is None or not (math.isfinite(out1) and math.isfinite(out2)) or out1 == out2:
            continue
        runs = [f"{r['family']}/{r['run_id']}" for _, r in part[part["variant"].isin([s1, s2])].iterrows()]
        out.append((predicted, out1, out2, runs))
    return out


def _predictions(claim: Claim, spec: FamilySpec, df: pd.DataFrame) -> tuple[list[bool], int, list[str]]:
    """(hit per decided seed, abstentions, runs) of a predictor in one setting: does its answer at each
    seed match that seed's winner?"""
    (s1, _), (s2, _) = claim.scores.items()
    hits, abstained, runs = [], 0, []
    for predicted, out1, out2, seed_runs in _seed_predictions(claim, spec, df):
        runs += seed_runs
        if predicted == "":
            abstained += 1
        else:
            hits.append(predicted == (s1 if out1 > out2 else s2))
    return hits, abstained, runs


def _setting_vote(claim: Claim, spec: FamilySpec, df: pd.DataFrame) -> tuple[bool | None, list[str]]:
    """One answer for a whole setting (hit, or None: abstained or no seed): the side most of its seeds'
    decided answers name (a tie abstains), against the side with the higher mean over those seeds.

    Seeds of one setting are not independent trials of a predictor: with a pretrained encoder every seed
    sees the same input, and the winner is mostly the setting's, not the seed's; counting them would let
    one lucky setting decide a pooled test."""
    (s1, _), (s2, _) = claim.scores.items()
    seeds = _seed_predictions(claim, spec, df)
    runs = [r for *_, seed_runs in seeds for r in seed_runs]
    votes = [p for p, *_ in seeds if p]
    if not seeds or votes.count(s1) == votes.count(s2):
        return None, runs
    predicted = s1 if votes.count(s1) > votes.count(s2) else s2
    out1, out2 = np.mean([o for _, o, _, _ in seeds]), np.mean([o for _, _, o, _ in seeds])
    if out1 == out2:
        return None, runs
    return predicted == (s1 if out1 > out2 else s2), runs


def _evaluate_predictor(claim: Claim, spec: FamilySpec, setting: dict[str, Any], df: pd.DataFrame) -> Row:
    """Hit rate of a predictor against the side that won at each seed, binomial test against chance
    (0.5) over its decided predictions; abstentions are counted and reported, not scored."""
    hits, abstained, runs = _predictions(claim, spec, df)
    return _hit_rate_row(claim, setting, hits, abstained, runs)


def _hit_rate_row(
    claim: Claim,
    setting: dict[str, Any],
    hits: list[bool],
    abstained: int,
    runs: list[str],
    unit: str = "seed",
) -> Row:
    from scipy import stats as st

    row = Row(claim, setting, UNTESTABLE)
    row.runs, row.n_seeds = sorted(set(runs)), len(hits) + abstained
    (s1, _), (s2, _) = claim.scores.items()
    if not hits:
        row.reason = (
            f"the predictor abstained on all {abstained} {unit}(s)"
            if abstained
            else f"no seed with {s1} and {s2} runs that carry the predictor's output"
        )
        return row
    n, k = len(hits), sum(hits)
    res = st.binomtest(k, n, 0.5)
    ci = res.proportion_ci(0.95)
    row.effect, row.ci_low, row.ci_high, row.p = k / n, float(ci.low), float(ci.high), float(res.pvalue)
    row.test = f"binomial test of the hit rate against chance (0.5) over {n} decided {unit}s"
    row.ours = f"{k}/{n} correct" + (f", {abstained} abstained" if abstained else "")
    row.mde = _binomial_mde(n)
    if math.isnan(row.mde):
        row.reason = f"with {n} decided predictions not even a perfect predictor reaches p < {ALPHA}"
    row.verdict = (SUPPORTED if k / n > 0.5 else CONTRADICTED) if row.p < ALPHA else INCONCLUSIVE
    return row


def _evaluate_pooled_predictor(claim: Claim, records: pd.DataFrame) -> Row:
    """A predictor's hit rate over every setting of the listed families, one answer per setting
    (``_setting_vote``); a setting where it abstains is counted, not scored."""
    families = registry()
    hits, abstained, runs = [], 0, []
    for family in claim.families:
        spec = families[family]
        fam = records[records["family"] == family] if len(records) else records
        for _, df in _instances(replace(claim, family=family), spec, fam):
            hit, setting_runs = _setting_vote(claim, spec, df)
            runs += setting_runs
            if hit is not None:
                hits.append(hit)
            elif setting_runs:
                abstained += 1
    return _hit_rate_row(claim, {"families": ", ".join(claim.families)}, hits, abstained, runs, "setting")


@functools.lru_cache(maxsize=64)
def _binomial_mde(n: int) -> float:
    """The smallest true hit rate the binomial test detects with POWER at this n (NaN: none)."""
    from scipy import stats as st

    critical = next((k for k in range(n // 2, n + 1) if st.binomtest(k, n, 0.5).pvalue < ALPHA), None)
    if critical is None:
        return float("nan")
    for rate in np.linspace(0.5, 1.0, 101):
        if st.binom.sf(critical - 1, n, rate) >= POWER:
            return float(rate)
    return float("nan")


def _evaluate_correlation(claim: Claim, spec: FamilySpec, setting: dict[str, Any], df: pd.DataFrame) -> Row:
    """Pearson r across units (e.g. test sets) between x (mean over seeds, ``variant``'s runs) and the
    relative gain of y of ``variant`` over ``baseline``; permutation test."""
    from scipy import stats as st

    row = Row(claim, setting, UNTESTABLE)
    mine, base = df[df["variant"] == claim.variant], df[df["variant"] == claim.baseline]
    if mine.empty or base.empty:
        row.reason = f"needs runs of {claim.variant} and {claim.baseline}"
        return row
    row.runs = sorted(f"{r['family']}/{r['run_id']}" for _, r in pd.concat([mine, base]).iterrows())

    xs, ys = [], []
    for unit in mine["params"].iloc[0].get(claim.units_param) or []:
        x = _mean_metric(mine, claim.x.format(unit=unit))
        y1, y0 = _mean_metric(mine, claim.y.format(unit=unit)), _mean_metric(base, claim.y.format(unit=unit))
        if all(math.isfinite(v) for v in (x, y1, y0)) and y0 != 0:
            xs.append(x)
            ys.append((y1 - y0) / abs(y0))
    row.n_units = len(xs)
    x, y = np.asarray(xs), np.asarray(ys)
    if len(xs) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        row.reason = f"{len(xs)} {claim.units_param} with varying finite values: a correlation needs ≥ 3"
        return row
    res = st.permutation_test(
        (x,),
        lambda xv: st.pearsonr(xv, y).statistic,
        permutation_type="pairings",
        n_resamples=RESAMPLES,
        rng=np.random.default_rng(0),
    )
    row.effect, row.p = float(st.pearsonr(x, y).statistic), float(res.pvalue)
    if len(xs) > 3:
        ci = st.pearsonr(x, y).confidence_interval(0.95)
        row.ci_low, row.ci_high = float(ci.low), float(ci.high)
    row.test = f"Pearson r across {len(xs)} {claim.units_param}, permutation test"
    smallest_p = 2 / math.factorial(len(xs)) if math.factorial(len(xs)) <= RESAMPLES else 0.0
    if smallest_p >= ALPHA:
        row.reason = f"with {len(xs)} units the smallest attainable p is {smallest_p:.3g}: this design cannot reach significance"
    else:
        z = _normal_power_z() / math.sqrt(len(xs) - 3)
        row.mde = float(math.tanh(z))
    row.verdict = (SUPPORTED if row.effect > 0 else CONTRADICTED) if row.p < ALPHA else INCONCLUSIVE
    return row


EVALUATORS = {
    "contrast": _evaluate_contrasts,
    "rule": _evaluate_contrasts,
    "predictor": _evaluate_predictor,
    "correlation": _evaluate_correlation,
}


def evaluate(records: pd.DataFrame, claims: list[Claim] | None = None) -> pd.DataFrame:
    """Every claim against the records: one row per claim and setting, with a BH q over the rows.

    ``records``: ``collate.load_records`` output (columns family, run_id, variant, seed, params,
    metrics, record_dir). Nothing else is read, except the per-unit sidecars of ``level: unit`` claims.
    """
    claims = load_claims() if claims is None else claims
    families = registry()
    rows: list[Row] = []
    for claim in claims:
        if claim.family == POOLED:
            rows.append(_evaluate_pooled_predictor(claim, records))
            continue
        spec = families[claim.family]
        fam = records[records["family"] == claim.family] if len(records) else records
        instances = _instances(claim, spec, fam)
        if not instances:
            where = ", ".join(f"{k}={v}" for k, v in claim.where.items())
            reason = f"no {claim.family} runs" + (f" with {where}" if where else "")
            rows.append(Row(claim, dict(claim.where), UNTESTABLE, reason=reason))
            continue
        for setting, df in instances:
            reason = _unless_reason(claim, df)
            if reason:
                rows.append(Row(claim, setting, UNTESTABLE, reason=reason))
            else:
                rows.append(EVALUATORS[claim.kind](claim, spec, setting, df))
    return to_frame(rows)


COLUMNS = (
    "family",
    "id",
    "statement",
    "source",
    "stands_for",
    "kind",
    "setting",
    "verdict",
    "reason",
    "test",
    "effect",
    "ci_low",
    "ci_high",
    "p",
    "q_bh",
    "n_seeds",
    "n_units",
    "mde",
    "sd",
    "scale",
    "baseline",
    "ours",
    "relative",
    "paper",
    "paper_effect",
    "paper_relative",
    "runs",
    "contrasts",
)


def to_frame(rows: list[Row]) -> pd.DataFrame:
    from scipy.stats import false_discovery_control

    frame = pd.DataFrame(
        [
            {
                "family": r.claim.family,
                "id": r.claim.id,
                "statement": r.claim.statement,
                "source": r.claim.source,
                "stands_for": r.claim.stands_for,
                "kind": r.claim.kind,
                "setting": ", ".join(f"{k}={v}" for k, v in r.setting.items()),
                "verdict": r.verdict,
                "reason": r.reason,
                "test": r.test,
                "effect": r.effect,
                "ci_low": r.ci_low,
                "ci_high": r.ci_high,
                "p": r.p,
                "q_bh": float("nan"),
                "n_seeds": r.n_seeds,
                "n_units": r.n_units,
                "mde": r.mde,
                "sd": r.sd,
                "scale": r.scale,
                "baseline": r.baseline,
                "ours": r.ours,
                "relative": r.relative,
                "paper": paper_text(r.claim),
                "paper_effect": paper_effect(r.claim),
                "paper_relative": paper_relative(r.claim),
                "runs": r.runs,
                "contrasts": r.contrasts,
            }
            for r in rows
        ],
        columns=list(COLUMNS),
    )
    tested = frame["p"].notna() & (frame["verdict"] != UNTESTABLE)
    if tested.any():
        frame.loc[tested, "q_bh"] = false_discovery_control(
            frame.loc[tested, "p"].to_numpy(float), method="bh"
        )
    return frame


def power_table(frame: pd.DataFrame, planned: float = PLANNED_RELATIVE_EFFECT) -> pd.DataFrame:
    """Can the design decide each family's primary claim (its rule, per setting)? For each tested rule
    row: the smallest effect the design detects with POWER (as % of the baseline variant's metric), the
    planned effect (``planned`` x the baseline), whether the first is at most the second, and how many
    seeds (units, for a test over one fixed model's units) would detect the planned effect at the
    spread of paired differences observed here."""
    rules = frame[
        (frame["kind"] == "rule")
        & (frame["verdict"] != UNTESTABLE)
        & frame["mde"].map(math.isfinite)
        & frame["baseline"].map(lambda b: math.isfinite(b) and b != 0)
    ]
    rows = []
    for _, r in rules.iterrows():
        target = planned * abs(r["baseline"])
        by_units = not r["n_seeds"]
        n_now = r["n_units"] if by_units else r["n_seeds"]
        if not (math.isfinite(r["sd"]) and r["sd"] > 0):
            needed = float("nan")
        elif by_units:  # the unit-level test's normal approximation, as in _unit_test
            needed = math.ceil((_normal_power_z() * r["sd"] / target) ** 2)
        else:
            needed = _seeds_to_detect(target, r["sd"])
        rows.append(
            {
                "family": r["family"],
                "setting": r["setting"],
                "verdict": r["verdict"],
                "replicates": f"{n_now} {'units' if by_units else 'seeds'}",
                "effect (% of baseline)": 100 * r["effect"] / abs(r["baseline"]),
                "detectable (% of baseline)": 100 * r["mde"] / abs(r["baseline"]),
                "planned (% of baseline)": 100 * planned,
                "decides the plan": bool(r["mde"] <= target),
                "replicates for the plan": needed,
            }
        )
    return pd.DataFrame(rows)


def _seeds_to_detect(effect: float, sd: float) -> int:
    """The fewest seeds at which the paired t-test's detectable effect (``_detectable_dz(n) * sd``, which
    falls as n grows) is at most ``effect``: doubling, then bisection."""

    def enough(n: int) -> bool:
        return _detectable_dz(n) * sd <= effect

    if enough(2):
        return 2
    low, high = 2, 4
    while not enough(high):
        low, high = high, high * 2
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid, high)
    return high


def paper_effect(claim: Claim) -> float:
    """The paper's own effect for the claim (a − b in the paper's units), where it gives it."""
    p = claim.paper
    if "effect" in p:
        return float(p["effect"])
    if "a" in p and "b" in p:
        return float(p["a"]) - float(p["b"])
    return float("nan")


def paper_relative(claim: Claim) -> float:
    """The paper's effect as % of its second number (NaN where it does not give both)."""
    p = claim.paper
    return (
        100 * (float(p["a"]) - float(p["b"])) / abs(float(p["b"]))
        if "a" in p and p.get("b")
        else float("nan")
    )


def paper_text(claim: Claim) -> str:
    p = claim.paper
    text = (
        f"{p['a']:g} vs {p['b']:g}"
        if "a" in p and "b" in p
        else (f"{p['effect']:+g}" if "effect" in p else "")
    )
    return (text + (f" ({p['note']})" if p.get("note") else "")).strip()


def verdict_counts(frame: pd.DataFrame) -> dict[str, int]:
    return {v: int((frame["verdict"] == v).sum()) for v in VERDICTS}


def null_redraw(records: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """The records with every variant redrawn from one distribution: within each family, setting (grid
    axes) and seed, the variant labels are shuffled among the runs. A calibrated engine then finds
    (almost) no variant effect; claims that compare metrics within one run (e.g. one model scored two
    ways) or against a constant are not about variants and keep their verdicts."""
    rng = np.random.default_rng(seed)
    families = registry()
    keys = [
        (family, _axes_key(params, families[family].grid_axes), s)
        for family, params, s in zip(records["family"], records["params"], records["seed"], strict=True)
    ]
    labels = records["variant"].to_numpy(copy=True)
    for key in sorted(set(keys)):
        idx = [i for i, k in enumerate(keys) if k == key]
        labels[idx] = labels[rng.permutation(idx)]
    out = records.copy()
    out["variant"] = labels
    out["params"] = [{**p, "variant": v} for p, v in zip(out["params"], labels, strict=True)]
    return out
