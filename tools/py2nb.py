"""Build a notebook from a percent-format script: ``python tools/py2nb.py src.py notebooks/name.ipynb``.

Cells start with ``# %%`` (code), ``# %% [markdown]`` (markdown, lines prefixed by ``# ``) or
``# %% tags=["parameters"]`` (the papermill parameters cell). The .ipynb is what is committed;
outputs are always empty.
"""

from __future__ import annotations

import re
import sys

import nbformat

HEADER = re.compile(r"^# %%(?P<md> \[markdown\])?(?: tags=\[(?P<tags>[^\]]*)\])?\s*$")


def convert(text: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python", "version": "3.11"}
    cells: list[tuple[str, list[str], list[str]]] = []
    for line in text.splitlines():
        m = HEADER.match(line)
        if m:
            tags = [t.strip().strip("\"'") for t in (m["tags"] or "").split(",") if t.strip()]
            cells.append(("markdown" if m["md"] else "code", tags, []))
        elif cells:
            cells[-1][2].append(line)
    for kind, tags, lines in cells:
        while lines and not lines[-1].strip():
            lines.pop()
        if kind == "markdown":
            src = "\n".join(ln[2:] if ln.startswith("# ") else ln.lstrip("#") for ln in lines)
            cell = nbformat.v4.new_markdown_cell(src)
        else:
            cell = nbformat.v4.new_code_cell("\n".join(lines))
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i}"
    return nb


if __name__ == "__main__":
    src, dst = sys.argv[1], sys.argv[2]
    with open(src) as f:
        nbformat.write(convert(f.read()), dst)
    print(f"wrote {dst}")
