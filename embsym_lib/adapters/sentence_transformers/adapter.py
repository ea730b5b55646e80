"""``ADAPTER``: the sentence-transformers adapter object (``adapters.Adapter``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from ...similarity import Similarity
from .encoders import GridEncoder, build_encoder, encode_texts, with_overrides
from .pairs import PairScore, PairScoreRegressionLoss, pair_evaluator, train_pairs
from .ranking import fit_retriever, retrieval_loss, retrieval_similarity
from .scores import grid_similarity, score_function

# ----------------------------------------------------------------------------------------------
# The adapter object


class SentenceTransformersAdapter:
    """``adapters.Adapter`` for sentence-transformers (retrieval: ``ranking``; STS: ``pairs``)."""

    library = "sentence-transformers"

    def build_model(
        self, params: dict[str, Any], objective: Literal["ranking", "pairs"] = "ranking"
    ) -> GridEncoder:
        model, info = build_encoder(params)
        variant, init_gamma = params["variant"], params.get("init_gamma", 0.5)
        if objective == "ranking":
            score = retrieval_similarity(variant, init_gamma, params.get("scale_matched", False))
        else:
            score = PairScore(variant, params["score_scale"], params["scale_rule"], init_gamma)
        return GridEncoder(model, info, score, objective)

    def similarity(self, model: GridEncoder) -> Similarity:
        return grid_similarity(model.score)

    def make_loss(self, model: GridEncoder, params: dict[str, Any]):
        if model.objective == "pairs":
            return PairScoreRegressionLoss(model.model, model.score)
        from ...distributed import average_gradients_across_ranks

        if isinstance(model.score, nn.Module):  # learn's γ live outside the DDP-wrapped encoder
            average_gradients_across_ranks(model.score)
        return retrieval_loss(
            model.model, model.score, params["scale"], params.get("gather_across_devices", False)
        )

    def fit(
        self,
        model: GridEncoder,
        loss,
        data: dict[str, Any],
        params: dict[str, Any],
        log: Callable[[str], None],
    ) -> dict:
        """``data``: ``train`` (ranking: (query, document) pairs; pairs: a frame with gold scores in
        [0, 1]) and ``dev`` (a RetrievalSet; a frame, or None)."""
        p, output_dir = with_overrides(params), str(Path(params["run_dir"]) / "trainer")
        if model.objective == "pairs":
            dev = (
                pair_evaluator(data["dev"], model.score, "dev", p["eval_batch_size"])
                if data.get("dev") is not None
                else None
            )
            history = train_pairs(model.model, loss, data["train"], p, output_dir, dev)
            log(f"trained: {len(history['loss_y'])} logged losses")
            return history
        return fit_retriever(model, loss, data, p, output_dir, log)

    def embed(self, model: GridEncoder, split, params: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw embeddings of a split's two sides: a RetrievalSet (queries, corpus), a frame (sentence1,
        sentence2) or a list of (query, document) pairs; ranking adds the encoder's prefixes."""
        if hasattr(split, "queries"):
            a, b = [split.queries[i] for i in split.query_ids()], split.doc_texts()
        elif hasattr(split, "columns"):
            a, b = list(split["sentence1"]), list(split["sentence2"])
        else:
            a, b = [x for x, _ in split], [y for _, y in split]
        info, ranking = model.info, model.objective == "ranking"
        size = params["eval_batch_size"]
        return (
            encode_texts(model.model, a, size, info.query_prefix if ranking else ""),
            encode_texts(model.model, b, size, info.doc_prefix if ranking else ""),
        )

    @contextmanager
    def scored_with(self, model: GridEncoder, variant: str) -> Iterator[GridEncoder]:
        """The same encoder scoring with the fixed ``variant`` (the pair score keeps its λ)."""
        original = model.score
        model.score = (
            score_function(variant)
            if model.objective == "ranking"
            else PairScore(variant, original.score_scale, original.scale_rule)
        )
        try:
            yield model
        finally:
            model.score = original


ADAPTER = SentenceTransformersAdapter()
