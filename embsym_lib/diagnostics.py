"""Diagnostics of embedding magnitude: Cohen's d, norm CV, cross-evaluation, and the two side predictors:
the Fisher condition number (``predict_side``) and the Fisher score test of each side's magnitude
(``magnitude_score_test``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .similarity import FIXED_VARIANTS, Similarity, as_similarity, pairwise

WARM_IMPORTS = ("sklearn.covariance",)  # Ledoit-Wolf shrinkage, imported where used
# a side predictor's answer as the number the claims engine reads (``*_prefers_qnorm`` metrics)
PREFERS_QNORM = {"qnorm": 1, "dnorm": -1, "none": 0}


def cohens_d(group_a: Iterable[float], group_b: Iterable[float]) -> float:
    """(mean_a - mean_b) / pooled SD, pooled SD = sqrt(((na-1)sa^2 + (nb-1)sb^2) / (na+nb-2)).

    Bands (Cohen): |d| >= 0.8 large, 0.5-0.8 medium, 0.2-0.5 small. NaN when either group has
    fewer than two values or both have zero spread.
    """
    a, b = np.asarray(list(group_a), dtype=float), np.asarray(list(group_b), dtype=float)
    if a.size < 2 or b.size < 2:
        return float("nan")
    pooled = np.sqrt(((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / (a.size + b.size - 2))
    if pooled == 0:
        return float("nan")
    return float((a.mean() - b.mean()) / pooled)


def effect_size_band(d: float) -> str:
    ad = abs(d)
    if np.isnan(ad):
        return "n/a"
    return "large" if ad >= 0.8 else "medium" if ad >= 0.5 else "small" if ad >= 0.2 else "negligible"


def relevance_magnitude_d(
    doc_norms: np.ndarray,
    relevant: Mapping[int, Iterable[int]],
    pool: str = "corpus",
    scores: np.ndarray | None = None,
    k: int = 100,
) -> float:
    """Cohen's d of candidate magnitudes, relevant vs irrelevant.

    ``relevant`` maps a query index to the indices of its relevant candidates; a candidate relevant to
    several queries counts once per query (the paper's per-pair view). The irrelevant pool (the paper
    leaves it open) is

    - ``"corpus"``: every candidate relevant to no query, once each;
    - ``"top_k"``: for each query, its top-``k`` candidates by ``scores`` [n_queries, n_candidates]
      that are not relevant to it: the hard, retrieved negatives the ranking actually competes with.
    """
    doc_norms = np.asarray(doc_norms, dtype=float)
    rel_norms = [doc_norms[j] for docs in relevant.values() for j in docs]
    if pool == "corpus":
        any_rel = np.zeros(doc_norms.size, dtype=bool)
        any_rel[[j for docs in relevant.values() for j in docs]] = True
        irr_norms = doc_norms[~any_rel]
    elif pool == "top_k":
        if scores is None:
            raise ValueError("pool='top_k' needs the score matrix")
        irr_norms = []
        for qi, docs in relevant.items():
            rel = set(docs)
            top = np.argsort(-scores[qi])[: k + len(rel)]
            irr_norms.extend(doc_norms[[j for j in top if j not in rel][:k]])
        irr_norms = np.asarray(irr_norms)
    else:
        raise ValueError(f"unknown irrelevant pool {pool!r}; valid pools are: corpus, top_k")
    return cohens_d(rel_norms, irr_norms)


def coefficient_of_variation(x: Iterable[float]) -> float:
    """sigma / mu (population SD) of a set of norms."""
    a = np.asarray(list(x), dtype=float)
    return float(a.std() / a.mean()) if a.size and a.mean() != 0 else float("nan")


def norm_stats(emb: torch.Tensor | np.ndarray) -> dict[str, float]:
    """Mean, SD, CV, min and max of the row norms of an embedding matrix."""
    n = torch.as_tensor(emb).float().norm(dim=-1).cpu().numpy()
    return {
        "mean": float(n.mean()),
        "std": float(n.std()),
        "cv": coefficient_of_variation(n),
        "min": float(n.min()),
        "max": float(n.max()),
    }


def cross_evaluate(
    evaluate: Callable[[str], float], variants: Iterable[str] = FIXED_VARIANTS
) -> dict[str, float]:
    """One row of the paper's cross-evaluation matrix: the run's trained model evaluated, by the family's
    own evaluation, under every fixed variant. ``evaluate(variant)`` scores the same embeddings with
    ``variant``: ``on_embeddings`` when a score matrix suffices, or the library's evaluator inside the
    adapter's ``scored_with`` context."""
    return {v: float(evaluate(v)) for v in variants}


