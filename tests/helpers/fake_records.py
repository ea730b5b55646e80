"""Record frames shaped like ``collate.load_records`` output, built from numbers: the claims engine is
tested on them without training anything."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd


def frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """rows: dicts with family, variant, seed, params (grid axes and other parameters), metrics."""
    out = []
    for i, r in enumerate(rows):
        params = {"variant": r["variant"], "seed": r["seed"], "profile": "offline", **r.get("params", {})}
        out.append(
            {
                "family": r["family"],
                "profile": "offline",
                "run_id": r.get("run_id", f"run{i}-{r['variant']}-s{r['seed']}"),
                "variant": r["variant"],
                "seed": r["seed"],
                "status": "complete",
                "params": params,
                "metrics": r["metrics"],
                "curves": r.get("curves", {}),
                "extra": r.get("extra", {}),
                "record_dir": r.get("record_dir", ""),
            }
        )
    return pd.DataFrame(out)


def two_variant_runs(
    rng: np.random.Generator,
    *,
    family: str = "synthetic",
    params: dict[str, Any] | None = None,
    metric: str = "ndcg@10",
    variants: tuple[str, ...] = ("cosine", "qnorm"),
    effects: dict[str, float] | None = None,
    seeds: int = 3,
    level: float = 0.5,
    run_sd: float = 0.01,
    seed_sd: float = 0.01,
) -> pd.DataFrame:
    """One run per (variant, seed): metric = level + effect[variant] + a seed effect shared by every
    variant of that seed + a run's own noise (the training randomness a variant does not share)."""
    effects = effects or {}
    rows = []
    for s in range(seeds):
        shared = rng.normal(0, seed_sd)
        for v in variants:
            value = level + effects.get(v, 0.0) + shared + rng.normal(0, run_sd)
            rows.append(
                {
                    "family": family,
                    "variant": v,
                    "seed": s,
                    "params": dict(params or {}),
                    "metrics": {metric: value},
                }
            )
    return frame(rows)
