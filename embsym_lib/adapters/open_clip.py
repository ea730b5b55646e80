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
- Training (``ADAPTER.fit``): open_clip's training ``main`` is not importable as a library, so a short
  loop follows it: AdamW (β 0.9/0.98, eps 1e-6, no weight decay on gains, biases, norms and the logit
  scale), linear warmup then cosine decay (open_clip's ``cosine_lr``), gradient clipping, and the
  logit scale clamped to [0, ln 100] after every step.
- ``TINY_CONFIG`` is a ~3M-parameter ViT/transformer pair for 32 px images and short captions,
  registered with ``open_clip.add_model_config`` under ``embsym-tiny``.
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss

from ..runtime import resolve_device
from ..similarity import Similarity, as_similarity, make_similarity

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


def create_model(model_name: str, pretrained: str = "", device: str = "cpu", image_size: int | None = None):
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


# --- encoding ----------------------------------------------------------------------------------------


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


class PathImages(torch.utils.data.Dataset):
    """Images from files through a transform; with ``rows`` (caption, image) pairs: (image, tokens)."""

    def __init__(self, paths: list[str], transform, tokens: torch.Tensor | None = None, rows=None):
        self.paths, self.transform, self.tokens, self.rows = paths, transform, tokens, rows

    def __len__(self):
        return len(self.rows) if self.rows is not None else len(self.paths)

    def __getitem__(self, i):
        from PIL import Image

        if self.rows is None:
            return self.transform(Image.open(self.paths[i]).convert("RGB"))
        caption, image = self.rows[i]
        return self.transform(Image.open(self.paths[image]).convert("RGB")), self.tokens[caption]


def image_tensor(images, model) -> torch.Tensor | None:
    """All images as one tensor when they are in memory (a uint8 array); None for file paths."""
    return array_to_tensor(images, model) if isinstance(images, np.ndarray) else None


# --- training ----------------------------------------------------------------------------------------


def param_groups(model, loss_fn, weight_decay: float) -> list[dict[str, Any]]:
    """open_clip's main: no weight decay on gains, biases, norms and the logit scale (nor on the loss's
    own parameters: learn's γ)."""

    def exclude(name: str, p) -> bool:
        return p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in named if not exclude(n, p)]
    no_decay = [p for n, p in named if exclude(n, p)] + [p for p in loss_fn.parameters() if p.requires_grad]
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """open_clip's cosine_lr factor: linear warmup, then cosine decay to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * progress))


def clamp_logit_scale(model) -> None:
    """What open_clip's training loop does after each optimizer step."""
    with torch.no_grad():
        model.logit_scale.clamp_(0, LOGIT_SCALE_MAX)


# --- the adapter ---------------------------------------------------------------------------------------


@dataclass
class ClipModel:
    """One run's open_clip model with its eval transform and tokenizer, and the grid's ``Similarity``
    that its loss scores with (the hook is the loss: ``make_loss``)."""

    model: Any
    preprocess: Any
    tokenizer: Any
    similarity: Similarity


