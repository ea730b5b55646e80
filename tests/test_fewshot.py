"""Few-shot family: the ProtoNet scoring hook and adapter, episodes, generated glyphs, paper-profile
loaders, a user's image folder, the claims on planted records; the shared contract (tests/cases.py)
covers the rest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from cases import FamilyContract, HookEqualsGrid
from helpers.fake_records import frame

from embsym_lib import cli
from embsym_lib.adapters import learn2learn as adapter
from embsym_lib.claims import evaluate, load_claims
from embsym_lib.data import fewshot as data
from embsym_lib.families.fewshot import ARMS, CROSS_ARMS, pipeline
from embsym_lib.params import ParamError, expand
from embsym_lib.similarity import LearnableSimilarity

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "fewshot"
#: a user's images, ImageFolder layout without split subfolders: 8 classes x 6 PNGs (16x16; ring 24x18)
SHAPES = FIXTURES / "image_folder" / "shapes"
SHAPE_CLASSES = ["bar", "circle", "cross", "diagonal", "dot", "ring", "square", "triangle"]
#: what episodes on SHAPES fit: 4 / 2 / 2 classes, 1 shot + 3 queries of 6 images per class
FOLDER = {
    "dataset": "folder",
    "data_dir": str(SHAPES),
    "class_split": [2, 1, 1],
    "ways": 2,
    "train_ways": 2,
    "shots": 1,
    "queries": 3,
    "train_queries": 3,
    "image_size": 16,
}


# ------------------------------------------------------------------------------------------ scoring


def test_learn_scorer_is_a_trainable_learnable_similarity():
    gen = torch.Generator().manual_seed(1)
    q, p = torch.randn(6, 8, generator=gen), torch.randn(4, 8, generator=gen)
    scorer = adapter.PrototypeScorer("learn", scale=3.0)
    assert isinstance(scorer.similarity, LearnableSimilarity)
    torch.testing.assert_close(scorer(q, p), 3.0 * scorer.similarity.pairwise(q, p))
    scorer(q, p).sum().backward()
    assert scorer.similarity.raw_gamma_d.grad is not None
    assert set(scorer.gammas()) == {"gamma_q", "gamma_d"}


def test_euclidean_arm_is_negative_squared_distance():
    gen = torch.Generator().manual_seed(2)
    q, p = torch.randn(6, 8, generator=gen), torch.randn(4, 8, generator=gen)
    scorer = adapter.PrototypeScorer("euclidean", scale=10.0, euclidean_scale=2.0)
    torch.testing.assert_close(scorer(q, p), -2.0 * torch.cdist(q, p).pow(2), rtol=1e-5, atol=1e-5)


def test_dnorm_normalizes_the_prototype_side_only():
    gen = torch.Generator().manual_seed(3)
    q, p = torch.randn(4, 8, generator=gen), torch.randn(3, 8, generator=gen)
    scorer = adapter.PrototypeScorer("dnorm", scale=1.0)
    torch.testing.assert_close(scorer(q, 5 * p), scorer(q, p))
    torch.testing.assert_close(scorer(5 * q, p), 5 * scorer(q, p))
    with pytest.raises(ValueError, match="unknown similarity variant"):
        adapter.PrototypeScorer("manhattan")


def test_prototypes_are_means_of_raw_or_normalized_support():
    support = torch.tensor([[3.0, 0.0], [0.0, 1.0], [0.0, 2.0], [0.0, 4.0]])
    labels = torch.tensor([0, 0, 1, 1])
    raw = adapter.class_prototypes(support, labels, 2, "raw")
    torch.testing.assert_close(raw, torch.tensor([[1.5, 0.5], [0.0, 3.0]]))
    normalized = adapter.class_prototypes(support, labels, 2, "normalized")
    torch.testing.assert_close(normalized, torch.tensor([[0.5, 0.5], [0.0, 1.0]]))


def test_learn2learn_episodes_split_into_support_and_query():
    x = torch.arange(60, dtype=torch.float32).unsqueeze(1)
    y = torch.arange(60) // 10
    meta = adapter.meta_dataset(torch.utils.data.TensorDataset(x, y))
    tasks = adapter.episode_tasks(meta, ways=3, shots=2, queries=4, num_tasks=5)
    with adapter.seeded_python_random(0):
        batch, labels = tasks[0]
    support, s_labels, query, q_labels = adapter.split_episode(batch, labels, 3, 2, 4)
    assert support.shape == (6, 1) and query.shape == (12, 1)
    assert torch.equal(torch.bincount(s_labels), torch.tensor([2, 2, 2]))
    assert torch.equal(torch.bincount(q_labels), torch.tensor([4, 4, 4]))
    # An image's original class is x // 10: every remapped label must hold a single original class.
    for label in range(3):
        assert (
            len(
                set(
                    (torch.cat([support[s_labels == label], query[q_labels == label]]) // 10)
                    .flatten()
                    .tolist()
                )
            )
            == 1
        )


def test_evaluate_arms_scores_every_arm_on_the_same_episodes():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(8 * 6, 1, 28, 28, generator=gen)
    labels = torch.arange(8).repeat_interleave(6)
    dataset = torch.utils.data.TensorDataset(images, labels)
    backbone = adapter.conv4(1, hidden=8)
    scorers = {arm: adapter.PrototypeScorer(arm) for arm in CROSS_ARMS}
    first = adapter.evaluate_arms(backbone, dataset, scorers, 4, 1, 3, episodes=12, episode_seed=5)[
        "accuracy"
    ]
    again = adapter.evaluate_arms(backbone, dataset, scorers, 4, 1, 3, episodes=12, episode_seed=5)[
        "accuracy"
    ]
    for arm in CROSS_ARMS:
        np.testing.assert_array_equal(first[arm], again[arm])
    # For one query, dnorm ranks prototypes like cosine and qnorm like dot.
    np.testing.assert_array_equal(first["dnorm"], first["cosine"])
    np.testing.assert_array_equal(first["qnorm"], first["dot"])


# --------------------------------------------------------------------------------------------- data


def test_glyph_inventory_has_many_distinct_classes():
    inventory = data.glyph_inventory()
    assert len(inventory) >= 120
    assert len(set(inventory)) == len(inventory)


def test_glyph_data_is_deterministic_and_class_disjoint():
    a = data.load_glyphs(class_split=(4, 3, 3), samples_per_class=3, data_seed=0)
    b = data.load_glyphs(class_split=(4, 3, 3), samples_per_class=3, data_seed=0)
    for split in ("train", "validation", "test"):
        torch.testing.assert_close(getattr(a, split).tensors[0], getattr(b, split).tensors[0], rtol=0, atol=0)
    images = a.train.tensors[0]
    assert images.shape == (12, 1, 28, 28) and 0.0 <= float(images.min()) and float(images.max()) <= 1.0
    assert a.sizes()["test"] == {"classes": 3, "images": 9}
    names = a.class_names
    assert not set(names["train"]) & set(names["validation"]) and not set(names["validation"]) & set(
        names["test"]
    )
    other = data.load_glyphs(class_split=(4, 3, 3), samples_per_class=3, data_seed=1)
    assert other.class_names != a.class_names


def test_omniglot_fixture_loads_through_learn2learn():
    splits = data.load("omniglot", str(FIXTURES), class_split=[2, 2, 2], data_seed=0)
    assert splits.sizes() == {s: {"classes": 2, "images": 6} for s in ("train", "validation", "test")}
    assert splits.rotate_classes and splits.channels == 1
    image, label = splits.test[0]
    assert image.shape == (1, 28, 28) and label in (0, 1)
    assert float(image.max()) > 0.5 and float(image.mean()) < 0.5  # strokes white on black after 1 - x
    all_names = [n for names in splits.class_names.values() for n in names]
    assert len(set(all_names)) == 6
    tasks = adapter.episode_tasks(
        adapter.meta_dataset(splits.train), 2, 1, 2, num_tasks=2, rotate_classes=True
    )
    batch, labels = tasks[0]
    assert batch.shape == (6, 1, 28, 28) and sorted(labels.tolist()) == [0, 0, 0, 1, 1, 1]


def test_miniimagenet_fixture_loads_through_learn2learn():
    before = sorted(p.name for p in FIXTURES.iterdir())
    splits = data.load("miniimagenet", str(FIXTURES))
    assert splits.channels == 3 and splits.image_size == 84
    assert splits.class_names["test"] == ["n01930112", "n01981276"]
    image, label = splits.validation[3]
    assert image.shape == (3, 84, 84) and 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert label == 1
    tasks = adapter.episode_tasks(adapter.meta_dataset(splits.test), 2, 1, 1, num_tasks=1)
    batch, labels = tasks[0]
    assert batch.shape == (4, 3, 84, 84)
    assert sorted(p.name for p in FIXTURES.iterdir()) == before  # no bookkeeping files written


def test_fewer_classes_than_ways_is_one_clear_error():
    params = {
        "dataset": "miniimagenet",
        "data_dir": str(FIXTURES),
        "class_split": [1, 1, 1],
        "samples_per_class": 20,
        "data_seed": 0,
        "jitter": 0.0,
        "ways": 5,
        "train_ways": 2,
    }
    with pytest.raises(ValueError, match="ways=5 classes per split, but validation has 2, test has 2"):
        pipeline.load_data(params)
    assert pipeline.load_data({**params, "ways": 2}).name == "miniimagenet"


def test_missing_paper_data_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="omniglot-py"):
        data.load("omniglot", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="mini-imagenet-cache-train.pkl"):
        data.load("miniimagenet", str(tmp_path))


# ------------------------------------------------------------------------------- a user's image folder


def _folder_points(check_data=True, **changes):
    return expand(
        "fewshot",
        "offline",
        variants=["dnorm"],
        seeds=[0],
        overrides={**FOLDER, **changes},
        check_data=check_data,
    )


def _split_copy(root: Path, val_name: str = "val") -> Path:
    """The shapes fixture rearranged into train/, <val_name>/ and test/ subfolders (4 / 2 / 2 classes)."""
    for split, classes in (
        ("train", SHAPE_CLASSES[:4]),
        (val_name, SHAPE_CLASSES[4:6]),
        ("test", SHAPE_CLASSES[6:]),
    ):
        for name in classes:
            shutil.copytree(SHAPES / name, root / split / name)
    return root


def test_spec_constants_agree_with_the_data_module():
    from embsym_lib.families.fewshot import spec

    assert (spec.IMAGE_SIZE, spec.FOLDER_MIN_IMAGE_SIZE) == (data.IMAGE_SIZE, data.FOLDER_MIN_IMAGE_SIZE)
    assert set(data.DATASETS) == set(spec.FewshotParams.model_fields["dataset"].annotation.__args__)


def test_proportional_counts_cut_every_class_by_largest_remainder():
    assert data.proportional_counts(8, [60, 20, 40]) == [4, 1, 3]
    assert data.proportional_counts(30, [60, 20, 40]) == [15, 5, 10]
    assert data.proportional_counts(10, [1, 1, 1]) == [4, 3, 3]  # ties go to the earlier split
    assert data.proportional_counts(8, [2, 1, 1]) == [4, 2, 2]


def test_image_folder_fixture_loads_split_by_class_split():
    splits = data.load("folder", str(SHAPES), [2, 1, 1], data_seed=0, image_size=16, image_channels=3)
    assert splits.name == "folder" and splits.channels == 3 and splits.image_size == 16
    assert splits.sizes() == {
        "train": {"classes": 4, "images": 24},
        "validation": {"classes": 2, "images": 12},
        "test": {"classes": 2, "images": 12},
    }
    names = splits.class_names
    assert sorted(names["train"] + names["validation"] + names["test"]) == SHAPE_CLASSES
    assert all(names[split] == sorted(names[split]) for split in names)  # labels in class-name order
    for split in (splits.train, splits.validation, splits.test):
        images = torch.stack([split[i][0] for i in range(len(split))])
        assert images.shape[1:] == (3, 16, 16) and images.dtype == torch.float32
        assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0 and float(images.max()) > 0.5
    assert (
        splits.details["split"]
        == "4 / 2 / 2 classes (train / validation / test), split by class_split proportions"
    )
    assert splits.details["images"] == "16x16, RGB" and splits.details["ignored_files"] == 0
    # the same folder and data_seed give the same split; another data_seed another one
    again = data.load("folder", str(SHAPES), [2, 1, 1], data_seed=0, image_size=16, image_channels=3)
    assert again.class_names == names
    torch.testing.assert_close(again.test.tensors[0], splits.test.tensors[0], rtol=0, atol=0)
    assert (
        data.image_folder_layout(SHAPES, [2, 1, 1], data_seed=1).classes
        != data.image_folder_layout(SHAPES, [2, 1, 1], data_seed=0).classes
    )
    # grayscale, another size (ring's 24x18 images are resized to the square too)
    gray = data.load("folder", str(SHAPES), [2, 1, 1], image_size=20, image_channels=1)
    assert (
        gray.channels == 1
        and gray.train[0][0].shape == (1, 20, 20)
        and gray.details["images"] == "20x20, grayscale"
    )
    # learn2learn episodes over it, as training draws them
    tasks = adapter.episode_tasks(adapter.meta_dataset(splits.train), 2, 1, 3, num_tasks=1)
    batch, labels = tasks[0]
    assert batch.shape == (8, 3, 16, 16) and sorted(labels.tolist()) == [0] * 4 + [1] * 4


def test_image_folder_with_split_subfolders_keeps_them(tmp_path):
    root = _split_copy(tmp_path / "mine", val_name="validation")
    (root / "train" / "bar" / "notes.txt").write_text("not an image")
    (root / "train" / ".ipynb_checkpoints").mkdir()  # hidden: not a class
    nested = root / "test" / "square" / "more"
    nested.mkdir()
    shutil.copy(SHAPES / "square" / "00.png", nested / "extra.PNG")  # recursive, any case, as ImageFolder
    layout = data.image_folder_layout(root, [60, 20, 40], data_seed=3)  # class_split is not used
    assert layout.split_by == "subfolders" and layout.ignored_files == 1
    assert {split: list(c) for split, c in layout.classes.items()} == {
        "train": SHAPE_CLASSES[:4],
        "validation": SHAPE_CLASSES[4:6],
        "test": SHAPE_CLASSES[6:],
    }
    assert len(layout.classes["test"]["square"]) == 7
    splits = data.load_image_folder(root, image_size=16, layout=layout)
    assert splits.sizes()["test"] == {"classes": 2, "images": 13}
    assert splits.details["split"] == "4 / 2 / 2 classes from its train / val / test subfolders"
    points = _folder_points(data_dir=str(root), class_split=[60, 20, 40])
    assert points[0].params["dataset"] == "folder"


def test_image_folder_bad_layouts_are_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="image folder not found: .* is not a directory"):
        data.image_folder_layout(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no class folders; expected <data_dir>/<class>/<images>"):
        data.image_folder_layout(tmp_path / "empty")
    shutil.copytree(SHAPES / "ring", tmp_path / "one_class")
    with pytest.raises(FileNotFoundError, match="holds 6 image files directly: one class"):
        data.image_folder_layout(tmp_path / "one_class")
    no_val = _split_copy(tmp_path / "no_val")
    shutil.rmtree(no_val / "val")
    with pytest.raises(ValueError, match="has test/, train/ but no val/ or validation/"):
        data.image_folder_layout(no_val)
    both = _split_copy(tmp_path / "both")
    (both / "validation").mkdir()
    with pytest.raises(ValueError, match="but both val/ and validation/"):
        data.image_folder_layout(both)
    leaky = _split_copy(tmp_path / "leaky")
    shutil.copytree(SHAPES / "square", leaky / "train" / "square")
    with pytest.raises(ValueError, match="class 'square' is in both train/ and test/"):
        data.image_folder_layout(leaky)
    broken = _split_copy(tmp_path / "broken")
    (broken / "test" / "square" / "03.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read .*square/03.png as an image"):
        data.load_image_folder(broken, image_size=16)


def test_image_folder_is_validated_before_compute():
    assert len(_folder_points()) == 1  # the offline grid's shots axis, restricted by the override
    cases = (
        ({"data_dir": ""}, "dataset 'folder' needs data_dir: your image folder"),
        ({"data_dir": "/nonexistent/images"}, "image folder not found: /nonexistent/images"),
        ({"ways": 3}, "4 / 2 / 2 classes .*ways=3 classes per split, but validation has 2, test has 2"),
        ({"train_ways": 5}, "train_ways=5 .* but train has 4 \\(add classes or change class_split\\)"),
        ({"class_split": [60, 20, 40]}, "4 / 1 / 3 classes .* but validation has 1"),
        ({"queries": 6}, "validation episodes need shots \\+ queries = 7 images per class, but 2 validation"),
        ({"shots": 5}, "train episodes need shots \\+ train_queries = 8 images per class, .*'circle' has 6"),
        ({"image_size": 8}, "parameter 'image_size': input should be greater than or equal to 16"),
        ({"image_channels": 2}, "parameter 'image_channels': input should be 1 or 3"),
    )
    for changes, message in cases:
        with pytest.raises(ParamError, match=message):
            _folder_points(**changes)
    # a dry run lists the sweep without the data (omniglot's and miniImageNet's too)
    assert _folder_points(check_data=False, data_dir="/nonexistent/images")
    assert expand(
        "fewshot",
        "paper",
        variants=["dnorm"],
        seeds=[0],
        overrides={"data_dir": "/nonexistent"},
        check_data=False,
    )


def test_cli_refuses_a_bad_image_folder_with_exit_code_2(tmp_path, capsys):
    argv = ["run", "fewshot", "--variants", "dnorm", "--seeds", "0", "--outputs", str(tmp_path)]
    sets = [f"{k}={json.dumps(v)}" for k, v in {**FOLDER, "ways": 3}.items()]
    assert cli.main([*argv, *(a for s in sets for a in ("--set", s))]) == 2
    assert "but validation has 2, test has 2" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing ran


@pytest.mark.slow
def test_cli_runs_a_user_image_folder_end_to_end(tmp_path):
    overrides = {
        **FOLDER,
        "data_dir": "tests/fixtures/fewshot/image_folder/shapes",  # relative: to the project root
        "image_channels": 3,
        "episodes": 6,
        "eval_every": 3,
        "val_episodes": 5,
        "test_episodes": 20,
        "hidden": 8,
    }
    sets = [a for k, v in overrides.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    argv = ["run", "fewshot", "--variants", "dnorm", "--seeds", "0", *sets, "--outputs", str(tmp_path)]
    assert cli.main(argv) == 0
    (record_path,) = tmp_path.glob("fewshot/*/record.json")
    record = json.loads(record_path.read_text())
    assert record["status"] == "complete" and record["params"]["dataset"] == "folder"
    assert 0.0 <= record["metrics"]["accuracy"] <= 1.0 and record["units"]["accuracy"] == 20
    assert record["extra"]["data_sizes"]["test"] == {"classes": 2, "images": 12}
    assert record["extra"]["data"] == {
        "data_dir": str(SHAPES),
        "split": "4 / 2 / 2 classes (train / validation / test), split by class_split proportions",
        "images": "16x16, RGB",
        "ignored_files": 0,
    }
    assert (record_path.parent / "figures" / "test_classes.png").exists()


def test_adapter_builds_a_protonet_and_swaps_its_scorer_for_cross_evaluation():
    params = {"variant": "learn", "hidden": 8, "scale": 4.0, "euclidean_scale": 2.0, "prototype": "raw"}
    model = adapter.ADAPTER.build_model(params, channels=1)
    assert isinstance(adapter.ADAPTER.similarity(model), LearnableSimilarity)
    gen = torch.Generator().manual_seed(4)
    q, p = torch.randn(6, 8, generator=gen), torch.randn(3, 8, generator=gen)
    own = model.scorer
    with adapter.ADAPTER.scored_with(model, "euclidean") as scored:
        torch.testing.assert_close(scored.scorer(q, p), -2.0 * torch.cdist(q, p).pow(2), rtol=1e-5, atol=1e-5)
    assert model.scorer is own
    images = torch.rand(12, 1, 28, 28, generator=gen)
    emb, labels = adapter.ADAPTER.embed(
        model, torch.utils.data.TensorDataset(images, torch.arange(12) % 3), {}
    )
    assert emb.shape[0] == 12 and torch.equal(labels, torch.arange(12) % 3)
    logits, query_labels = model(images, torch.arange(12) % 3, 3, 1, 3)
    assert logits.shape == (9, 3) and query_labels.shape == (9,)


def test_paper_profile_expands_on_fixture_data():
    points = expand("fewshot", "paper", variants=["dnorm"], seeds=[0], overrides={"data_dir": str(FIXTURES)})
    assert {(p.params["dataset"], p.params["shots"]) for p in points} == {
        (d, s) for d in ("omniglot", "miniimagenet") for s in (1, 5)
    }


def test_fewshot_claims_on_planted_and_partial_records():
    records = TestFewshotContract().fake_records()
    out = evaluate(records, load_claims(["fewshot"])).set_index(["id", "setting"])
    # dnorm is planted 5 points above every other arm, with 1-point seed noise
    for shots in (1, 5):
        for claim in ("fewshot.dnorm_beats_cosine", "fewshot.dnorm_beats_euclidean", "fewshot.rule"):
            assert out.loc[(claim, f"shots={shots}, dataset=glyphs"), "verdict"] == "supported"
    partial = records[
        (records["seed"] == 0) & records["variant"].isin(["dnorm", "cosine"]) & (records["shots"] == 5)
    ]
    partial = evaluate(partial.reset_index(drop=True), load_claims(["fewshot"]))
    assert (partial["verdict"] == "untestable here").all()
    assert partial["reason"].str.contains("one seed|no runs of euclidean|no seed with qnorm and dnorm").all()


class TestFewshotHook(HookEqualsGrid):
    """The ProtoNet's logits for query embeddings against prototypes are ``scale`` x the grid's score."""

    scale = 4.0  # a power of two: dividing the logits by it is exact

    def scores_through_hook(self, variant, q, d):
        return adapter.PrototypeScorer(variant, scale=self.scale)(q, d) / self.scale


class TestFewshotContract(FamilyContract):
    family = "fewshot"
    tiny = {
        "episodes": 6,
        "eval_every": 3,
        "val_episodes": 5,
        "test_episodes": 20,
        "class_split": [6, 5, 5],
        "queries": 3,
        "train_queries": 2,
        "samples_per_class": 8,
        "hidden": 8,
    }
    tiny_axes = {"shots": 1}
    bad = (
        (
            {"dataset": "cifar"},
            "parameter 'dataset': input should be 'glyphs', 'omniglot', 'miniimagenet' or 'folder'",
        ),
        ({"ways": 1}, "parameter 'ways': input should be greater than or equal to 2"),
        ({"class_split": [60, 20]}, "parameter 'class_split': list should have at least 3 items"),
        ({"class_split": [60, 20, 3]}, "validation and test need at least ways=5 classes each"),
        ({"class_split": [3, 20, 40]}, "fewer than train_ways=5"),
        ({"class_split": [400, 100, 100]}, "needs 600 glyph classes; the fonts give"),
        ({"samples_per_class": 10}, "shots \\+ queries = 16 images per class, but glyphs has 10"),
        ({"prototype": "median"}, "parameter 'prototype'"),
        ({"scale": 0.0}, "parameter 'scale': input should be greater than 0"),
        ({"lr": float("nan")}, "parameter 'lr': input should be a finite number"),
        ({"jitter": 3}, "parameter 'jitter'"),
        ({"device": "tpu"}, "parameter 'device'"),
        ({"threads": 0}, "parameter 'threads'"),
        ({"dataset": "omniglot", "data_dir": ""}, "dataset 'omniglot' needs data_dir"),
        ({"dataset": "omniglot", "data_dir": "/nonexistent"}, "Omniglot not found"),
        ({"dataset": "miniimagenet", "data_dir": "/nonexistent"}, "miniImageNet not found"),
        ({"data_root": "/data"}, "unknown parameter 'data_root'"),
        ({"dataset": "folder"}, "dataset 'folder' needs data_dir"),
        ({"dataset": "folder", "data_dir": "/nonexistent"}, "image folder not found"),
        ({"image_size": 84}, "image_size and image_channels apply to dataset 'folder' only"),
        ({"image_channels": 3}, "image_size and image_channels apply to dataset 'folder' only"),
    )
    unit_means = {"accuracy": "accuracy", **{f"cross_{a}": f"cross_{a}" for a in CROSS_ARMS}}

    def expands_without_data(self, profile: str) -> bool:
        return profile != "paper"  # reads a local Omniglot / miniImageNet (tested on the fixtures above)

    def fake_records(self) -> pd.DataFrame:
        rng = np.random.default_rng(0)
        rows = []
        for shots in (1, 5):
            for arm in ARMS:
                for seed in (0, 1, 2):
                    acc = float(np.clip(0.6 + 0.05 * (arm == "dnorm") + rng.normal(0, 0.01), 0, 1))
                    metrics = {
                        "accuracy": acc,
                        "accuracy_ci95": 0.01,
                        "val_accuracy": acc,
                        "query_norm_mean": 2.0,
                        "query_norm_cv": 0.3,
                        "prototype_norm_cv": 0.3,
                        **{f"cross_{a}": acc - 0.01 * (a in ("dot", "qnorm")) for a in CROSS_ARMS},
                    }
                    if arm == "learn":
                        metrics.update(gamma_q=0.5, gamma_d=0.51)
                    params = {"ways": 5, "shots": shots, "dataset": "glyphs"}
                    rows.append(
                        {
                            "family": "fewshot",
                            "variant": arm,
                            "seed": seed,
                            "params": params,
                            "metrics": metrics,
                        }
                    )
        df = frame(rows)
        axes = pd.DataFrame({a: [p[a] for p in df["params"]] for a in ("shots", "dataset")})
        return pd.concat([df, axes, pd.DataFrame(list(df["metrics"]))], axis=1)

    def check_record(self, record, run_dir):
        metrics = record["metrics"]
        assert 0.0 < metrics["gamma_q"] < 1.0 and 0.0 < metrics["gamma_d"] < 1.0
        assert record["units"]["accuracy"] == 20
        assert len(record["curves"]["val_accuracy"]["y"]) == 2 and len(record["curves"]["gamma_q"]["y"]) == 6
        assert (run_dir / "figures" / "training.png").exists()