def on_embeddings(
    q: torch.Tensor, d: torch.Tensor, metric: Callable[[torch.Tensor], float]
) -> Callable[[str], float]:
    """``evaluate`` for ``cross_evaluate`` from fixed embeddings: ``metric`` of the [N, M] score matrix."""
    return lambda variant: float(metric(pairwise(q, d, variant)))


def pair_gradients(
    q: torch.Tensor, d: torch.Tensor, similarity: str | Similarity, scale: float = 20.0
) -> torch.Tensor:
    """Gradients of one batch's in-batch InfoNCE loss L = sum_j L_j with respect to each pair's embedding
    coordinates theta_i = [q_i ; d_i], shape [B, 2D].

    Both sides get their complete gradient: dL/dq_i = dL_i/dq_i (q_i enters only its own softmax) and
    dL/dd_i = sum_j dL_j/dd_i (d_i is the positive of L_i and a negative in every other L_j). Giving the
    query side its whole softmax but the document side only its own positive term (an earlier
    definition) made the estimator see the two sides differently by construction.
    """
    sim = as_similarity(similarity)
    with torch.enable_grad():  # callers may sit inside no_grad (an evaluation step)
        q = q.detach().clone().requires_grad_(True)
        d = d.detach().clone().requires_grad_(True)
        loss = F.cross_entropy(scale * sim.pairwise(q, d), torch.arange(q.shape[0]), reduction="sum")
        grad_q, grad_d = torch.autograd.grad(loss, (q, d))
    return torch.cat([grad_q, grad_d], dim=-1)


def fisher_gradients(
    q: torch.Tensor, d: torch.Tensor, similarity: str | Similarity, scale: float = 20.0, batch_size: int = 64
) -> torch.Tensor:
    """``pair_gradients`` of consecutive batches of ``batch_size`` pairs (float64), stacked [n, 2D]."""
    q, d = q.detach().double(), d.detach().double()
    if not isinstance(similarity, str):
        similarity = similarity.double()
    if q.shape[0] < batch_size:
        raise ValueError(f"need at least batch_size={batch_size} pairs, got {q.shape[0]}")
    return torch.cat(
        [
            pair_gradients(q[i : i + batch_size], d[i : i + batch_size], similarity, scale)
            for i in range(0, q.shape[0] - batch_size + 1, batch_size)
        ]
    )


def shrunk_condition_number(g: np.ndarray) -> tuple[float, float]:
    """(kappa, shrinkage) of the Ledoit-Wolf estimate of the second moment F = E[g g^T] of the rows of
    ``g``: F_hat = (1 - a) G^T G / n + a (tr / p) I. Well defined with fewer rows than dimensions (the
    paper profile's 1,024 pairs in 2 x 768 dimensions), where the plain estimate is singular. Its
    eigenvalues come from the smaller of G^T G and G G^T."""
    from sklearn.covariance import ledoit_wolf_shrinkage

    n, p = g.shape
    a = float(ledoit_wolf_shrinkage(g, assume_centered=True))
    lam = np.linalg.eigvalsh(g @ g.T / n if n < p else g.T @ g / n)
    mu = float(lam.sum()) / p
    top = (1 - a) * lam.max() + a * mu
    low = a * mu if n < p else (1 - a) * lam.min() + a * mu  # n < p: p - n eigenvalues are exactly 0
    return float(top / low), a


def fisher_condition_number(
    q: torch.Tensor, d: torch.Tensor, similarity: str | Similarity, scale: float = 20.0, batch_size: int = 64
) -> dict[str, float]:
    """Condition number of the empirical Fisher information of InfoNCE in embedding space.

    Definition (the paper leaves it open; this is embsym's):

    - *Data*: aligned held-out pairs (q_i, d_i), embedded by an encoder that was **not** trained on
      them (e.g. the pretrained checkpoint, before any of the compared runs): the predictor is not
      circular.
    - *Parameters*: the embedding coordinates theta_i = [q_i ; d_i] in R^{2D}, not the encoder weights.
    - *Loss*: in-batch InfoNCE with ``scale`` under the variant's score, batches of ``batch_size``
      consecutive pairs (in-batch negatives only, as in training); each pair's gradient is that of the
      batch loss, complete on both sides (``pair_gradients``).
    - *Estimator*: the empirical Fisher F = mean_i g_i g_i^T, shrunk towards a multiple of the
      identity by Ledoit-Wolf (``shrunk_condition_number``): it needs many more pairs than its 2D
      dimensions otherwise; ``underdetermined`` says when there are fewer than 4 x 2D pairs (the
      shrinkage then carries the estimate, and the record says so).
    - *Condition number*: kappa = lambda_max / lambda_min of the shrunk estimate.
    """
    g = fisher_gradients(q, d, similarity, scale, batch_size)
    kappa, shrinkage = shrunk_condition_number(g.numpy())
    return {
        "kappa": kappa,
        "log10_kappa": float(np.log10(kappa)),
        "shrinkage": shrinkage,
        "n_pairs": int(g.shape[0]),
        "dims": int(g.shape[1]),
        "underdetermined": bool(g.shape[0] < 4 * g.shape[1]),
    }


