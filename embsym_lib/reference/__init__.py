"""The paper's own numbers (arXiv 2602.09229 v1 tables), as shipped CSV files with comment headers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

REFERENCE_DIR = Path(__file__).resolve().parent
TABLES = tuple(sorted(p.stem for p in REFERENCE_DIR.glob("*.csv")))


def load_reference(table: str) -> pd.DataFrame:
    """One reference table by name: retrieval_main, retrieval_other, rag_sts_clip, clip_scratch."""
    path = REFERENCE_DIR / f"{table}.csv"
    if not path.exists():
        raise ValueError(f"unknown reference table {table!r}; valid tables are: {', '.join(TABLES)}")
    return pd.read_csv(path, comment="#")


def describe(table: str) -> str:
    """The table's comment header (where the numbers come from)."""
    path = REFERENCE_DIR / f"{table}.csv"
    return "\n".join(line[2:] for line in path.read_text().splitlines() if line.startswith("#"))
