"""Test cases every family shares, as PyKEEN's generic test-case classes: a family's test file subclasses
them once and keeps only its loaders and fixtures.

- ``FamilyContract``: the spec and its schema agree with the notebook and the params files, bad values
  fail before any compute, the report sections and the claims work on fake records, and a tiny run goes
  through the runner and the notebook to a complete record whose per-unit results add up.
- ``HookEqualsGrid``: scores that come out of the domain library's hook equal ``similarity.pairwise``
  for every variant (the grid lives in one place; the adapter only plugs it in).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest
import torch

from embsym_lib import claims, schema
from embsym_lib.families import ReportItem, get_family
from embsym_lib.params import NOTEBOOKS_DIR, ParamError, available_profiles, expand
from embsym_lib.records import read_units
from embsym_lib.similarity import VARIANTS, make_similarity


def _parameters_cell(notebook: str) -> str:
    import nbformat

    nb = nbformat.read(NOTEBOOKS_DIR / notebook, as_version=4)
    (cell,) = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    return cell.source


class FamilyContract:
    family: ClassVar[str]
    #: overrides that make one run take seconds, and the grid point (axes) and variant to run
    tiny: ClassVar[dict[str, Any]] = {}
    tiny_axes: ClassVar[dict[str, Any]] = {}
    tiny_variant: ClassVar[str] = "learn"
    #: (overrides, message) pairs that must fail before any compute
    bad: ClassVar[tuple[tuple[dict[str, Any], str], ...]] = ()
    #: per-unit sidecar entry -> the record metric that is its mean
    unit_means: ClassVar[dict[str, str]] = {}
    #: metrics the claims name that the tiny run does not record (another variant's, a RAG set's, ...)
    not_recorded_by_tiny_run: ClassVar[frozenset[str]] = frozenset()

    def fake_records(self) -> pd.DataFrame:
        """Records shaped like ``collate.load_records`` output, with every variant and ≥ 2 seeds."""
        raise NotImplementedError

    @property
    def spec(self):
        return get_family(self.family)

    # --- the spec, its schema, the notebook and the params files agree ---------------------------

    def test_schema_defaults_validate_and_name_the_grid_axes(self):
        spec = self.spec
        assert spec.params is not None, f"{self.family} declares a parameter schema"
        params = schema.validate(spec.params, {}, self.family)
        assert set(spec.grid_axes) <= set(params), "every grid axis is a parameter"
        primaries = (
            spec.primary_metric.values() if isinstance(spec.primary_metric, dict) else [spec.primary_metric]
        )
        assert set(primaries) <= set(spec.metrics)

    def test_notebook_parameters_cell_is_generated_from_the_schema(self):
        assert _parameters_cell(self.spec.notebook) == schema.parameters_cell(
            self.spec.params, self.family
        ), "run tools/sync_parameters.py"

    def test_every_profile_expands(self):
        for profile in available_profiles():
            if profile == "offline" or self.expands_without_data(profile):
                assert expand(self.family, profile), profile

    def expands_without_data(self, profile: str) -> bool:
        """Whether ``profile`` validates without local data present (the paper profile may need them)."""
        return True

    def test_bad_values_fail_before_compute(self):
        for overrides, message in self.bad:
            with pytest.raises(ParamError, match=message):
                expand(self.family, "offline", variants=[self.tiny_variant], seeds=[0], overrides=overrides)

    # --- report sections and claims on fake records -----------------------------------------------

    def test_sections_on_full_partial_and_empty_records(self):
        import matplotlib

        matplotlib.use("Agg")
        df = self.fake_records()
        partial = df[(df["seed"] == df["seed"].min()) & (df["variant"] != "cosine")].reset_index(drop=True)
        for frame in (df, partial, df.iloc[0:0]):
            items = self.spec.sections(frame)
            assert all(isinstance(i, ReportItem) for i in items)
        assert self.spec.sections(df), "the full records give the family's tables"
        matplotlib.pyplot.close("all")

    def test_claims_evaluate_on_fake_records(self):
        out = claims.evaluate(self.fake_records(), claims.load_claims([self.family]))
        assert len(out) and out["verdict"].isin(claims.VERDICTS).all()

    # --- one tiny run end to end --------------------------------------------------------------------

    def tiny_points(self):
        overrides = dict(self.tiny)
        if "fisher_variants" in self.spec.params.model_fields:  # the tiny run exercises the predictor too
            overrides.setdefault("fisher_variants", [self.tiny_variant])
            overrides.setdefault("score_test_variants", [self.tiny_variant])
        points = expand(self.family, "offline", variants=[self.tiny_variant], seeds=[0], overrides=overrides)
        points = [p for p in points if all(p.params[k] == v for k, v in self.tiny_axes.items())]
        assert points, f"no offline grid point with {self.tiny_axes}"
        return points[:1]

    @pytest.mark.slow
    def test_tiny_run_end_to_end(self, tmp_path):
        from embsym_lib.runner import run_grid

        (result,) = run_grid(self.tiny_points(), outputs_dir=tmp_path)
        assert result.status == "complete", result.error
        record = result.record
        metrics = record["metrics"]
        assert all(v is None or math.isfinite(v) for v in metrics.values())
        for name in self.spec.metrics:
            if name in metrics:
                assert -1.0 <= metrics[name] <= 1.0, name
        named = claim_metrics(self.family) - self.not_recorded_by_tiny_run
        assert named <= set(metrics), (
            f"claims name metrics the run does not record: {sorted(named - set(metrics))}"
        )
        units = read_units(result.run_dir)
        assert record["units"] == {name: len(ids) for name, (ids, _) in units.items()}
        for name, metric in self.unit_means.items():
            ids, values = units[name]
            assert len(set(ids)) == len(ids) > 0
            assert np.mean(values) == pytest.approx(metrics[metric], abs=1e-4), name
        self.check_record(record, result.run_dir)

    def check_record(self, record: dict[str, Any], run_dir) -> None:
        """Family-specific checks of the tiny run's record."""


def claim_metrics(family: str) -> set[str]:
    """Every record metric a family's claims read (not per-unit entries, not rule claims' defaults)."""
    names: set[str] = set()
    for c in claims.load_claims([family]):
        if c.level == "unit":
            continue
        names |= {c.metric} if c.metric else set()
        names |= {s.metric for con in c.contrasts for s in (con.a, con.b) if s.metric}
        names |= set(c.scores.values())
    return {n for n in names if "{unit}" not in n}


class HookEqualsGrid:
    """Subclass with ``scores_through_hook(variant, q, d)``: the scores the domain library computes
    through embsym's hook for queries ``q`` [N, D] against candidates ``d`` [M, D], as [N, M]."""

    variants: ClassVar[tuple[str, ...]] = VARIANTS
    atol: ClassVar[float] = 1e-5

    def scores_through_hook(self, variant: str, q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def test_the_hook_scores_like_the_grid(self):
        g = torch.Generator().manual_seed(0)
        q = torch.randn(6, 8, generator=g) * torch.rand(6, 1, generator=g).mul(4).add(0.5)
        d = torch.randn(5, 8, generator=g) * torch.rand(5, 1, generator=g).mul(4).add(0.5)
        for variant in self.variants:
            expected = make_similarity(variant).pairwise(q, d).detach()
            got = self.scores_through_hook(variant, q, d).detach()
            assert torch.allclose(got, expected, atol=self.atol), variant
