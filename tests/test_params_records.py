import json

import pytest
import yaml

from embsym_lib import records
from embsym_lib.params import ParamError, expand, notebook_defaults, parse_override, run_id_for


def test_synthetic_offline_grid_expands_and_validates():
    points = expand("synthetic", "offline")
    assert len(points) == 3 * 5 * 3
    assert len({p.run_id for p in points}) == len(points)
    p = points[0]
    assert set(p.params) >= {"variant", "seed", "profile", "run_dir", "task", "epochs"}


def test_run_id_changes_with_any_parameter():
    params = {"variant": "dot", "seed": 0, "epochs": 3, "run_dir": "x"}
    a = run_id_for("offline", {"task": "t"}, params)
    assert a == run_id_for("offline", {"task": "t"}, {**params, "run_dir": "elsewhere"})
    assert a != run_id_for("offline", {"task": "t"}, {**params, "epochs": 4})
    assert a.startswith("offline-task=t-dot-s0-")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"family": "nope"}, "unknown family 'nope'; valid families are"),
        ({"profile": "gpu"}, "unknown profile 'gpu'; valid profiles are"),
        ({"variants": ["cos"]}, "unknown similarity variant 'cos'"),
        ({"seeds": [-1]}, "seeds must be non-negative"),
        ({"overrides": {"epochz": 1}}, "unknown parameter 'epochz'"),
        ({"overrides": {"epochs": "three"}}, "parameter 'epochs': input should be a valid integer"),
        ({"overrides": {"epochs": 2.5}}, "parameter 'epochs': input should be a valid integer"),
        ({"overrides": {"lr": True}}, "parameter 'lr': expected a number, got True"),
        ({"overrides": {"lr": float("nan")}}, "parameter 'lr': input should be a finite number"),
        ({"overrides": {"lr": float("inf")}}, "parameter 'lr': input should be a finite number"),
        ({"overrides": {"lr": -1.0}}, "parameter 'lr': input should be greater than 0"),
        (
            {"overrides": {"magnitude_noise": -0.1}},
            "parameter 'magnitude_noise': input should be greater than or equal to 0",
        ),
        ({"overrides": {"device": "tpu"}}, "parameter 'device'"),
        ({"seeds": [2**32]}, "parameter 'seed': input should be less than or equal to 4294967295"),
        (
            {"overrides": {"task": "sideways"}},
            "parameter 'task': input should be 'asymmetric', 'symmetric' or 'ablation'",
        ),
        ({"overrides": {"n_relevant": 5000}}, "n_relevant"),
        ({"overrides": {"seed": 3}}, "set by the runner"),
    ],
)
def test_bad_parameters_raise_one_clear_error(kwargs, message):
    args = {"family": "synthetic", "profile": "offline", **kwargs}
    with pytest.raises(ValueError, match=message):
        expand(args.pop("family"), args.pop("profile"), **args)


def test_bad_params_files(dummy_family, tmp_path):
    _, params_dir = dummy_family
    path = params_dir / "offline" / "dummy.yaml"
    for text, message in [
        ("variants: [cosine]\nepochs: 3\n", "unknown keys"),
        ("grid:\n  task: [a]\n", "unknown grid axis 'task'"),
        ("variants: [cosine\n", "not valid YAML"),
        ("parameters:\n  value: abc\n", "must be float"),
    ]:
        path.write_text(text)
        with pytest.raises(ParamError, match=message):
            expand("dummy", "offline", params_dir=params_dir)
    (params_dir / "paper").mkdir()
    with pytest.raises(ParamError, match="has no parameters for family 'dummy'"):
        expand("dummy", "paper", params_dir=params_dir)


def test_notebook_defaults_read_the_parameters_cell(dummy_family):
    spec, _ = dummy_family
    assert notebook_defaults(spec.notebook) == {
        "variant": "cosine",
        "seed": 0,
        "profile": "offline",
        "run_dir": "",
        "fail": False,
        "value": 1.0,
        "sleep": 0.0,
    }
    with pytest.raises(ParamError, match="notebook not found"):
        notebook_defaults("/nonexistent.ipynb")