def _log_kappa_ratio(q: torch.Tensor, d: torch.Tensor, scale: float, batch_size: int) -> tuple[float, dict]:
    gq = fisher_gradients(q, d, "qnorm", scale, batch_size).numpy()
    gd = fisher_gradients(q, d, "dnorm", scale, batch_size).numpy()
    (kq, aq), (kd, ad) = shrunk_condition_number(gq), shrunk_condition_number(gd)
    info = {"kappa_qnorm": kq, "kappa_dnorm": kd, "shrinkage_qnorm": aq, "shrinkage_dnorm": ad}
    info["n_pairs"], info["dims"] = gq.shape
    return float(np.log10(kq / kd)), info


def predict_side(
    q: torch.Tensor,
    d: torch.Tensor,
    scale: float = 20.0,
    batch_size: int = 64,
    n_permutations: int = 99,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, object]:
    """The Fisher predictor: which side to normalize (qnorm or dnorm), or no preference.

    The statistic is log10(kappa_qnorm / kappa_dnorm) (``fisher_condition_number``). The in-batch loss
    treats its two sides differently, so even when neither side's magnitude says anything the two
    kappas differ: that difference comes from the loss, not from the data. The predictor therefore
    compares the observed ratio with its distribution when the two sides' magnitudes are exchangeable:
    ``n_permutations`` copies of the pairs in which each pair's two norms are swapped at random
    (directions kept). Only a ratio in the outer ``alpha`` of that distribution predicts: below it,
    qnorm (normalizing the query side gives the better-conditioned Fisher); above it, dnorm; otherwise
    "none" (``prefers_qnorm`` +1, -1, 0; ``p_value`` two-sided).
    """
    q, d = q.detach().double(), d.detach().double()
    observed, info = _log_kappa_ratio(q, d, scale, batch_size)
    nq, nd = q.norm(dim=-1, keepdim=True), d.norm(dim=-1, keepdim=True)
    uq, ud = q / nq.clamp_min(1e-12), d / nd.clamp_min(1e-12)
    g = torch.Generator().manual_seed(seed)
    null = []
    for _ in range(n_permutations):
        swap = torch.rand(nq.shape, generator=g, dtype=torch.float64) < 0.5
        null.append(
            _log_kappa_ratio(
                uq * torch.where(swap, nd, nq), ud * torch.where(swap, nq, nd), scale, batch_size
            )[0]
        )
    null_arr = np.asarray(null)
    below = (1 + np.sum(null_arr <= observed)) / (n_permutations + 1)
    above = (1 + np.sum(null_arr >= observed)) / (n_permutations + 1)
    p_value = min(1.0, 2 * min(below, above))
    predicted = "none" if p_value >= alpha else ("qnorm" if below < above else "dnorm")
    return {
        **info,
        "log10_ratio": observed,
        "null_log10_ratio": (float(np.percentile(null_arr, 2.5)), float(np.percentile(null_arr, 97.5))),
        "p_value": float(p_value),
        "predicted": predicted,
        "prefers_qnorm": PREFERS_QNORM[predicted],
        "underdetermined": bool(info["n_pairs"] < 4 * info["dims"]),
    }


def _fit_temperature(cos: torch.Tensor, visible: torch.Tensor, targets: torch.Tensor) -> float:
    """The scale t that maximizes the cosine model's likelihood sum_i log softmax_j(t cos_ij)[target_i]
    (convex in t: one optimum)."""
    from scipy.optimize import minimize_scalar

    rows = torch.arange(cos.shape[0])

    def nll(log_t: float) -> float:
        logits = (np.exp(log_t) * cos).masked_fill(~visible, float("-inf"))
        return float(-(logits.log_softmax(-1)[rows, targets]).sum())

    return float(np.exp(minimize_scalar(nll, bounds=(-6.0, 10.0), method="bounded").x))