class OpenClipAdapter:
    """``adapters.Adapter`` for open_clip. ``data``/``split`` are ``data.clip.ImageCaptionSet``s."""

    library = "open_clip_torch"

    def build_model(self, params: dict[str, Any], model_name: str | None = None, pretrained: str = ""):
        """The run's model (``params["model"]``, random init) on its device, or another open_clip model
        (``model_name``, ``pretrained``) with the run's variant; the grid's similarity made after the
        model (the order the seeded initialisation depends on)."""
        name = model_name or params["model"]
        image_size = params["image_size"] if name == TINY_MODEL_NAME else None
        model, preprocess, tokenizer = create_model(name, pretrained, _device(params), image_size)
        return ClipModel(model, preprocess, tokenizer, make_similarity(params["variant"]))

    def similarity(self, model: ClipModel) -> Similarity:
        return model.similarity

    def make_loss(self, model: ClipModel, params: dict[str, Any]) -> GridClipLoss:
        return GridClipLoss(model.similarity, params["loss_direction"])

    def loader(self, model: ClipModel, data, params: dict[str, Any]):
        """Batches of (images, tokens): one row per caption, shuffled by the run seed, last partial batch
        dropped (as open_clip does). Image files go through open_clip's training transform; in-memory
        images (the rendered shapes) are used as drawn (no augmentation)."""
        tokens = model.tokenizer(data.captions)
        generator = torch.Generator().manual_seed(int(params["seed"]))
        sampler = torch.utils.data.BatchSampler(
            torch.utils.data.RandomSampler(range(len(data.captions)), generator=generator),
            batch_size=params["batch_size"],
            drop_last=True,
        )
        images = image_tensor(data.images, model.model)
        if images is not None:
            dataset = torch.utils.data.TensorDataset(images[torch.as_tensor(data.caption_image)], tokens)
            return torch.utils.data.DataLoader(dataset, batch_size=None, sampler=sampler)
        rows = list(zip(range(len(data.captions)), data.caption_image.tolist(), strict=True))
        dataset = PathImages(data.images, train_transform(model.model), tokens, rows)
        return torch.utils.data.DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=params["num_workers"],
            pin_memory=_device(params) == "cuda",
        )

    def fit(
        self,
        model: ClipModel,
        loss: GridClipLoss,
        data,
        params: dict[str, Any],
        log: Callable[[str], None] = print,
    ) -> dict[str, list[float]]:
        """The open_clip-style loop on ``data`` (the training set); returns per-step loss, logit scale
        and mean feature norms."""
        loader = self.loader(model, data, params)
        net, device = model.model, _device(params)
        loss.to(device)
        if not params["learn_logit_scale"]:
            net.logit_scale.requires_grad_(False)
        optimizer = torch.optim.AdamW(
            param_groups(net, loss, params["weight_decay"]),
            lr=params["lr"],
            betas=(0.9, 0.98),
            eps=1e-6,
            fused=True,  # one kernel over the 49k-token embedding table: ~1.5x faster steps on the CPU
        )
        total = params["epochs"] * len(loader)
        warmup = int(params["warmup_ratio"] * total)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, warmup, total))
        names = ("step", "loss", "logit_scale", "image_norm", "text_norm")
        history: dict[str, list[float]] = {name: [] for name in names}
        step = 0
        for epoch in range(params["epochs"]):
            net.train()
            for images, tokens in loader:
                image_features = net.encode_image(images.to(device), normalize=False)
                text_features = net.encode_text(tokens.to(device), normalize=False)
                value = loss(image_features, text_features, net.logit_scale.exp())
                if not torch.isfinite(value):
                    raise FloatingPointError(f"non-finite loss at step {step} (variant {params['variant']})")
                optimizer.zero_grad(set_to_none=True)
                value.backward()
                if params["grad_clip_norm"] > 0:
                    torch.nn.utils.clip_grad_norm_(net.parameters(), params["grad_clip_norm"])
                optimizer.step()
                scheduler.step()
                clamp_logit_scale(net)
                history["step"].append(step)
                history["loss"].append(float(value.detach()))
                history["logit_scale"].append(float(net.logit_scale.detach().exp()))
                history["image_norm"].append(float(image_features.detach().norm(dim=-1).mean()))
                history["text_norm"].append(float(text_features.detach().norm(dim=-1).mean()))
                step += 1
            log(f"epoch {epoch + 1}/{params['epochs']}: loss {np.mean(history['loss'][-len(loader) :]):.4f}")
        return history

    @torch.no_grad()
    def embed(self, model: ClipModel, split, params: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Unnormalized (image, text) embeddings of a set (CPU float32): the image is the query side of
        image -> text retrieval, the text that of text -> image."""
        device, batch = _device(params), params["eval_batch_size"]
        tokens = model.tokenizer(split.captions)
        images = image_tensor(split.images, model.model)
        if images is None:
            images = torch.utils.data.DataLoader(
                PathImages(split.images, model.preprocess),
                batch_size=batch,
                num_workers=params["num_workers"],
            )
        return encode(model.model, images, tokens, batch_size=batch, device=device)

    @contextlib.contextmanager
    def scored_with(self, model: ClipModel, variant: str) -> Iterator[ClipModel]:
        """The model scoring with another fixed variant (its loss, built from it, is not touched)."""
        trained = model.similarity
        model.similarity = make_similarity(variant)
        try:
            yield model
        finally:
            model.similarity = trained


def _device(params: dict[str, Any]) -> str:
    return resolve_device(params.get("device", "cpu"))


ADAPTER = OpenClipAdapter()
