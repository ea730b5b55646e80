import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from cases import FamilyContract, HookEqualsGrid
from helpers.fake_records import frame
from open_clip.loss import ClipLoss

from embsym_lib.adapters.open_clip import (
    ADAPTER,
    TINY_CONFIG,
    TINY_MODEL_NAME,
    GridClipLoss,
    array_to_tensor,
    create_model,
    encode,
)
from embsym_lib.claims import VERDICTS, evaluate, load_claims
from embsym_lib.data.clip import COLORS, load_coco_captions, shapes_dataset, shapes_splits
from embsym_lib.families import get_family
from embsym_lib.families.clip import pipeline, spec, tables
from embsym_lib.losses import info_nce, symmetric_info_nce
from embsym_lib.params import expand
from embsym_lib.similarity import FIXED_VARIANTS, make_similarity, pairwise, power_normalize

COCO = Path(__file__).parent / "fixtures" / "clip" / "coco"
CONFIGS = [(v, d) for v in ("cosine", "dot", "qnorm") for d in ("sym", "i2t", "t2i")]


def fake_records(seeds=(0, 1, 2), configs=None) -> pd.DataFrame:
    """CLIP records shaped like ``collate.load_records`` output (random metrics; zero-shot on norm_sym)."""
    rng = np.random.default_rng(0)
    rows = []
    for variant, direction in configs or CONFIGS:
        for seed in seeds:
            metrics = {m: float(rng.uniform(0.05, 0.5)) for m in spec.METRICS}
            metrics.update(cohen_d_image=float(rng.normal()), cohen_d_text=float(rng.normal()))
            zero_shot = None
            if (variant, direction) == ("cosine", "sym"):
                zero_shot = {"source": "stand-in: test", "metrics": dict(metrics)}
            rows.append(
                {
                    "family": "clip",
                    "variant": variant,
                    "seed": seed,
                    "params": {"loss_direction": direction, "dataset": "shapes", "zero_shot_model": ""},
                    "metrics": metrics,
                    "curves": {
                        "loss": {"x": [0, 1], "y": [2.0, 1.0]},
                        "image_norm": {"x": [0, 1], "y": [1, 2]},
                        "text_norm": {"x": [0, 1], "y": [1, 3]},
                    },
                    "extra": {"zero_shot": zero_shot},
                }
            )
    df = frame(rows)
    axes = pd.DataFrame([{k: p[k] for k in ("loss_direction", "dataset")} for p in df["params"]])
    return pd.concat([df, axes, pd.DataFrame(list(df["metrics"]))], axis=1)


class TestClipContract(FamilyContract):
    family = "clip"
    tiny = {"n_train": 128, "n_test": 48, "epochs": 1, "batch_size": 64}
    tiny_variant = "cosine"
    tiny_axes = {"loss_direction": "sym"}  # norm_sym: the point that also runs the zero-shot analysis
    bad = (
        ({"dataset": "flickr"}, "parameter 'dataset'"),
        ({"dataset": "coco"}, "dataset 'coco' needs data_dir"),
        ({"dataset": "coco", "data_dir": str(COCO / "nope")}, "is not a folder"),
        ({"dataset": "coco", "data_dir": str(COCO)}, "coco_train_annotations"),
        ({"loss_direction": "both"}, "parameter 'loss_direction'"),
        ({"n_train": 10}, "n_train \\(10\\) must be at least batch_size \\(128\\)"),
        ({"n_test": 5}, "parameter 'n_test'"),
        ({"model": "ViT-Q-99"}, "unknown open_clip model model='ViT-Q-99'"),
        ({"zero_shot_model": "nope"}, "unknown open_clip model zero_shot_model='nope'"),
        ({"image_size": 36}, "image_size must be a multiple of 8"),
        ({"lr": 0.0}, "parameter 'lr'"),
        ({"warmup_ratio": 1.0}, "parameter 'warmup_ratio'"),
        ({"learning_rate": 0.001}, "unknown parameter 'learning_rate'"),
        ({"device": "tpu"}, "parameter 'device'"),
    )
    unit_means = {name: name for name in ("r1_i2t", "r1_t2i", "r1_i2t_cosine", "r1_t2i_dot")}

    def expands_without_data(self, profile: str) -> bool:
        return profile != "paper"  # COCO under data_dir: test_paper_profile_expands_with_coco_present

    def fake_records(self) -> pd.DataFrame:
        return fake_records()

    def check_record(self, record, run_dir):
        from embsym_lib.records import read_units

        metrics = record["metrics"]
        assert math.isfinite(metrics["cohen_d_image"]) and metrics["final_logit_scale"] <= 100.0 + 1e-4
        assert record["extra"]["config"] == "norm_sym"
        assert len(record["curves"]["loss"]["y"]) == self.tiny["n_train"] // self.tiny["batch_size"]
        zero_shot = record["extra"]["zero_shot"]
        assert zero_shot["source"].startswith("stand-in") and "per_query" not in zero_shot
        units = read_units(run_dir)
        for name in ("r1_i2t_cosine", "r1_t2i_dot"):
            ids, hits = units[f"zs/{name}"]
            assert np.mean(hits) == pytest.approx(zero_shot["metrics"][name], abs=1e-6), name


