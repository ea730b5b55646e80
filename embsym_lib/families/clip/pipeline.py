"""The CLIP family's steps, in the order its notebook runs them: data, the model with the grid in its loss,
training (open_clip-style loop), retrieval evaluation under the run's own score and under cosine and dot,
the magnitude diagnostics and the zero-shot analysis, and the per-query units of the record."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch

from ...adapters.open_clip import ADAPTER, ClipModel, GridClipLoss
from ...data.clip import ImageCaptionSet, load_coco_captions, shapes_splits
from ...diagnostics import norm_stats, relevance_magnitude_d
from ...records import project_path
from ...similarity import NORMALIZED_SIDES, Similarity, pairwise
from .spec import KS
from .tables import PAPER_CLAIM, config_name

SCORINGS: tuple[str, ...] = ("cosine", "dot")
DIRECTIONS: tuple[str, ...] = ("i2t", "t2i")

# --- 1. data -------------------------------------------------------------------------------------------


def load_data(params: dict[str, Any]) -> tuple[ImageCaptionSet, ImageCaptionSet]:
    """(train, test). Shapes: rendered from ``data_seed`` (the same for every run seed)."""
    if params["dataset"] == "shapes":
        return shapes_splits(
            params["n_train"],
            params["n_test"],
            seed=params["data_seed"],
            image_size=params["image_size"],
            two_object_fraction=params["two_object_fraction"],
        )
    root = project_path(params["data_dir"])
    train = load_coco_captions(
        root / params["coco_train_annotations"],
        root / params["coco_train_images"],
        params["max_train_images"],
    )
    test = load_coco_captions(
        root / params["coco_test_annotations"], root / params["coco_test_images"], params["max_test_images"]
    )
    return train, test


def describe_data(train: ImageCaptionSet, test: ImageCaptionSet) -> dict[str, Any]:
    return {
        "train_images": train.n_images,
        "train_captions": len(train.captions),
        "test_images": test.n_images,
        "test_captions": len(test.captions),
        "test_distinct_captions": len(set(test.captions)),
        "example_captions": test.captions[:5],
    }


# --- 2. the model and the scoring hook -------------------------------------------------------------------


def build(params: dict[str, Any]) -> tuple[ClipModel, GridClipLoss]:
    """The run's open_clip model (random init, seeded by the run) and ``GridClipLoss`` scoring with its
    variant (for learn, the same ``LearnableSimilarity`` the model evaluates with)."""
    model = ADAPTER.build_model(params)
    return model, ADAPTER.make_loss(model, params)


def hook_table(params: dict[str, Any]) -> pd.DataFrame:
    """Which side the run's variant normalizes in each of the loss's logit matrices (the query is the
    first argument of the grid's score), and whether the loss trains that direction."""
    variant, direction = params["variant"], params["loss_direction"]
    sides = NORMALIZED_SIDES.get(variant, ("learned γ", "learned γ"))
    rows = [
        {
            "logits": name,
            "query": query,
            "candidate": candidate,
            "query normalized": sides[0],
            "candidate normalized": sides[1],
            "trained": direction in ("sym", name),
        }
        for name, query, candidate in (("i2t", "image", "text"), ("t2i", "text", "image"))
    ]
    return pd.DataFrame(rows).set_index("logits")


# --- 3. training ---------------------------------------------------------------------------------------


def train(
    model: ClipModel,
    loss: GridClipLoss,
    data: ImageCaptionSet,
    params: dict[str, Any],
    log: Callable[[str], None] = print,
) -> dict[str, list[float]]:
    """Per-step loss, logit scale and mean feature norms (``ADAPTER.fit``)."""
    return ADAPTER.fit(model, loss, data, params, log)


def curves(history: dict[str, list[float]], every: int = 1) -> dict[str, dict[str, list]]:
    steps = history["step"][::every]
    return {name: {"x": steps, "y": history[name][::every]} for name in history if name != "step"}


def training_summary(history: dict[str, list[float]], similarity: Similarity) -> dict[str, float]:
    """The final logit scale and training loss (and learn's γ) as record metrics."""
    out = {"final_logit_scale": history["logit_scale"][-1], "final_train_loss": history["loss"][-1]}
    if hasattr(similarity, "gammas"):
        out.update(similarity.gammas())
    return out


# --- 4. evaluation and cross-evaluation ----------------------------------------------------------------


def embed(
    model: ClipModel, data: ImageCaptionSet, params: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unnormalized image and text embeddings of a set (CPU float32)."""
    return ADAPTER.embed(model, data, params)


def ranks_image_to_text(scores: torch.Tensor, caption_image: torch.Tensor) -> torch.Tensor:
    """0-based rank of each image's best-scored own caption. scores: [images, captions]."""
    relevant = caption_image.unsqueeze(0) == torch.arange(scores.shape[0]).unsqueeze(1)
    best_relevant = scores.masked_fill(~relevant, float("-inf")).max(dim=1, keepdim=True).values
    # Ties count in the query's favour; the other captions of the same image score <= best_relevant.
    return (scores > best_relevant).sum(dim=1)


def ranks_text_to_image(scores: torch.Tensor, caption_image: torch.Tensor) -> torch.Tensor:
    """0-based rank of each caption's image. scores: [captions, images]."""
    return (scores > scores.gather(1, caption_image.unsqueeze(1))).sum(dim=1)


def recall_image_to_text(scores: torch.Tensor, caption_image: torch.Tensor, k: int) -> float:
    """Share of images with one of their captions among the top k."""
    return float((ranks_image_to_text(scores, caption_image) < k).float().mean())


def recall_text_to_image(scores: torch.Tensor, caption_image: torch.Tensor, k: int) -> float:
    """Share of captions whose image is among the top k."""
    return float((ranks_text_to_image(scores, caption_image) < k).float().mean())


def retrieval(
    image_emb: torch.Tensor, text_emb: torch.Tensor, caption_image, similarity: Similarity | None = None
) -> dict[str, Any]:
    """R@1/R@5 in both directions scored with cosine and with dot (``r1_i2t_cosine``, ...: the same
    embeddings under two fixed variants, the cross-evaluation) and, given ``similarity`` (the run's own
    training score), unsuffixed (``r1_i2t``, ``r1_mean``, ...). ``per_query``: each R@1's hits per query
    (images for i2t, captions for t2i), name -> (ids, 0/1 values)."""
    caption_image_t = torch.as_tensor(np.asarray(caption_image), dtype=torch.long)
    out: dict[str, Any] = {}
    hits: dict[str, tuple[list[str], list[float]]] = {}
    image_ids = [f"image{i}" for i in range(image_emb.shape[0])]
    caption_ids = [f"caption{j}" for j in range(text_emb.shape[0])]

    def record(suffix: str, i2t: torch.Tensor, t2i: torch.Tensor) -> None:
        rank_i2t = ranks_image_to_text(i2t, caption_image_t)
        rank_t2i = ranks_text_to_image(t2i, caption_image_t)
        for k in KS:
            out[f"r{k}_i2t{suffix}"] = float((rank_i2t < k).float().mean())
            out[f"r{k}_t2i{suffix}"] = float((rank_t2i < k).float().mean())
        hits[f"r1_i2t{suffix}"] = (image_ids, (rank_i2t < 1).float().tolist())
        hits[f"r1_t2i{suffix}"] = (caption_ids, (rank_t2i < 1).float().tolist())

    for scoring in SCORINGS:
        record(f"_{scoring}", pairwise(image_emb, text_emb, scoring), pairwise(text_emb, image_emb, scoring))
    if similarity is not None:
        with torch.no_grad():
            record("", similarity.pairwise(image_emb, text_emb), similarity.pairwise(text_emb, image_emb))
        out["r1_mean"] = 0.5 * (out["r1_i2t"] + out["r1_t2i"])
    out["per_query"] = hits
    return out


def recall_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """R@1 and R@5 per direction, under each scoring (the run's own score: "as trained")."""
    scorings = {"as trained": ""} if "r1_i2t" in metrics else {}
    scorings.update({s: f"_{s}" for s in SCORINGS})
    return pd.DataFrame(
        {
            name: {f"R@{k} {d}": metrics[f"r{k}_{d}{suffix}"] for d in DIRECTIONS for k in KS}
            for name, suffix in scorings.items()
        }
    ).rename_axis("scored with →")


# --- 5. diagnostics ------------------------------------------------------------------------------------


def magnitudes(
    image_emb: torch.Tensor, text_emb: torch.Tensor, caption_image, pool_k: int = 10
) -> dict[str, float]:
    """Cohen's d of magnitudes and norm statistics.

    Cohen's d (the paper's "matched vs unmatched"): text magnitudes of each image's captions vs its
    ``pool_k`` top-ranked other captions (image -> text, ranked by cosine so the pool itself does not
    depend on magnitude), and image magnitudes of each caption's image vs its ``pool_k`` top-ranked other
    images (text -> image). With one caption per image, the whole corpus as pool gives d = 0 by
    construction (each item is matched once and unmatched N-1 times), hence the hard-negative pool.
    """
    cosine_i2t = pairwise(image_emb, text_emb, "cosine").numpy()
    cosine_t2i = pairwise(text_emb, image_emb, "cosine").numpy()
    image_norms, text_norms = image_emb.norm(dim=-1).numpy(), text_emb.norm(dim=-1).numpy()
    caption_image = np.asarray(caption_image).tolist()
    captions_of: dict[int, list[int]] = {}
    for j, i in enumerate(caption_image):
        captions_of.setdefault(int(i), []).append(j)
    out = {
        "cohen_d_text": relevance_magnitude_d(
            text_norms, captions_of, pool="top_k", scores=cosine_i2t, k=pool_k
        )
    }
    image_of = {j: [int(i)] for j, i in enumerate(caption_image)}
    out["cohen_d_image"] = relevance_magnitude_d(
        image_norms, image_of, pool="top_k", scores=cosine_t2i, k=pool_k
    )
    for side, emb in (("image", image_emb), ("text", text_emb)):
        stats = norm_stats(emb)
        out[f"{side}_norm_mean"], out[f"{side}_norm_cv"] = stats["mean"], stats["cv"]
    return out


def retrieval_analysis(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    caption_image,
    similarity: Similarity | None = None,
    pool_k: int = 10,
    per_query: bool = False,
) -> dict[str, Any]:
    """``retrieval`` and ``magnitudes`` in one dict (``per_query`` only if asked for)."""
    out = retrieval(image_emb, text_emb, caption_image, similarity)
    if not per_query:
        out.pop("per_query")
    return {**out, **magnitudes(image_emb, text_emb, caption_image, pool_k)}


def run_zero_shot(params: dict[str, Any]) -> bool:
    """Once per seed, on the norm_sym point: the analysis does not depend on the grid point."""
    return params["zero_shot"] and params["variant"] == "cosine" and params["loss_direction"] == "sym"


def zero_shot_analysis(params: dict[str, Any], data: ImageCaptionSet, trained: ClipModel) -> dict[str, Any]:
    """The zero-shot path: a pretrained open_clip checkpoint (``zero_shot_model`` +
    ``zero_shot_pretrained``) analysed on ``data`` with cosine and dot scoring and Cohen's d. Without
    a checkpoint (the offline profile: no CLIP weights ship offline) the ``trained`` model is analysed
    instead, as a stand-in."""
    if params["zero_shot_model"]:
        model = ADAPTER.build_model(params, params["zero_shot_model"], params["zero_shot_pretrained"])
        source = f"{params['zero_shot_model']} ({params['zero_shot_pretrained'] or 'random init'})"
    else:
        model = trained
        source = "stand-in: this run's trained model (no pretrained CLIP weights offline)"
    image_emb, text_emb = embed(model, data, params)
    metrics = retrieval_analysis(
        image_emb, text_emb, data.caption_image, pool_k=params["magnitude_pool_k"], per_query=True
    )
    return {"source": source, "per_query": metrics.pop("per_query"), "metrics": metrics}


# --- 6. record -----------------------------------------------------------------------------------------


def units(metrics: dict[str, Any], zero_shot: dict[str, Any] | None) -> dict[str, Any]:
    """The record's per-query sidecar: R@1 hits of this run (popped from ``metrics``) and, where the
    zero-shot analysis ran, of the zero-shot model (``zs/...``, popped from ``zero_shot``)."""
    out = dict(metrics.pop("per_query", {}))
    if zero_shot:
        out.update({f"zs/{name}": v for name, v in zero_shot.pop("per_query", {}).items()})
    return out


def extra(params: dict[str, Any], data_summary: dict[str, Any], zero_shot: dict[str, Any] | None) -> dict:
    """The record's ``extra``: the paper's configuration name, the data, the zero-shot analysis."""
    return {
        "config": config_name(params["variant"], params["loss_direction"]),
        "data": data_summary,
        "zero_shot": zero_shot,
        "paper_claim": PAPER_CLAIM,
    }
