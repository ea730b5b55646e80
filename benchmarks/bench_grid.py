"""Grid scoring overhead vs the stock path (a plain matmul), at shapes typical of each family.

    .venv/bin/python benchmarks/bench_grid.py [--device cuda] [--quick]

Prints one row per (family shape, variant): median time of ``embsym_lib.similarity.pairwise`` (or
``paired``), median time of the library's stock scoring (``q @ d.T``, or ``(q*d).sum(-1)``; for cosine
the stock path is ``F.normalize`` on both sides then matmul, as sentence-transformers' ``cos_sim``
does), and their ratio. Timings by torch.utils.benchmark (warm-up, repeated blocks, median).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch.utils.benchmark import Timer

from embsym_lib.similarity import FIXED_VARIANTS, make_similarity

# (family, N queries, M candidates, D dims, paired?)
SHAPES = [
    ("retrieval: batch of queries vs corpus block", 256, 20_000, 384, False),
    ("retrieval training: in-batch", 128, 128, 768, False),
    ("sts: pair scores", 64, 64, 384, True),
    ("clip: in-batch image x text", 128, 128, 512, False),
    ("kg: (h,r) vs all entities (FB15k-237)", 512, 14_541, 200, False),
    ("fewshot: queries x prototypes", 75, 5, 1600, False),
    ("recsys: users x all items (ml-1m)", 2048, 3706, 64, False),
]


def stock(q, d, variant, paired):
    if variant == "cosine":
        q, d = F.normalize(q, dim=-1), F.normalize(d, dim=-1)
    return (q * d).sum(-1) if paired else q @ d.T


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="fewer repeats (for a smoke run)")
    args = ap.parse_args()
    min_run = 0.05 if args.quick else 0.5
    print(
        f"device: {args.device}"
        + (
            f" ({torch.cuda.get_device_name(0)})"
            if args.device == "cuda"
            else f", {torch.get_num_threads()} threads"
        )
    )
    print(
        f"{'shape':44s} {'N x M x D':>20s} {'variant':8s} {'grid (ms)':>10s} {'stock (ms)':>10s} {'ratio':>6s}"
    )
    for name, n, m, dim, paired in SHAPES:
        g = torch.Generator().manual_seed(0)
        q = (torch.randn(n, dim, generator=g) * 5).to(args.device)
        d = (torch.randn(n if paired else m, dim, generator=g) * 5).to(args.device)
        for variant in FIXED_VARIANTS:
            sim = make_similarity(variant)
            fn = sim.paired if paired else sim.pairwise
            t_grid = Timer("fn(q, d)", globals={"fn": fn, "q": q, "d": d}).blocked_autorange(
                min_run_time=min_run
            )
            t_stock = Timer(
                "stock(q, d, v, p)", globals={"stock": stock, "q": q, "d": d, "v": variant, "p": paired}
            ).blocked_autorange(min_run_time=min_run)
            ratio = t_grid.median / t_stock.median
            shape = f"{n} x {m} x {dim}" + (" (paired)" if paired else "")
            print(
                f"{name:44s} {shape:>20s} {variant:8s} {t_grid.median * 1e3:10.3f} {t_stock.median * 1e3:10.3f} "
                f"{ratio:6.2f}"
            )


if __name__ == "__main__":
    main()