class TestGridClipLossHook(HookEqualsGrid):
    """``GridClipLoss.get_logits``: image → text logits = scale × the grid with the image as the query."""

    scale = 4.0

    def scores_through_hook(self, variant, q, d):
        per_image, _ = GridClipLoss(make_similarity(variant)).get_logits(q, d, torch.tensor(self.scale))
        return per_image / self.scale

    @pytest.mark.parametrize("variant", FIXED_VARIANTS)
    def test_text_to_image_logits_score_the_text_as_the_query(self, variant):
        torch.manual_seed(0)
        image, text = torch.randn(6, 8) * 3, torch.randn(5, 8) * 3
        per_image, per_text = GridClipLoss(variant).get_logits(image, text, torch.tensor(7.0))
        torch.testing.assert_close(per_image, 7.0 * pairwise(image, text, variant))
        torch.testing.assert_close(per_text, 7.0 * pairwise(text, image, variant))
        if variant in ("cosine", "dot"):  # symmetric scores: one matrix is the other's transpose
            torch.testing.assert_close(per_text, per_image.T)


# --- the loss ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", FIXED_VARIANTS)
def test_grid_clip_loss_directions_equal_library_info_nce(variant):
    torch.manual_seed(1)
    image, text = torch.randn(5, 4), torch.randn(5, 4)
    sym = GridClipLoss(variant, "sym")(image, text, torch.tensor(20.0))
    i2t = GridClipLoss(variant, "i2t")(image, text, torch.tensor(20.0))
    t2i = GridClipLoss(variant, "t2i")(image, text, torch.tensor(20.0))
    torch.testing.assert_close(sym, symmetric_info_nce(image, text, variant, scale=20.0))
    torch.testing.assert_close(i2t, info_nce(image, text, variant, scale=20.0))
    torch.testing.assert_close(t2i, info_nce(text, image, variant, scale=20.0))


def test_cosine_grid_loss_equals_open_clips_own_loss_on_normalized_features():
    torch.manual_seed(2)
    image, text = torch.randn(7, 5), torch.randn(7, 5)
    ours = GridClipLoss("cosine")(image, text, torch.tensor(14.3))
    stock = ClipLoss()(
        torch.nn.functional.normalize(image), torch.nn.functional.normalize(text), torch.tensor(14.3)
    )
    torch.testing.assert_close(ours, stock)


def test_learnable_similarity_in_the_loss_trains_its_gammas():
    loss_fn = GridClipLoss(make_similarity("learn"), "sym")
    image, text = torch.randn(4, 3), torch.randn(4, 3)
    per_image, _ = loss_fn.get_logits(image, text, torch.tensor(1.0))
    expected = power_normalize(image, 0.5) @ power_normalize(text, 0.5).T
    torch.testing.assert_close(per_image, expected)
    loss_fn(image, text, torch.tensor(1.0)).backward()
    assert loss_fn.similarity.raw_gamma_q.grad is not None


