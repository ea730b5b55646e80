from pathlib import Path

import pytest

from embsym_lib.families import FamilySpec, registry
from embsym_lib.symmetry import asymmetric

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def dummy_family(tmp_path):
    """A throw-away family whose notebook writes a record instantly (or fails on request), with its own
    params directory: runner behaviour is tested without training anything."""
    spec = FamilySpec(
        name="dummy",
        title="Dummy",
        notebook=str(FIXTURES / "dummy.ipynb"),
        tasks={"t": asymmetric("t", "q", "d")},
        primary_metric="score",
        metrics=("score",),
    )
    registry()["dummy"] = spec
    params_dir = tmp_path / "params"
    (params_dir / "offline").mkdir(parents=True)
    (params_dir / "offline" / "dummy.yaml").write_text(
        "variants: [cosine, dot]\nseeds: [0, 1]\nparameters:\n  value: 2.0\n"
    )
    yield spec, params_dir
    registry().pop("dummy", None)


TINY_SYNTHETIC = {
    "n_docs": 300,
    "n_train": 512,
    "n_test": 100,
    "n_heldout": 128,
    "epochs": 2,
    "batch_size": 64,
}


@pytest.fixture(scope="session")
def synthetic_runs(tmp_path_factory):
    """Tiny synthetic runs (2 variants x 2 seeds x 2 tasks) and the report rendered over them, made once."""
    from embsym_lib.collate import render_report
    from embsym_lib.params import expand
    from embsym_lib.runner import run_grid

    outputs = tmp_path_factory.mktemp("synthetic_outputs")
    points = [
        p
        for p in expand(
            "synthetic", "offline", variants=["cosine", "qnorm"], seeds=[0, 1], overrides=TINY_SYNTHETIC
        )
        if p.params["task"] != "ablation"
    ]
    results = run_grid(points, outputs)
    return {"outputs": outputs, "points": points, "results": results, "report": render_report(outputs)}
