"""The layers of docs/architecture.md hold: no module imports from a layer below it (lazy imports inside
functions count too), and every module belongs to a layer."""

from __future__ import annotations

import ast
from pathlib import Path

import embsym_lib

ROOT = Path(embsym_lib.__file__).resolve().parent
# From the top of the path (params -> ... -> report) to the bottom; a module may import its own layer
# and the layers listed before it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "base",
        (
            "__init__",
            "schema",
            "similarity",
            "records",
            "runtime",
            "symmetry",
            "stats",
            "ir_metrics",
            "reference",
        ),
    ),
    ("analysis", ("losses", "diagnostics", "testbed", "distributed", "data")),
    ("adapters", ("adapters",)),
    ("families", ("families",)),
    ("runs", ("params", "notebook", "warm_kernels", "runner", "fetch")),
    ("report", ("claims", "report", "collate", "cli")),
]


def layer_of(module: str) -> int:
    """Index of the layer of a dotted module name inside embsym_lib (first component decides)."""
    head = module.split(".")[0]
    for i, (_, names) in enumerate(LAYERS):
        if head in names:
            return i
    raise AssertionError(f"embsym_lib.{module} belongs to no layer of docs/architecture.md")


def imported_modules(path: Path) -> set[str]:
    """embsym_lib modules imported anywhere in a file, as dotted names relative to embsym_lib."""
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - (node.level - 1)])
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
                if not node.module:  # "from . import x": x may be a module
                    out |= {".".join([*base, a.name]) for a in node.names}
                    continue
                out.add(target)
            elif node.module and node.module.startswith("embsym_lib."):
                out.add(node.module.removeprefix("embsym_lib."))
        elif isinstance(node, ast.Import):
            out |= {
                a.name.removeprefix("embsym_lib.") for a in node.names if a.name.startswith("embsym_lib.")
            }
    return {m for m in out if m}


def test_no_import_reaches_back_up():
    violations = []
    for path in sorted(ROOT.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        mine = layer_of(module)
        for target in imported_modules(path):
            if layer_of(target) > mine:
                violations.append(
                    f"{module} ({LAYERS[mine][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
                )
    assert violations == []


def test_family_modules_stay_small():
    big = {
        str(p.relative_to(ROOT)): n
        for p in (ROOT / "families").rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 420
    }
    assert big == {}, "a family module over ~400 lines is doing someone else's job"
