"""Functional symmetry: a formal decision procedure for "which variant does the rule predict".

The paper calls a task functionally symmetric when its aggregate scoring procedure treats the two
inputs as interchangeable. We make that a checkable property of a declared task:

A task declares the *scoring directions* its aggregate procedure (training objective and evaluation)
uses, each an ordered pair (query role, candidate role), with a weight, or declares that it scores
*unordered* pairs (a correlation over pairs, a threshold on s(a, b)). The task is

- **symmetric** iff it scores unordered pairs, or its weighted set of directions is closed under
  swapping the roles: for every (a -> b) with weight w there is (b -> a) with weight w, and the roles
  share one input space whenever the pairs are unordered. Swapping q and c then leaves the aggregate
  unchanged for any symmetric score function.
- **asymmetric** otherwise: some role is only ever the query (or has more weight as the query).

The paper's coarse rule: symmetric -> cosine; asymmetric -> a magnitude-preserving variant
(dot, qnorm, dnorm, learn).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .similarity import VARIANTS

MAGNITUDE_PRESERVING: tuple[str, ...] = ("dot", "qnorm", "dnorm", "learn")


@dataclass(frozen=True)
class TaskSymmetry:
    """How a task aggregates scores. ``directions`` maps (query_role, candidate_role) -> weight."""

    name: str
    directions: dict[tuple[str, str], float] = field(default_factory=dict)
    unordered_pairs: bool = False
    description: str = ""

    def __post_init__(self):
        if not self.unordered_pairs and not self.directions:
            raise ValueError(f"task {self.name!r}: declare scoring directions or unordered_pairs=True")
        for roles, weight in self.directions.items():
            if len(roles) != 2 or weight <= 0:
                raise ValueError(f"task {self.name!r}: bad direction {roles!r} with weight {weight!r}")

    @property
    def symmetric(self) -> bool:
        if self.unordered_pairs:
            return True
        return all(
            abs(self.directions.get((c, q), 0.0) - w) <= 1e-12 for (q, c), w in self.directions.items()
        )

    @property
    def query_role(self) -> str | None:
        """The role that is (most) the query in an asymmetric task; None when symmetric."""
        if self.symmetric:
            return None
        as_query: dict[str, float] = {}
        for (q, c), w in self.directions.items():
            as_query[q] = as_query.get(q, 0.0) + w
            as_query[c] = as_query.get(c, 0.0) - w
        return max(as_query, key=as_query.get)

    @property
    def verdict(self) -> str:
        return "symmetric" if self.symmetric else "asymmetric"

    def predicted_variants(self) -> tuple[str, ...]:
        """Variants the paper's coarse rule predicts to win on this task."""
        return ("cosine",) if self.symmetric else MAGNITUDE_PRESERVING

    def other_variants(self, variants: tuple[str, ...] = VARIANTS) -> tuple[str, ...]:
        predicted = self.predicted_variants()
        return tuple(v for v in variants if v not in predicted)


def asymmetric(name: str, query: str, candidate: str, description: str = "") -> TaskSymmetry:
    """A task whose only scoring direction is query -> candidate (retrieval, KG, recsys, few-shot)."""
    return TaskSymmetry(name, {(query, candidate): 1.0}, description=description)


def bidirectional(name: str, a: str, b: str, description: str = "") -> TaskSymmetry:
    """A task scored in both directions with equal weight (CLIP's symmetric loss and evaluation)."""
    return TaskSymmetry(name, {(a, b): 1.0, (b, a): 1.0}, description=description)


def unordered(name: str, description: str = "") -> TaskSymmetry:
    """A task scoring unordered pairs (STS correlation)."""
    return TaskSymmetry(name, unordered_pairs=True, description=description)