def _permutation_test(x: torch.Tensor, weights: torch.Tensor, n_permutations: int, g: torch.Generator):
    """Score U = sum_k x_k w_k against its distribution with x permuted: (U, z, one-sided p of U > 0).
    z divides by the permutation variance of U, which is the Fisher information of the exponent under
    the null (magnitudes exchangeable across the side's items)."""
    x = x - x.mean()
    observed = float(x @ weights)
    if float(x.abs().max()) < 1e-6:  # one magnitude for every item (a normalized encoder; float32 noise)
        return observed, float("nan"), 1.0
    variance = float((x @ x) * ((weights - weights.mean()) ** 2).sum() / max(len(x) - 1, 1))
    at_least = 0
    for start in range(0, n_permutations, 100):  # chunks: a paper-size side has ~15,000 items
        draws = torch.rand(min(100, n_permutations - start), len(x), generator=g, dtype=torch.float64)
        at_least += int((x[draws.argsort(dim=1)] @ weights >= observed - 1e-12 * abs(observed)).sum())
    p = (1 + at_least) / (n_permutations + 1)
    return observed, observed / variance**0.5, p


def magnitude_score_test(
    q: torch.Tensor,
    candidates: torch.Tensor,
    targets: torch.Tensor | None = None,
    visible: torch.Tensor | None = None,
    n_permutations: int = 999,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, object]:
    """The Fisher score test: does either side's magnitude add likelihood to the cosine model?

    Definition (embsym's; the paper leaves its predictor open). The grid's four fixed variants are the
    corners (a, b) in {0, 1}^2 of s_ij = t cos(q_i, c_j) |q_i|^a |c_j|^b (cosine (0, 0), qnorm (0, 1),
    dnorm (1, 0), dot (1, 1)). Under the softmax over each query's visible candidates (``visible``
    [N, M], default all) with its target ``targets[i]`` (default i: aligned pairs, the candidates the
    positives), fit t at cosine, then take Rao's score of each exponent there:

        U_a = sum_i log|q_i| sum_j (y_ij - p_ij) t cos_ij,   U_b = sum_j log|c_j| sum_i (y_ij - p_ij) t cos_ij.

    U_b > 0: candidates with larger norms are under-scored by direction alone (their magnitude carries
    label signal); U_a > 0: queries with larger norms want a sharper softmax (their magnitude carries how
    sure their answer is, the only thing a query's magnitude can change in its ranking). At the fitted t
    both are invariant to a common rescaling of a side. Each U is tested against its distribution with
    that side's norms permuted across its items (directions kept): exact under "magnitude carries
    nothing", whatever the loss does to the two sides. One-sided p-values, Bonferroni over the two sides
    (each at ``alpha`` / 2).

    Answer: keep the magnitude of each side whose test rejects; ``recommended`` the grid corner (keep the
    document's only: qnorm; the query's only: dnorm; both: dot; neither: cosine), ``predicted`` qnorm or
    dnorm when exactly one side is kept, else "none" (``prefers_qnorm`` +1, -1, 0).
    """
    q, c = q.detach().double().cpu(), candidates.detach().double().cpu()
    n, m = q.shape[0], c.shape[0]
    targets = torch.arange(n) if targets is None else targets.long().cpu()
    visible = torch.ones(n, m, dtype=torch.bool) if visible is None else visible.bool().cpu()
    if not visible[torch.arange(n), targets].all():
        raise ValueError("every query's target must be among its visible candidates")
    cos = F.normalize(q, dim=-1) @ F.normalize(c, dim=-1).T
    t = _fit_temperature(cos, visible, targets)
    p = (t * cos).masked_fill(~visible, float("-inf")).softmax(-1)
    y = F.one_hot(targets, m).double()
    residual = ((y - p) * t * cos).masked_fill(~visible, 0.0)
    seen = visible.any(0)
    g = torch.Generator().manual_seed(seed)
    log_q = q.norm(dim=-1).clamp_min(1e-12).log()
    log_c = c[seen].norm(dim=-1).clamp_min(1e-12).log()
    u_q, z_q, p_q = _permutation_test(log_q, residual.sum(1), n_permutations, g)
    u_d, z_d, p_d = _permutation_test(log_c, residual.sum(0)[seen], n_permutations, g)
    keep_query, keep_document = p_q < alpha / 2, p_d < alpha / 2
    recommended = {
        (False, False): "cosine",
        (False, True): "qnorm",
        (True, False): "dnorm",
        (True, True): "dot",
    }[(keep_query, keep_document)]
    predicted = recommended if recommended in ("qnorm", "dnorm") else "none"
    return {
        "temperature": t,
        "u_query": u_q,
        "u_document": u_d,
        "z_query": z_q,
        "z_document": z_d,
        "p_query": p_q,
        "p_document": p_d,
        "keep_query": keep_query,
        "keep_document": keep_document,
        "recommended": recommended,
        "predicted": predicted,
        "prefers_qnorm": PREFERS_QNORM[predicted],
        "n_queries": n,
        "n_candidates": int(seen.sum()),
    }


