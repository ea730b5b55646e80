from pathlib import Path

import pytest

from embsym_lib.families import FamilySpec, registry
from embsym_lib.schema import RunParams
from embsym_lib.symmetry import asymmetric

FIXTURES = Path(__file__).parent / "fixtures"


class DummyParams(RunParams):
    """The dummy notebook's parameters (tests/fixtures/dummy.ipynb's parameters cell says the same)."""

    fail: bool = False
    value: float = 1.0
    sleep: float = 0.0
    crash: str = ""


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
        params=DummyParams,
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
    """Tiny synthetic runs (2 variants x 2 seeds x 2 tasks) and the report rendered over them, made once.
    Their parameters are a profile of their own (the report pools only a profile's grid)."""
    import yaml

    from embsym_lib.collate import render_report
    from embsym_lib.params import expand
    from embsym_lib.runner import run_grid

    outputs = tmp_path_factory.mktemp("synthetic_outputs")
    params_dir = tmp_path_factory.mktemp("synthetic_params")
    (params_dir / "offline").mkdir()
    profile = {
        "variants": ["cosine", "qnorm"],
        "seeds": [0, 1],
        "grid": {"task": ["asymmetric", "symmetric"]},
        "parameters": TINY_SYNTHETIC,
    }
    (params_dir / "offline" / "synthetic.yaml").write_text(yaml.safe_dump(profile))
    points = expand("synthetic", "offline", params_dir=params_dir)
    results = run_grid(points, outputs)
    report = render_report(outputs, params_dir=params_dir)
    return {
        "outputs": outputs,
        "points": points,
        "results": results,
        "report": report,
        "params_dir": params_dir,
    }
