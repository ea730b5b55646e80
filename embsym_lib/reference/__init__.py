"""The paper's own numbers (arXiv 2602.09229 v1 tables), as shipped CSV files with comment headers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

REFERENCE_DIR = Path(__file__).resolve().parent
TABLES = tuple(sorted(p.stem for p in REFERENCE_DIR.glob("*.csv")))


def load_reference(table: str) -> pd.DataFrame:
    """One reference table by name: retrieval_main, retrieval_other, rag_sts_clip, clip_scratch, mechanism."""
    path = REFERENCE_DIR / f"{table}.csv"
    if not path.exists():
        raise ValueError(f"unknown reference table {table!r}; valid tables are: {', '.join(TABLES)}")
    return pd.read_csv(path, comment="#")


def load_mechanism() -> pd.DataFrame:
    """The paper's mechanism and significance numbers (Tables 3, 6, 18, 19a/b, 22, 23), one row per
    (table, encoder, setting, quantity, variant). ``table`` is read as text: "19a" and "3" are both names."""
    return load_reference("mechanism").astype({"table": str})


# Readable names for mechanism.csv's encoder and setting ("<regime>:<subject>") codes; a code not listed
# (a dataset name such as robotics) is shown as it is.
MECHANISM_NAMES = {
    "contriever": "Contriever",
    "retromae": "RetroMAE",
    "e5_with_normalize": "E5 (with Normalize)",
    "e5_without_normalize": "E5 (Normalize stripped)",
    "clip-vit-b-32": "CLIP ViT-B/32 (OpenAI weights)",
    "finetuned": "fine-tuned",
    "scratch": "from scratch",
    "dot_trained": "dot-trained",
    "zero_shot": "zero-shot",
    "all": "all categories",
    "all_mean": "mean over all datasets",
    "all_but_pony": "all datasets but Pony",
    "bright": "BRIGHT",
    "bright_mean": "mean over BRIGHT",
    "beir": "BEIR",
    "trec_dl": "TREC DL",
    "multihop": "multi-hop",
    "validation": "validation set",
    "coco": "MS-COCO",
}


def readable_setting(setting: str) -> str:
    """``finetuned:all`` -> ``fine-tuned, all categories``."""
    return ", ".join(MECHANISM_NAMES.get(part, part) for part in setting.split(":") if part)


def paper_mechanism(quantities) -> pd.DataFrame:
    """The paper's mechanism rows of these quantities, in the file's order, labelled for a report: paper
    table, paper encoder, paper setting (readable), quantity, variant and ``paper``, the value as printed."""
    rows = load_mechanism()
    rows = rows[rows["quantity"].isin(list(quantities))].reset_index(drop=True)
    return pd.DataFrame(
        {
            "paper table": "Table " + rows["table"],
            "paper encoder": [MECHANISM_NAMES.get(e, e) for e in rows["encoder"]],
            "paper setting": [readable_setting(s) for s in rows["setting"]],
            "quantity": rows["quantity"],
            "variant": rows["variant"],
            "paper": rows["value"],
        }
    )


def mechanism_beside_ours(
    quantities, ours: dict[str, Any], value: Callable[[Any, str, str], str], nobody: Any
):
    """``paper_mechanism(quantities)``, then one column per group of our runs (``ours``: column -> runs),
    each cell ``value(runs, quantity, variant)``; without any group, one column "ours" for ``nobody`` (so
    that every row still says what we have: "not run")."""
    table = paper_mechanism(quantities)
    for column, runs in (ours or {"ours": nobody}).items():
        table[column] = [value(runs, q, v) for q, v in zip(table["quantity"], table["variant"], strict=True)]
    return table


def describe(table: str) -> str:
    """The table's comment header (where the numbers come from)."""
    path = REFERENCE_DIR / f"{table}.csv"
    return "\n".join(line[2:] for line in path.read_text().splitlines() if line.startswith("#"))