def test_unknown_direction_and_multi_process_are_refused():
    with pytest.raises(ValueError, match="loss_direction"):
        GridClipLoss("dot", "both")
    with pytest.raises(ValueError, match="world_size"):
        GridClipLoss("dot", "sym", world_size=2)


# --- the adapter -------------------------------------------------------------------------------------


def test_the_schema_knows_the_adapters_tiny_model():
    assert (spec.TINY_MODEL, spec.TINY_PATCH_SIZE) == (
        TINY_MODEL_NAME,
        TINY_CONFIG["vision_cfg"]["patch_size"],
    )
    assert {"ViT-B-32", "RN50", TINY_MODEL_NAME} <= spec.open_clip_models()


def test_tiny_model_encodes_unnormalized_features():
    model, _, tokenizer = create_model(TINY_MODEL_NAME)
    data = shapes_dataset(4, seed=0)
    image_emb, text_emb = encode(model, array_to_tensor(data.images, model), tokenizer(data.captions))
    assert image_emb.shape == text_emb.shape == (4, TINY_CONFIG["embed_dim"])
    assert not torch.allclose(image_emb.norm(dim=-1), torch.ones(4))


def test_the_loss_and_the_evaluation_share_the_models_similarity():
    params = expand("clip", "offline", variants=["learn"], seeds=[0])[0].params
    model, loss = pipeline.build(params)
    assert loss.similarity is model.similarity is ADAPTER.similarity(model)
    with ADAPTER.scored_with(model, "dot") as scored:
        assert scored.similarity.variant == "dot" and loss.similarity.variant == "learn"
    assert model.similarity is loss.similarity


# --- metrics -----------------------------------------------------------------------------------------


def test_recall_counts_any_caption_of_the_image_and_ties_for_the_query():
    # 2 images, 3 captions: captions 0, 1 -> image 0; caption 2 -> image 1.
    caption_image = torch.tensor([0, 0, 1])
    i2t = torch.tensor([[0.1, 0.9, 0.5], [0.8, 0.2, 0.3]])
    assert pipeline.recall_image_to_text(i2t, caption_image, 1) == 0.5
    assert pipeline.recall_image_to_text(i2t, caption_image, 3) == 1.0
    t2i = torch.tensor([[0.2, 0.9], [0.7, 0.1], [0.4, 0.4]])
    assert pipeline.recall_text_to_image(t2i, caption_image, 1) == pytest.approx(2 / 3)


def test_retrieval_analysis_on_random_embeddings():
    torch.manual_seed(3)
    image, text = torch.randn(40, 8), torch.randn(40, 8)
    text[:20] = image[:20] * 2.0  # half the pairs match exactly
    out = pipeline.retrieval_analysis(image, text, np.arange(40), make_similarity("qnorm"), pool_k=5)
    for key in ("r1_i2t_cosine", "r1_t2i_dot", "r5_i2t_dot", "r1_i2t", "r1_mean"):
        assert 0.0 <= out[key] <= 1.0
    assert out["r1_i2t_cosine"] >= 0.5 and out["r1_t2i_cosine"] >= 0.5
    assert math.isfinite(out["cohen_d_text"]) and math.isfinite(out["cohen_d_image"])
    assert out["text_norm_mean"] > out["image_norm_mean"]
    assert "per_query" not in out
    table = pipeline.recall_table(pipeline.retrieval(image, text, np.arange(40), make_similarity("qnorm")))
    assert list(table.columns) == ["as trained", "cosine", "dot"]
    assert table.loc["R@1 i2t", "cosine"] == out["r1_i2t_cosine"]


