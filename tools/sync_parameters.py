"""Write what derives from the families' parameter schemas: each notebook's ``parameters`` cell and
``docs/parameters.md``. ``python tools/sync_parameters.py`` after changing a schema (``... FAMILY``: that
family's notebook only); ``--check`` only says what is out of date (exit 1), which the test suite runs."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

from embsym_lib import schema
from embsym_lib.families import registry
from embsym_lib.params import NOTEBOOKS_DIR

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "parameters.md"

GLOSSARY = """| name | meaning in every family |
|---|---|
| `variant`, `seed`, `profile`, `run_dir` | set by the runner: the grid variant, the training seed, the parameter set, the run's folder |
| `device`, `threads` | where the run trains (`cpu`, `cuda`, `auto`) and how many CPU threads torch uses; set once per run |
| `lr`, `gamma_lr` | the optimizer's learning rate; the learning rate of learn's two γ (0: the same as `lr`) |
| `warmup_ratio` | share of the training steps with a linear warmup |
| `epochs`, `batch_size`, `eval_batch_size` | passes over the training data; training batch (in-batch negatives); encoding/evaluation batch |
| `scale` | the logit scale α = 1/τ applied to every variant (the paper: 20) |
| `embedding_dim` | the embedding dimension of a model built here |
| `data_dir` | a local folder with a data set in its native format (relative paths: to the project root) |
"""


def notebook_cell(spec) -> tuple[Path, nbformat.NotebookNode, nbformat.NotebookNode]:
    path = NOTEBOOKS_DIR / spec.notebook
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise SystemExit(f"{path}: expected one cell tagged 'parameters', found {len(cells)}")
    return path, nb, cells[0]


def reference() -> str:
    parts = [
        "# Parameters\n",
        "Generated from the families' schemas (`embsym_lib/families/<name>/spec.py`) by "
        "`tools/sync_parameters.py`; do not edit by hand. The defaults are the offline profile; "
        "`params/<profile>/<family>.yaml` holds the grid and the deviations from them. Every value is "
        "checked before any compute (`embsym_lib/schema.py`).\n",
        "## Glossary\n",
        GLOSSARY,
    ]
    for name, spec in registry().items():
        if spec.params is None:
            continue
        parts.append(f"## {name}\n")
        parts.append("| parameter | type | default | range | meaning |\n|---|---|---|---|---|")
        for row in schema.reference_rows(spec.params):
            cells = [
                f"`{row['name']}`",
                row["type"],
                f"`{row['default']}`",
                row["constraint"],
                row["meaning"],
            ]
            parts.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        parts.append("")
    return "\n".join(parts)


def main(check: bool, only: list[str]) -> int:
    stale = []
    for name, spec in registry().items():
        if spec.params is None or (only and name not in only):
            continue
        path, nb, cell = notebook_cell(spec)
        wanted = schema.parameters_cell(spec.params, name)
        if cell.source != wanted:
            stale.append(str(path.relative_to(ROOT)))
            if not check:
                cell.source = wanted
                nbformat.write(nb, path)
    text = reference()
    if not only and (not DOC.exists() or DOC.read_text() != text):
        stale.append(str(DOC.relative_to(ROOT)))
        if not check:
            DOC.write_text(text)
    if stale:
        print(("out of date: " if check else "wrote: ") + ", ".join(stale))
    return 1 if (check and stale) else 0


if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(main("--check" in args, [a for a in args if not a.startswith("--")]))