def _side_predictor_wanted(params: dict, variants: str) -> bool:
    """A side predictor runs in the runs of its ``variants`` parameter that train (an evaluation-only run
    has no training to predict: retrieval's PT column) and have held-out pairs."""
    # the synthetic testbed has no fisher_pairs: its held-out queries (n_heldout) are always there
    return (
        bool(params.get("fisher_pairs", True))
        and params.get("train", True)
        and params["variant"] in params[variants]
    )


def fisher_wanted(params: dict) -> bool:
    """Whether this run computes the Fisher predictor: its input is the untrained model at this seed, the
    same for every variant, so only the runs of ``fisher_variants`` (default: cosine) pay for it."""
    return _side_predictor_wanted(params, "fisher_variants")


def score_test_wanted(params: dict) -> bool:
    """Whether this run computes the Fisher score test: its input is the trained model of a run of
    ``score_test_variants`` (default dot: both magnitudes free, and neither side the test chooses
    between) on held-out pairs. Before training a from-scratch model's magnitudes carry nothing a test
    could find."""
    return _side_predictor_wanted(params, "score_test_variants")


def wants_heldout_pairs(params: dict) -> bool:
    """Whether a run needs held-out pairs (either side predictor)."""
    return fisher_wanted(params) or score_test_wanted(params)


def fisher_metrics(fisher: dict[str, object]) -> dict[str, float]:
    """The side predictors' outputs as record metrics, the same names in every family (the claims engine
    reads ``fisher_prefers_qnorm`` and ``fisher_score_prefers_qnorm``: +1 qnorm, -1 dnorm, 0 no
    preference): ``predict_side``'s keys at the top of ``fisher``, ``magnitude_score_test``'s under
    ``score_test``; empty for what did not run."""
    metrics = {}
    if "kappa_qnorm" in fisher:
        metrics.update(
            {
                "fisher_log10_kappa_qnorm": float(np.log10(fisher["kappa_qnorm"])),
                "fisher_log10_kappa_dnorm": float(np.log10(fisher["kappa_dnorm"])),
                "fisher_log10_ratio": float(fisher["log10_ratio"]),
                "fisher_p_value": float(fisher["p_value"]),
                "fisher_prefers_qnorm": float(fisher["prefers_qnorm"]),
                "fisher_underdetermined": float(fisher["underdetermined"]),
            }
        )
    score = fisher.get("score_test") or {}
    if score:
        metrics.update(
            {f"fisher_score_{k}": float(score[k]) for k in ("z_query", "z_document", "p_query", "p_document")}
        )
        metrics["fisher_score_prefers_qnorm"] = float(score["prefers_qnorm"])
        metrics["fisher_score_keep_query"] = float(score["keep_query"])
        metrics["fisher_score_keep_document"] = float(score["keep_document"])
    return metrics


def score_test_summary(extras: Iterable[Mapping | None]) -> dict[str, object]:
    """The Fisher score tests among runs' record ``extra``s, for a report row: the grid corner it
    recommended by run (counts), the majority, and the mean z of each side; empty without one."""
    tests = [((e or {}).get("fisher") or {}).get("score_test") for e in extras]
    tests = [t for t in tests if t]
    if not tests:
        return {}
    votes = pd.Series([t["recommended"] for t in tests]).value_counts()
    return {
        "score test recommends": f"{votes.index[0]} ({votes.iloc[0]}/{len(tests)} runs)",
        "by run": votes.to_dict(),
        "mean z query": float(np.nanmean([t["z_query"] for t in tests])),
        "mean z document": float(np.nanmean([t["z_document"] for t in tests])),
    }
