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
