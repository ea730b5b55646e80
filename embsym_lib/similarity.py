"""The 2x2 normalization grid (plus ``learn``): the one place where scores are computed.

A query embedding ``q`` is scored against a candidate embedding ``d``:

=========  ===========================  =======================================
variant    score s(q, d)                equals
=========  ===========================  =======================================
cosine     n(q) . n(d)                  cos(theta)
dot        q . d                        |q| |d| cos(theta)
qnorm      n(q) . d                     |d| cos(theta)
dnorm      q . n(d)                     |q| cos(theta)
learn      (q/|q|^gq) . (d/|d|^gd)      |q|^(1-gq) |d|^(1-gd) cos(theta)
=========  ===========================  =======================================

with n(x) = x / max(|x|, eps). The query is *always the first argument*. Only cosine and dot
are symmetric (s(a, b) == s(b, a)); qnorm and dnorm need a declared query side.

For a per-query ranking metric qnorm ranks like dot and dnorm like cosine (the query-side factor is a
positive constant within one query), so they differ only through training or through cross-query
metrics (correlations, thresholds).
"""

from __future__ import annotations

import torch
from torch import nn

FIXED_VARIANTS: tuple[str, ...] = ("cosine", "dot", "qnorm", "dnorm")
VARIANTS: tuple[str, ...] = (*FIXED_VARIANTS, "learn")
SYMMETRIC_VARIANTS: frozenset[str] = frozenset({"cosine", "dot"})
EPS = 1e-8

# (normalize query side, normalize candidate side) for each fixed variant.
NORMALIZED_SIDES: dict[str, tuple[bool, bool]] = {
    "cosine": (True, True),
    "dot": (False, False),
    "qnorm": (True, False),
    "dnorm": (False, True),
}
# The learn variant's gamma pair that reproduces each fixed variant.
CORNERS: dict[str, tuple[float, float]] = {
    name: (float(nq), float(nd)) for name, (nq, nd) in NORMALIZED_SIDES.items()
}


class UnknownVariantError(ValueError):
    """Raised for a variant name that is not in the grid."""


def check_variant(variant: str, allowed: tuple[str, ...] = VARIANTS) -> str:
    """Return ``variant`` if it is one of ``allowed``; otherwise raise one clear error."""
    if not isinstance(variant, str) or variant not in allowed:
        raise UnknownVariantError(
            f"unknown similarity variant {variant!r}; valid variants are: {', '.join(allowed)}"
        )
    return variant


def is_symmetric(variant: str) -> bool:
    """Whether s(a, b) == s(b, a) for every a, b under ``variant`` (learn: only when gq == gd)."""
    return check_variant(variant) in SYMMETRIC_VARIANTS


def _working_dtype(x: torch.Tensor) -> torch.dtype:
    """float16/bfloat16 are computed in float32 (an fp16 eps of 1e-8 underflows to 0, a dot product of
    two norm-300 vectors overflows fp16); float32 and float64 stay as they are."""
    return torch.promote_types(x.dtype, torch.float32) if x.is_floating_point() else torch.float32


