import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
from open_clip.loss import ClipLoss

from embsym_lib.adapters import open_clip as clip_adapter
from embsym_lib.claims import VERDICTS, evaluate, load_claims
from embsym_lib.data.clip import COLORS, load_coco_captions, shapes_dataset, shapes_splits
from embsym_lib.families import clip, get_family
from embsym_lib.losses import info_nce, symmetric_info_nce
from embsym_lib.params import ParamError, expand, validate_point
from embsym_lib.records import read_units
from embsym_lib.similarity import FIXED_VARIANTS, make_similarity, pairwise, power_normalize

matplotlib.use("Agg")

COCO = Path(__file__).parent / "fixtures" / "clip" / "coco"
TINY = {"n_train": 128, "n_test": 48, "epochs": 1, "batch_size": 64}


def offline_point(**overrides):
    return expand("clip", "offline", variants=["cosine"], seeds=[0], overrides=overrides)[0].params


# --- the scoring hook ---------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", FIXED_VARIANTS)
def test_grid_clip_loss_logits_equal_the_library_scores(variant):
    torch.manual_seed(0)
    image, text = torch.randn(6, 8) * 3, torch.randn(6, 8) * 3
    scale = torch.tensor(7.0)
    per_image, per_text = clip_adapter.GridClipLoss(variant).get_logits(image, text, scale)
    torch.testing.assert_close(per_image, 7.0 * pairwise(image, text, variant))
    torch.testing.assert_close(per_text, 7.0 * pairwise(text, image, variant))


@pytest.mark.parametrize("variant", FIXED_VARIANTS)
def test_grid_clip_loss_directions_equal_library_info_nce(variant):
    torch.manual_seed(1)
    image, text = torch.randn(5, 4), torch.randn(5, 4)
    sym = clip_adapter.GridClipLoss(variant, "sym")(image, text, torch.tensor(20.0))
    i2t = clip_adapter.GridClipLoss(variant, "i2t")(image, text, torch.tensor(20.0))
    t2i = clip_adapter.GridClipLoss(variant, "t2i")(image, text, torch.tensor(20.0))
    torch.testing.assert_close(sym, symmetric_info_nce(image, text, variant, scale=20.0))
    torch.testing.assert_close(i2t, info_nce(image, text, variant, scale=20.0))
    torch.testing.assert_close(t2i, info_nce(text, image, variant, scale=20.0))


def test_cosine_grid_loss_equals_open_clips_own_loss_on_normalized_features():
    torch.manual_seed(2)
    image, text = torch.randn(7, 5), torch.randn(7, 5)
    ours = clip_adapter.GridClipLoss("cosine")(image, text, torch.tensor(14.3))
    stock = ClipLoss()(
        torch.nn.functional.normalize(image), torch.nn.functional.normalize(text), torch.tensor(14.3)
    )
    torch.testing.assert_close(ours, stock)


def test_learnable_similarity_in_the_loss_trains_its_gammas():
    loss_fn = clip_adapter.GridClipLoss(make_similarity("learn"), "sym")
    image, text = torch.randn(4, 3), torch.randn(4, 3)
    per_image, _ = loss_fn.get_logits(image, text, torch.tensor(1.0))
    expected = power_normalize(image, 0.5) @ power_normalize(text, 0.5).T
    torch.testing.assert_close(per_image, expected)
    loss_fn(image, text, torch.tensor(1.0)).backward()
    assert loss_fn.similarity.raw_gamma_q.grad is not None


def test_unknown_direction_and_multi_process_are_refused():
    with pytest.raises(ValueError, match="loss_direction"):
        clip_adapter.GridClipLoss("dot", "both")
    with pytest.raises(ValueError, match="world_size"):
        clip_adapter.GridClipLoss("dot", "sym", world_size=2)


def test_tiny_model_encodes_unnormalized_features():
    model, _, tokenizer = clip_adapter.build_model(clip_adapter.TINY_MODEL_NAME)
    data = shapes_dataset(4, seed=0)
    images = clip_adapter.array_to_tensor(data.images, model)
    image_emb, text_emb = clip_adapter.encode(model, images, tokenizer(data.captions))
    assert image_emb.shape == text_emb.shape == (4, clip_adapter.TINY_CONFIG["embed_dim"])
    assert not torch.allclose(image_emb.norm(dim=-1), torch.ones(4))


# --- metrics -----------------------------------------------------------------------------------------