def test_parse_override():
    assert parse_override("epochs=3") == ("epochs", 3)
    assert parse_override("encoders=[a, b]") == ("encoders", ["a", "b"])
    with pytest.raises(ParamError):
        parse_override("epochs")


def test_records_are_complete_and_atomic(tmp_path):
    rec = records.write_record(
        tmp_path / "r1",
        family="synthetic",
        params={"variant": "dot", "seed": 1, "profile": "offline"},
        metrics={"ndcg@10": 0.5, "bad": float("nan")},
    )
    on_disk = json.loads((tmp_path / "r1" / "record.json").read_text())
    assert on_disk == json.loads(json.dumps(rec, default=str)) or on_disk["metrics"]["bad"] is None
    assert on_disk["metrics"] == {"ndcg@10": 0.5, "bad": None}
    assert on_disk["versions"]["torch"] and on_disk["versions"]["python"].startswith("3.11")
    assert set(on_disk["git"]) == {"commit", "dirty"} and on_disk["device"]["device"] in {"cpu", "cuda"}
    assert on_disk["variant"] == "dot" and on_disk["seed"] == 1 and on_disk["status"] == "complete"
    assert not list((tmp_path / "r1").glob(".tmp-*"))
    with pytest.raises(ValueError, match="unknown status"):
        records.write_record(tmp_path / "r2", family="x", params={}, status="done")
    records.update_record(tmp_path / "r1", status="failed")
    assert records.read_record(tmp_path / "r1")["status"] == "failed"


def _synthetic_points(tmp_path, grid, **kwargs):
    (tmp_path / "offline").mkdir(exist_ok=True)
    (tmp_path / "offline" / "synthetic.yaml").write_text(
        yaml.safe_dump({"variants": ["cosine", "dot"], "seeds": [0], "grid": grid})
    )
    points = expand("synthetic", "offline", params_dir=tmp_path, **kwargs)
    return sorted((p.params["task"], p.params["variant"], p.params["seed"]) for p in points)


def test_grid_blocks_are_united_with_their_own_variants_and_seeds(tmp_path):
    grid = [
        {"task": ["asymmetric"]},
        {"task": ["symmetric", "asymmetric"], "variants": ["qnorm"], "seeds": [1, 2]},
        {"task": ["asymmetric"], "variants": ["cosine"]},  # overlaps the first block: no duplicate
    ]
    assert _synthetic_points(tmp_path, grid) == [
        ("asymmetric", "cosine", 0),
        ("asymmetric", "dot", 0),
        ("asymmetric", "qnorm", 1),
        ("asymmetric", "qnorm", 2),
        ("symmetric", "qnorm", 1),
        ("symmetric", "qnorm", 2),
    ]
    # the command line's variants and seeds replace every block's; an axis override restricts every block
    assert _synthetic_points(tmp_path, grid, variants=["dnorm"], seeds=[5]) == [
        ("asymmetric", "dnorm", 5),
        ("symmetric", "dnorm", 5),
    ]
    assert _synthetic_points(tmp_path, grid, overrides={"task": "symmetric"}) == [
        ("symmetric", "cosine", 0),
        ("symmetric", "dot", 0),
        ("symmetric", "qnorm", 1),
        ("symmetric", "qnorm", 2),
    ]


@pytest.mark.parametrize(
    "grid, message",
    [
        ([], "grid is an empty list"),
        (["task"], r"grid\[0\] must be a mapping"),
        ([{"task": ["asymmetric"]}, {"encoder": ["x"]}], r"unknown grid axis 'encoder' in grid\[1\]"),
        ([{"task": ["asymmetric"], "variants": ["cosine", "l2"]}], "unknown similarity variant 'l2'"),
        ([{"task": ["asymmetric"], "seeds": [-1]}], "seeds must be non-negative"),
    ],
)
def test_bad_grid_blocks(tmp_path, grid, message):
    with pytest.raises(ParamError, match=message):
        _synthetic_points(tmp_path, grid)


def test_notebooks_and_parameter_reference_are_generated_from_the_schemas():
    import subprocess
    import sys

    from embsym_lib.records import PROJECT_ROOT

    out = subprocess.run(
        [sys.executable, "tools/sync_parameters.py", "--check"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr + " (run tools/sync_parameters.py)"