def test_units_hold_the_runs_and_the_zero_shot_hits():
    image, text = torch.randn(6, 4), torch.randn(6, 4)
    metrics = pipeline.retrieval(image, text, np.arange(6), make_similarity("cosine"))
    zero_shot = {"source": "x", "per_query": pipeline.retrieval(image, text, np.arange(6))["per_query"]}
    units = pipeline.units(metrics, zero_shot)
    assert "per_query" not in metrics and "per_query" not in zero_shot
    assert {"r1_i2t", "r1_t2i_dot", "zs/r1_i2t_cosine", "zs/r1_t2i_dot"} <= set(units)
    assert "zs/r1_i2t" not in units  # the zero-shot model has no training score of its own
    ids, hits = units["r1_i2t"]
    assert ids[0] == "image0" and np.mean(hits) == pytest.approx(metrics["r1_i2t"])


def test_config_names_cover_the_papers_six():
    for (variant, direction), name in tables.PAPER_CONFIGS.items():
        assert tables.config_name(variant, direction) == name
    assert tables.config_name("dnorm", "i2t") == "txtnorm_i2t"
    assert tables.config_name("dnorm", "t2i") == "imgnorm_t2i"


def test_task_symmetry_follows_the_loss_direction():
    family = get_family("clip")
    assert family.symmetry_of({"loss_direction": "sym"}).symmetric
    assert not family.symmetry_of({"loss_direction": "i2t"}).symmetric
    assert family.symmetry_of({"loss_direction": "t2i"}).query_role == "text"
    assert family.primary_metric_of({"loss_direction": "i2t"}) == "r1_i2t"


def test_hook_table_names_the_normalized_side_per_direction():
    table = pipeline.hook_table({"variant": "qnorm", "loss_direction": "i2t"})
    assert table.loc["i2t"].tolist() == ["image", "text", True, False, True]
    assert table.loc["t2i"].tolist() == ["text", "image", True, False, False]


# --- data ------------------------------------------------------------------------------------------


def test_shapes_are_deterministic_and_seed_dependent():
    a, b = shapes_dataset(30, seed=4), shapes_dataset(30, seed=4)
    assert np.array_equal(a.images, b.images) and a.captions == b.captions
    c = shapes_dataset(30, seed=5)
    assert not np.array_equal(a.images, c.images)
    assert a.images.shape == (30, 32, 32, 3) and a.images.dtype == np.uint8
    assert all(cap.startswith("a ") for cap in a.captions)
    train, test = shapes_splits(20, 10, seed=0)
    assert len(train.captions) == 20 and len(test.captions) == 10
    assert not np.array_equal(train.images[:10], test.images)


def test_shapes_captions_name_the_drawn_colours():
    data = shapes_dataset(200, seed=0, two_object_fraction=0.0)
    for image, caption in zip(data.images, data.captions, strict=True):
        colour = caption.split()[2]
        target = np.array(COLORS[colour], dtype=float)
        distance = np.abs(image.reshape(-1, 3).astype(float) - target).max(1)
        assert distance.min() < 50, caption  # the tint jitter has SD 12 per channel


def test_coco_loader_reads_the_fixture():
    data = load_coco_captions(COCO / "annotations" / "captions_val2017.json", COCO / "val2017")
    assert [Path(p).name for p in data.images] == ["000000000139.jpg", "000000000285.jpg", "000000000632.jpg"]
    # Annotation order (by id); the one pointing at an unlisted image is dropped; whitespace collapsed.
    assert data.captions[0] == "A big brown bear sitting in the grass."
    assert data.captions[1] == "A living room with a television and a fireplace."
    assert data.caption_image.tolist() == [1, 0, 2, 0, 1]
    assert data.image_captions() == {0: [1, 3], 1: [0, 4], 2: [2]}
    first = data.first_caption_pairs()
    assert first.captions[0].startswith("A living room") and first.caption_image.tolist() == [0, 1, 2]
    small = load_coco_captions(COCO / "annotations" / "captions_val2017.json", COCO / "val2017", max_images=2)
    assert small.n_images == 2 and len(small.captions) == 4