def test_recall_counts_any_caption_of_the_image_and_ties_for_the_query():
    # 2 images, 3 captions: captions 0, 1 -> image 0; caption 2 -> image 1.
    caption_image = torch.tensor([0, 0, 1])
    i2t = torch.tensor([[0.1, 0.9, 0.5], [0.8, 0.2, 0.3]])
    assert clip.recall_image_to_text(i2t, caption_image, 1) == 0.5
    assert clip.recall_image_to_text(i2t, caption_image, 3) == 1.0
    t2i = torch.tensor([[0.2, 0.9], [0.7, 0.1], [0.4, 0.4]])
    assert clip.recall_text_to_image(t2i, caption_image, 1) == pytest.approx(2 / 3)


def test_retrieval_analysis_on_random_embeddings():
    torch.manual_seed(3)
    image, text = torch.randn(40, 8), torch.randn(40, 8)
    text[:20] = image[:20] * 2.0  # half the pairs match exactly
    out = clip.retrieval_analysis(image, text, np.arange(40), make_similarity("qnorm"), pool_k=5)
    for key in ("r1_i2t_cosine", "r1_t2i_dot", "r5_i2t_dot", "r1_i2t", "r1_mean"):
        assert 0.0 <= out[key] <= 1.0
    assert out["r1_i2t_cosine"] >= 0.5 and out["r1_t2i_cosine"] >= 0.5
    assert math.isfinite(out["cohen_d_text"]) and math.isfinite(out["cohen_d_image"])
    assert out["text_norm_mean"] > out["image_norm_mean"]


def test_config_names_cover_the_papers_six():
    for (variant, direction), name in clip.PAPER_CONFIGS.items():
        assert clip.config_name(variant, direction) == name
    assert clip.config_name("dnorm", "i2t") == "txtnorm_i2t"
    assert clip.config_name("dnorm", "t2i") == "imgnorm_t2i"


def test_task_symmetry_follows_the_loss_direction():
    spec = get_family("clip")
    assert spec.symmetry_of({"loss_direction": "sym"}).symmetric
    assert not spec.symmetry_of({"loss_direction": "i2t"}).symmetric
    assert spec.symmetry_of({"loss_direction": "t2i"}).query_role == "text"
    assert spec.primary_metric_of({"loss_direction": "i2t"}) == "r1_i2t"


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
    params = offline_point(
        dataset="coco",
        coco_root=str(COCO),
        coco_train_annotations="annotations/captions_val2017.json",
        coco_train_images="val2017",
        eval_batch_size=2,
    )
    train, test = clip.load_data(params)
    model, preprocess, tokenizer = clip.build_model(params)
    image_emb, text_emb = clip.embed(model, preprocess, tokenizer, test, params)
    assert image_emb.shape[0] == 3 and text_emb.shape[0] == 5
    out = clip.retrieval_analysis(image_emb, text_emb, test.caption_image, pool_k=1)
    assert 0.0 <= out["r1_i2t_cosine"] <= 1.0
    loader = clip.train_loader(train, model, preprocess, tokenizer, {**params, "batch_size": 2})
    images, tokens = next(iter(loader))
    assert images.shape == (2, 3, 32, 32) and tokens.shape[0] == 2


