"""Kernels forked from a warm server (embsym_lib.warm_kernels) change how a run's process starts, nothing
else: the same seed gives the same bits, figures still render inline, and anything unusual falls back to
a fresh kernel."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from conftest import TINY_SYNTHETIC

from embsym_lib import warm_kernels
from embsym_lib.params import NOTEBOOKS_DIR, expand
from embsym_lib.runner import run_grid


def test_a_server_preloads_exactly_the_notebooks_top_level_imports():
    modules = warm_kernels.notebook_imports(NOTEBOOKS_DIR / "kg.ipynb")
    assert modules[0] == "embsym_lib.notebook"
    assert {
        "?embsym_lib.families.kg.pipeline",
        "embsym_lib.families.kg",
        "matplotlib.pyplot",
        "pandas",
        "IPython.display",
    } <= set(modules)
    assert len(modules) == len(set(modules))


def test_what_a_run_imports_lazily_is_declared_and_importable():
    """The server also imports what the notebook's modules import at run time (``WARM_IMPORTS``); a
    name that does not import would stop every warm server from starting, so each is imported here."""
    script = (
        "import json\n"
        "from embsym_lib import warm_kernels\n"
        "from embsym_lib.params import NOTEBOOKS_DIR\n"
        "names = []\n"
        "for nb in ('retrieval.ipynb', 'kg.ipynb', 'fewshot.ipynb'):\n"
        "    names += warm_kernels.preload(warm_kernels.notebook_imports(NOTEBOOKS_DIR / nb))\n"
        "import torch\n"
        "print(json.dumps([names, torch.cuda.is_initialized()]))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    names, cuda_initialized = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"torch._dynamo", "sentence_transformers", "pykeen.pipeline", "learn2learn"} <= set(names)
    assert not cuda_initialized


def _outputs_of(notebook):
    nb = json.loads(notebook.read_text())
    return [
        sorted(o.get("data", {})) or [o["output_type"]]
        for c in nb["cells"]
        if c["cell_type"] == "code"
        for o in c.get("outputs", [])
    ]


@pytest.mark.slow
def test_warm_and_fresh_kernels_give_the_same_bits(tmp_path):
    params_dir = tmp_path / "params"
    (params_dir / "offline").mkdir(parents=True)
    profile = {
        "variants": ["learn"],
        "seeds": [0],
        "grid": {"task": ["asymmetric"]},
        "parameters": TINY_SYNTHETIC,
    }
    (params_dir / "offline" / "synthetic.yaml").write_text(yaml.safe_dump(profile))
    points = expand("synthetic", "offline", params_dir=params_dir)
    fresh = run_grid(points, tmp_path / "fresh", warm=False)
    warm = run_grid(points * 2, tmp_path / "warm", warm=True)  # the second is skipped: resume holds
    assert [r.status for r in fresh] == ["complete"] and [r.status for r in warm] == ["complete", "skipped"]
    assert fresh[0].record["kernel"] == "fresh" and warm[0].record["kernel"] == "warm"
    assert warm[0].record["metrics"] == fresh[0].record["metrics"]
    assert warm[0].record["curves"] == fresh[0].record["curves"]
    assert (warm[0].run_dir / "units.npz").read_bytes() == (fresh[0].run_dir / "units.npz").read_bytes()
    # the notebook reads the same: same outputs, the figure inline
    warm_out = _outputs_of(warm[0].run_dir / "synthetic.ipynb")
    assert warm_out == _outputs_of(fresh[0].run_dir / "synthetic.ipynb")
    assert ["image/png", "text/plain"] in warm_out
    assert not warm_kernels._servers, "the sweep stops its servers"


def test_a_server_that_cannot_start_falls_back_to_fresh_kernels(dummy_family, tmp_path, monkeypatch):
    _, params_dir = dummy_family
    monkeypatch.setattr(warm_kernels, "notebook_imports", lambda notebook: ("no_such_module_anywhere",))
    warm_kernels._manager_for.cache_clear()
    points = expand("dummy", "offline", variants=["cosine"], seeds=[0], params_dir=params_dir)
    with pytest.warns(UserWarning, match="warm kernels unavailable"):
        (result,) = run_grid(points, tmp_path, warm=True)
    warm_kernels._manager_for.cache_clear()
    assert result.status == "complete" and result.record["kernel"] == "fresh"


def test_warm_kernels_can_be_turned_off(monkeypatch):
    monkeypatch.delenv(warm_kernels.FRESH_ENV, raising=False)
    assert warm_kernels.enabled()
    monkeypatch.setenv(warm_kernels.FRESH_ENV, "1")
    assert not warm_kernels.enabled()