def test_coco_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="annotation file"):
        load_coco_captions(tmp_path / "nope.json", COCO / "val2017")
    with pytest.raises(FileNotFoundError, match="images missing"):
        load_coco_captions(COCO / "annotations" / "captions_val2017.json", tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": []}')
    with pytest.raises(ValueError, match="annotations"):
        load_coco_captions(bad, tmp_path)


def test_coco_images_embed_through_the_model_transform():
    overrides = {
        "dataset": "coco",
        "data_dir": str(COCO),
        "coco_train_annotations": "annotations/captions_val2017.json",
        "coco_train_images": "val2017",
        "eval_batch_size": 2,
    }
    params = expand("clip", "offline", variants=["cosine"], seeds=[0], overrides=overrides)[0].params
    train, test = pipeline.load_data(params)
    model, _ = pipeline.build(params)
    image_emb, text_emb = pipeline.embed(model, test, params)
    assert image_emb.shape[0] == 3 and text_emb.shape[0] == 5
    out = pipeline.retrieval_analysis(image_emb, text_emb, test.caption_image, pool_k=1)
    assert 0.0 <= out["r1_i2t_cosine"] <= 1.0
    images, tokens = next(iter(ADAPTER.loader(model, train, {**params, "batch_size": 2})))
    assert images.shape == (2, 3, 32, 32) and tokens.shape[0] == 2


# --- profiles ----------------------------------------------------------------------------------------


def test_offline_profile_is_the_nine_configurations():
    points = expand("clip", "offline")
    configs = {tables.config_name(p.params["variant"], p.params["loss_direction"]) for p in points}
    assert set(tables.PAPER_CONFIGS.values()) <= configs and len(configs) == 9
    assert len(points) == 27


def test_paper_profile_expands_with_coco_present(tmp_path):
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    for name in ("captions_train2017.json", "captions_val2017.json"):
        (root / "annotations" / name).write_text("{}")
    (root / "train2017").mkdir()
    (root / "val2017").mkdir()
    points = expand("clip", "paper", overrides={"data_dir": str(root)})
    assert {p.params["model"] for p in points} == {"ViT-B-32"}
    assert all(p.params["zero_shot_pretrained"] == "openai" for p in points)
    assert len(expand("clip", "paper", check_data=False)) == len(points) == 27


# --- report ------------------------------------------------------------------------------------------


def test_table6_sits_beside_the_papers_numbers():
    table = tables.table6(fake_records(seeds=(0,), configs=[("cosine", "sym")]))
    assert table.loc["norm_sym", ("cos_r1_i2t", "paper")] == "38.40"
    assert table.loc["nonorm_sym", ("cos_r1_i2t", "ours")] == "—"
    assert len(tables.zero_shot_table(fake_records())) == 3


def test_clip_claims_evaluate_on_its_records():
    out = evaluate(fake_records(), load_claims(["clip"])).set_index(["id", "setting"])
    assert out["verdict"].isin(VERDICTS).all()
    # the rule follows each loss direction's symmetry; the zero-shot claim needs real CLIP weights
    assert "symmetric" in out.loc[("clip.rule", "loss_direction=sym, dataset=shapes"), "reason"]
    assert "asymmetric" in out.loc[("clip.rule", "loss_direction=i2t, dataset=shapes"), "reason"]
    zero_shot = out.loc[("clip.zero_shot.dot_hurts", "dataset=shapes")]
    assert zero_shot["verdict"] == "untestable here" and "no pretrained CLIP weights" in zero_shot["reason"]
    one_seed = evaluate(fake_records(seeds=(0,)), load_claims(["clip"]))
    assert (one_seed["verdict"] == "untestable here").all()


def test_reference_maps_table6_onto_grid_points():
    ref = tables.reference()
    row = ref[(ref.config == "imgnorm_i2t") & (ref.metric == "cohen_d_image")].iloc[0]
    assert (row.variant, row.setting, row.value) == ("qnorm", "i2t", 5.72)
    assert set(ref.config) == set(tables.PAPER_CONFIGS.values())