# --- validation --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"dataset": "flickr"}, "unknown dataset"),
        ({"dataset": "coco", "coco_root": ""}, "coco_root"),
        ({"dataset": "coco", "coco_root": str(COCO)}, "coco_train_annotations"),
        ({"n_train": 10}, "batch_size"),
        ({"model": "ViT-Q-99"}, "unknown open_clip model"),
        ({"zero_shot_model": "nope"}, "unknown open_clip model"),
        ({"image_size": 36}, "multiple of"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_validation_errors(overrides, message):
    with pytest.raises(ParamError, match=message):
        expand("clip", "offline", variants=["cosine"], seeds=[0], overrides=overrides)


def test_unknown_loss_direction_is_refused():
    params = {**offline_point(), "loss_direction": "both"}
    with pytest.raises(ParamError, match="loss_direction"):
        validate_point(get_family("clip"), params)


def test_offline_profile_is_the_nine_configurations():
    points = expand("clip", "offline")
    configs = {clip.config_name(p.params["variant"], p.params["loss_direction"]) for p in points}
    assert set(clip.PAPER_CONFIGS.values()) <= configs and len(configs) == 9
    assert len(points) == 27


def test_paper_profile_expands_with_coco_present(tmp_path):
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    for name in ("captions_train2017.json", "captions_val2017.json"):
        (root / "annotations" / name).write_text("{}")
    (root / "train2017").mkdir()
    (root / "val2017").mkdir()
    points = expand("clip", "paper", overrides={"coco_root": str(root)})
    assert {p.params["model"] for p in points} == {"ViT-B-32"}
    assert all(p.params["zero_shot_pretrained"] == "openai" for p in points)


# --- report ------------------------------------------------------------------------------------------


def synthetic_records(seeds=(0, 1, 2), configs=None) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for variant, direction in configs or [
        (v, d) for v in ("cosine", "dot", "qnorm") for d in ("sym", "i2t", "t2i")
    ]:
        for seed in seeds:
            metrics = {m: float(rng.uniform(0.05, 0.5)) for m in clip.METRICS}
            metrics.update(cohen_d_image=float(rng.normal()), cohen_d_text=float(rng.normal()))
            zero_shot = None
            if (variant, direction) == ("cosine", "sym"):
                zero_shot = {"source": "stand-in: test", "metrics": dict(metrics)}
            rows.append(
                {
                    "family": "clip",
                    "profile": "offline",
                    "run_id": f"{variant}-{direction}-{seed}",
                    "variant": variant,
                    "seed": seed,
                    "status": "complete",
                    "wall_time_s": 1.0,
                    "loss_direction": direction,
                    "dataset": "shapes",
                    **metrics,
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
    return pd.DataFrame(rows)


def test_report_runs_on_full_and_partial_records():
    clip.report(synthetic_records())
    clip.report(synthetic_records(seeds=(0,), configs=[("dot", "i2t")]))
    clip.report(pd.DataFrame())
    table = clip.table6(synthetic_records(seeds=(0,), configs=[("cosine", "sym")]))
    assert table.loc["norm_sym", ("cos_r1_i2t", "paper")] == "38.40"


def test_clip_claims_evaluate_on_its_records():
    out = evaluate(synthetic_records(), load_claims(["clip"])).set_index(["id", "setting"])
    assert out["verdict"].isin(VERDICTS).all()
    # the rule follows each loss direction's symmetry; the zero-shot claim needs real CLIP weights
    assert "symmetric" in out.loc[("clip.rule", "loss_direction=sym, dataset=shapes"), "reason"]
    assert "asymmetric" in out.loc[("clip.rule", "loss_direction=i2t, dataset=shapes"), "reason"]
    zero_shot = out.loc[("clip.zero_shot.dot_hurts", "dataset=shapes")]
    assert zero_shot["verdict"] == "untestable here" and "no pretrained CLIP weights" in zero_shot["reason"]
    one_seed = evaluate(synthetic_records(seeds=(0,)), load_claims(["clip"]))
    assert (one_seed["verdict"] == "untestable here").all()


def test_reference_maps_table6_onto_grid_points():
    ref = clip.reference()
    row = ref[(ref.config == "imgnorm_i2t") & (ref.metric == "cohen_d_image")].iloc[0]
    assert (row.variant, row.setting, row.value) == ("qnorm", "i2t", 5.72)
    assert set(ref.config) == set(clip.PAPER_CONFIGS.values())


# --- end to end --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_notebook_end_to_end(tmp_path):
    from embsym_lib.runner import run_grid

    points = [
        p
        for p in expand("clip", "offline", variants=["qnorm"], seeds=[0], overrides=TINY)
        if p.axes["loss_direction"] == "i2t"
    ]
    (result,) = run_grid(points, outputs_dir=tmp_path)
    assert result.status == "complete", result.error
    metrics = result.record["metrics"]
    for name in clip.METRICS:
        assert 0.0 <= metrics[name] <= 1.0, name
    assert math.isfinite(metrics["cohen_d_image"]) and metrics["final_logit_scale"] <= 100.0 + 1e-4
    assert result.record["extra"]["config"] == "imgnorm_i2t"
    assert len(result.record["curves"]["loss"]["y"]) == TINY["n_train"] // TINY["batch_size"]
    units = read_units(result.run_dir)
    for name in ("r1_i2t", "r1_t2i", "r1_i2t_cosine", "r1_t2i_dot"):
        ids, hits = units[name]
        assert np.mean(hits) == pytest.approx(metrics[name]), name