def normalize(x: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """L2-normalize the last dimension; a zero vector stays zero instead of producing NaN (in any dtype)."""
    w = x.to(_working_dtype(x))
    return (w / w.norm(dim=-1, keepdim=True).clamp_min(eps)).to(x.dtype)


def power_normalize(x: torch.Tensor, gamma: torch.Tensor | float, eps: float = EPS) -> torch.Tensor:
    """x / |x|^gamma: gamma=1 is ``normalize``, gamma=0 the identity."""
    w = x.to(_working_dtype(x))
    return (w / w.norm(dim=-1, keepdim=True).clamp_min(eps).pow(gamma)).to(x.dtype)


def prepare(q: torch.Tensor, d: torch.Tensor, variant: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the fixed variant's per-side normalization; the score is then a plain inner product."""
    norm_q, norm_d = NORMALIZED_SIDES[check_variant(variant, FIXED_VARIANTS)]
    return (normalize(q) if norm_q else q), (normalize(d) if norm_d else d)


def _inner(qp: torch.Tensor, dp: torch.Tensor, all_pairs: bool) -> torch.Tensor:
    """The inner products of prepared sides: every pair [N, M] or aligned pairs [N]. Half-precision
    inputs are multiplied in float32 (and give float32 scores): their products overflow fp16."""
    if qp.dtype == torch.float16 or dp.dtype == torch.float16:
        qp, dp = qp.float(), dp.float()
    return qp @ dp.transpose(-1, -2) if all_pairs else (qp * dp).sum(-1)


def pairwise(q: torch.Tensor, d: torch.Tensor, variant: str) -> torch.Tensor:
    """Scores of every query against every candidate: q [N, D], d [M, D] -> [N, M]."""
    return _inner(*prepare(q, d, variant), all_pairs=True)


def paired(q: torch.Tensor, d: torch.Tensor, variant: str) -> torch.Tensor:
    """Scores of aligned pairs: q [N, D], d [N, D] -> [N]."""
    return _inner(*prepare(q, d, variant), all_pairs=False)


class Similarity(nn.Module):
    """A grid variant as a module, so adapters can hold any variant (fixed or learnable) alike.

    ``forward`` is ``pairwise``. Fixed variants have no parameters.
    """

    def __init__(self, variant: str):
        super().__init__()
        self.variant = check_variant(variant, FIXED_VARIANTS)

    def prepare(self, q: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return prepare(q, d, self.variant)

    def pairwise(self, q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        return _inner(*self.prepare(q, d), all_pairs=True)

    def paired(self, q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        return _inner(*self.prepare(q, d), all_pairs=False)

    def forward(self, q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        return self.pairwise(q, d)

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}"


class LearnableSimilarity(Similarity):
    """The ``learn`` variant: s = (q/|q|^gq) . (d/|d|^gd), gamma = sigmoid(raw), one per side.

    Both gammas start at 0.5 (raw = 0). ``from_gammas`` builds one at any point of the square, so
    the corners (1,1), (0,0), (1,0), (0,1) equal cosine, dot, qnorm, dnorm.
    """

    def __init__(self, init_gamma_q: float = 0.5, init_gamma_d: float = 0.5):
        nn.Module.__init__(self)
        self.variant = "learn"
        self.raw_gamma_q = nn.Parameter(torch.tensor(_logit(init_gamma_q)))
        self.raw_gamma_d = nn.Parameter(torch.tensor(_logit(init_gamma_d)))

    @property
    def gamma_q(self) -> torch.Tensor:
        return torch.sigmoid(self.raw_gamma_q)

    @property
    def gamma_d(self) -> torch.Tensor:
        return torch.sigmoid(self.raw_gamma_d)

    def gammas(self) -> dict[str, float]:
        return {"gamma_q": self.gamma_q.item(), "gamma_d": self.gamma_d.item()}

    def prepare(self, q: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return power_normalize(q, self.gamma_q), power_normalize(d, self.gamma_d)

    def extra_repr(self) -> str:
        g = self.gammas()
        return f"gamma_q={g['gamma_q']:.4f}, gamma_d={g['gamma_d']:.4f}"


class ScaleMatched(Similarity):
    """A variant with its scores divided by the stop-gradient batch mean of its un-normalized magnitude
    factor (|q| for a query side the variant does not normalize, |d| likewise, |q|^(1-gq) |d|^(1-gd) for
    learn), so every variant sees the same average logit scale (effective temperature) and only the
    relative magnitudes inside a batch remain: the referee's fixed-scale ablation."""

    def __init__(self, similarity: Similarity):
        nn.Module.__init__(self)
        self.similarity = similarity
        self.variant = similarity.variant

    def prepare(self, q: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        qp, dp = self.similarity.prepare(q, d)
        if isinstance(self.similarity, LearnableSimilarity):
            exp_q, exp_d = 1 - self.similarity.gamma_q, 1 - self.similarity.gamma_d
        else:
            norm_q, norm_d = NORMALIZED_SIDES[self.variant]
            exp_q, exp_d = float(not norm_q), float(not norm_d)
        factor = q.norm(dim=-1).pow(exp_q).mean() * d.norm(dim=-1).pow(exp_d).mean()
        return qp / factor.detach().clamp_min(EPS), dp

    def gammas(self) -> dict[str, float]:
        return self.similarity.gammas()

    def extra_repr(self) -> str:
        return f"scale-matched {self.variant}"


def _logit(p: float) -> float:
    """Inverse sigmoid; the corners 0 and 1 map to +-inf so that sigmoid gives them exactly."""
    if p <= 0.0:
        return float("-inf")
    if p >= 1.0:
        return float("inf")
    return float(torch.logit(torch.tensor(p, dtype=torch.float64)))


def as_similarity(similarity: str | Similarity) -> Similarity:
    """A variant name or an existing Similarity module (e.g. a trained ``learn``), as a module."""
    return make_similarity(similarity) if isinstance(similarity, str) else similarity


def make_similarity(variant: str, **learn_kwargs) -> Similarity:
    """The module for ``variant``: a fixed ``Similarity`` or a fresh ``LearnableSimilarity``."""
    if check_variant(variant) == "learn":
        return LearnableSimilarity(**learn_kwargs)
    return Similarity(variant)
