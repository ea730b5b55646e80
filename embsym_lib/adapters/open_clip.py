"""open_clip adapter: the grid enters through ``ClipLoss.get_logits``; open_clip builds, encodes and
computes the loss.

- ``GridClipLoss`` subclasses open_clip's ``ClipLoss`` and replaces only its logits: image -> text
  logits score image queries against text candidates with the grid variant, text -> image logits
  score text queries against image candidates. So qnorm with the image -> text loss normalizes the
  image side (the paper's "imgnorm I2T"), qnorm with the text -> image loss the text side, and qnorm
  with the symmetric loss normalizes whichever side is the query in each direction (as
  ``embsym_lib.losses.symmetric_info_nce`` does). ``direction`` picks the cross-entropy terms:
  ``sym`` is ClipLoss's own average of both, ``i2t`` / ``t2i`` keep one.
- ``CLIP.forward`` always normalizes both sides, so training calls ``encode_image`` /
  ``encode_text`` (unnormalized) and hands the raw features to the loss.
- ``TINY_CONFIG`` is a ~3M-parameter ViT/transformer pair for 32 px images and short captions,
  registered with ``open_clip.add_model_config`` under ``embsym-tiny``.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss

from ..similarity import Similarity, as_similarity

LOSS_DIRECTIONS: tuple[str, ...] = ("sym", "i2t", "t2i")
TINY_MODEL_NAME = "embsym-tiny"
TINY_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
# open_clip's stock training loop clamps the learned temperature to this range after every step.
LOGIT_SCALE_MAX = math.log(100.0)
_registered_dir: Path | None = None


def check_direction(direction: str) -> str:
    if direction not in LOSS_DIRECTIONS:
        raise ValueError(
            f"unknown loss_direction {direction!r}; valid directions are: {', '.join(LOSS_DIRECTIONS)}"
        )
    return direction


def register_tiny_config() -> str:
    """Register ``TINY_CONFIG`` with open_clip (once per process); returns its model name."""
    global _registered_dir
    import open_clip

    if _registered_dir is None:
        _registered_dir = Path(tempfile.mkdtemp(prefix="embsym-open-clip-"))
        (_registered_dir / f"{TINY_MODEL_NAME}.json").write_text(json.dumps(TINY_CONFIG))
        open_clip.add_model_config(_registered_dir)
    return TINY_MODEL_NAME


def build_model(model_name: str, pretrained: str = "", device: str = "cpu", image_size: int | None = None):
    """(model, eval image transform, tokenizer). ``pretrained`` "" = random init; otherwise an
    open_clip tag ("openai") or a checkpoint file. ``embsym-tiny`` is registered on demand;
    ``image_size`` overrides the config's (open_clip's ``force_image_size``)."""
    import open_clip

    if model_name == TINY_MODEL_NAME:
        register_tiny_config()
    model, _, preprocess = open_clip.create_model_and_transforms(
        model_name, pretrained=pretrained or None, device=device, force_image_size=image_size
    )
    return model, preprocess, open_clip.get_tokenizer(model_name)


def train_transform(model):
    """open_clip's training image transform for the model (random resized crop + normalize), as
    ``create_model_and_transforms`` builds it."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    return image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=True)


def array_to_tensor(images: np.ndarray, model) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] normalized with the model's image mean/std."""
    cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
    mean = torch.tensor(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))).view(1, 3, 1, 1)
    std = torch.tensor(cfg.get("std", (0.26862954, 0.26130258, 0.27577711))).view(1, 3, 1, 1)
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    return (x - mean) / std


class GridClipLoss(ClipLoss):
    """open_clip's ClipLoss with logits from the normalization grid and a choice of directions."""

    def __init__(self, similarity: str | Similarity, direction: str = "sym", **clip_loss_kwargs):
        if clip_loss_kwargs.get("world_size", 1) > 1:
            raise ValueError("GridClipLoss gathers no features across processes; run with world_size=1")
        super().__init__(**clip_loss_kwargs)
        self.similarity = as_similarity(similarity)
        self.direction = check_direction(direction)

    def get_logits(self, image_features, text_features, logit_scale, logit_bias=None):
        logits_per_image = logit_scale * self.similarity.pairwise(image_features, text_features)
        logits_per_text = logit_scale * self.similarity.pairwise(text_features, image_features)
        if logit_bias is not None:
            logits_per_image = logits_per_image + logit_bias
            logits_per_text = logits_per_text + logit_bias
        return logits_per_image, logits_per_text

    def forward(self, image_features, text_features, logit_scale, logit_bias=None, output_dict=False):
        if self.direction == "sym":
            return super().forward(image_features, text_features, logit_scale, logit_bias, output_dict)
        logits_per_image, logits_per_text = self.get_logits(
            image_features, text_features, logit_scale, logit_bias
        )
        labels = self.get_ground_truth(image_features.device, logits_per_image.shape[0])
        logits = logits_per_image if self.direction == "i2t" else logits_per_text
        loss = F.cross_entropy(logits, labels)
        return {"contrastive_loss": loss} if output_dict else loss


@torch.no_grad()
def encode_images(model, images, batch_size: int = 256, device: str = "cpu") -> torch.Tensor:
    """Unnormalized image features [N, D] (float32, CPU) from a tensor or an iterable of batches."""
    model.eval()
    batches = (
        (images[i : i + batch_size] for i in range(0, len(images), batch_size))
        if torch.is_tensor(images)
        else images
    )
    return torch.cat([model.encode_image(x.to(device), normalize=False).float().cpu() for x in batches])


@torch.no_grad()
def encode_texts(model, tokens: torch.Tensor, batch_size: int = 256, device: str = "cpu") -> torch.Tensor:
    """Unnormalized text features [M, D] (float32, CPU)."""
    model.eval()
    return torch.cat(
        [
            model.encode_text(tokens[i : i + batch_size].to(device), normalize=False).float().cpu()
            for i in range(0, len(tokens), batch_size)
        ]
    )


def encode(model, images, tokens: torch.Tensor, batch_size: int = 256, device: str = "cpu"):
    """Unnormalized image and text features ([N, D], [M, D], float32 on the CPU)."""
    return encode_images(model, images, batch_size, device), encode_texts(model, tokens, batch_size, device)


def clamp_logit_scale(model) -> None:
    """What open_clip's training loop does after each optimizer step."""
    with torch.no_grad():
        model.logit_scale.clamp_(0, LOGIT_SCALE_MAX)
