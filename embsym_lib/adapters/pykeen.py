"""PyKEEN adapter: the grid enters as an ``Interaction``, the one place PyKEEN computes a triple's score.

Every prediction is (entity, relation) -> candidate entity: inverse triples turn head prediction
(?, r, t) into tail prediction (t, r⁻¹, ?), so the query is always q = compose(e, r) and the candidate
is always an entity embedding, and the score is ``embsym_lib.similarity`` applied to (q, candidate).

- Compositions: ``distmult`` (q = h ∘ r, elementwise; with the dot variant this *is* DistMult) and
  ``complex`` (the embedding's two halves are real and imaginary parts, q = h ⊙ r in ℂ^{d/2} written
  back as a real vector, so q · t = Re⟨h ⊙ r, t̄⟩ is ComplEx under the dot variant).
- Representations are plain ``Embedding``s without a constrainer: PyKEEN's built-in DistMult
  renormalizes entities to unit length after every step, which would quietly turn "dot" into cosine.
- Loss: ``ScaledCrossEntropyLoss``, PyKEEN's softmax cross-entropy on ``scale * score`` (the paper's
  α = 1/τ). PyKEEN's ``InfoNCELoss(margin=0, log_adversarial_temperature=log τ)`` computes the same
  thing, but its attribute named ``inverse_softmax_temperature`` holds τ itself, so we spell α out.
- ``ADAPTER`` (``adapters.Adapter``): ``build_model(params, training=...)`` needs the training triples,
  ``fit`` is PyKEEN's own ``pipeline()`` (training, then its filtered test evaluation), ``scored_with``
  swaps the interaction's similarity for the cross-evaluation.
"""

from __future__ import annotations

import contextlib
import gc
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from pykeen.losses import CrossEntropyLoss
from pykeen.nn.modules import Interaction

from ..similarity import Similarity, check_variant, make_similarity

WARM_IMPORTS = ("pykeen.models", "pykeen.evaluation", "pykeen.pipeline")  # imported where used


def distmult_query(h: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    return h * r


def complex_query(h: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    h_re, h_im = h.chunk(2, dim=-1)
    r_re, r_im = r.chunk(2, dim=-1)
    return torch.cat([h_re * r_re - h_im * r_im, h_re * r_im + h_im * r_re], dim=-1)


COMPOSERS = {"distmult": distmult_query, "complex": complex_query}
COMPOSITIONS: tuple[str, ...] = tuple(COMPOSERS)


def _check_composition(composition: str) -> None:
    if composition not in COMPOSERS:
        raise ValueError(
            f"unknown composition {composition!r}; valid compositions are: {', '.join(COMPOSITIONS)}"
        )


def compose(h: torch.Tensor, r: torch.Tensor, composition: str) -> torch.Tensor:
    """The query vector of (entity, relation); broadcasts over leading dimensions."""
    _check_composition(composition)
    return COMPOSERS[composition](h, r)


class GridInteraction(Interaction[torch.Tensor, torch.Tensor, torch.Tensor]):
    """score(h, r, t) = s(compose(h, r), t) with s one grid variant from ``embsym_lib.similarity``.

    The similarity is a child module, so the learn variant's two γ parameters are registered with the
    model and trained by PyKEEN's own optimizer alongside the embeddings (the similarity has no
    ``reset_parameters``, so the model's initialization leaves γ at its start value, 0.5).
    """

    def __init__(
        self, variant: str = "cosine", composition: str = "distmult", similarity: Similarity | None = None
    ):
        super().__init__()
        _check_composition(composition)
        self.composition = composition
        self.similarity = similarity if similarity is not None else make_similarity(check_variant(variant))

    @property
    def variant(self) -> str:
        return self.similarity.variant

    def query(self, h: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return compose(h, r, self.composition)

    def forward(self, h: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        q, c = self.similarity.prepare(self.query(h, r), t)
        return _broadcast_dot(q, c)


def _broadcast_dot(q: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Inner product over the last dim of two broadcastable tensors.

    PyKEEN's 1-vs-all scoring passes one side as [b, 1, d] and the other as [1 or b, n, d]: a batched
    matmul then avoids materializing the [b, n, d] elementwise product.
    """
    shape = torch.broadcast_shapes(q.shape[:-1], c.shape[:-1])
    if q.dim() >= 3 and c.dim() >= 3:
        if q.shape[-2] == 1 and c.shape[-2] != 1:
            return (c @ q.transpose(-1, -2)).squeeze(-1).expand(shape)
        if c.shape[-2] == 1 and q.shape[-2] != 1:
            return (q @ c.transpose(-1, -2)).squeeze(-1).expand(shape)
    q, c = torch.broadcast_tensors(q, c)
    return (q * c).sum(-1)


class ScaledCrossEntropyLoss(CrossEntropyLoss):
    """PyKEEN's softmax cross-entropy on ``scale * score``: InfoNCE with scale α = 1/τ over the candidates
    the training loop supplies (all entities under LCWA, sampled negatives under sLCWA)."""

    def __init__(self, scale: float = 20.0, reduction: str = "mean"):
        super().__init__(reduction=reduction)
        if not scale > 0:
            raise ValueError(f"the softmax scale must be positive, got {scale!r}")
        self.scale = float(scale)

    def process_lcwa_scores(self, predictions, labels, label_smoothing=None, num_entities=None, weights=None):
        return super().process_lcwa_scores(
            predictions=self.scale * predictions,
            labels=labels,
            label_smoothing=label_smoothing,
            num_entities=num_entities,
            weights=weights,
        )

    def process_slcwa_scores(
        self,
        positive_scores,
        negative_scores,
        label_smoothing=None,
        batch_filter=None,
        num_entities=None,
        pos_weights=None,
        neg_weights=None,
    ):
        if positive_scores.ndim < negative_scores.ndim:
            positive_scores = positive_scores.unsqueeze(dim=-1)
        return super().process_slcwa_scores(
            positive_scores=self.scale * positive_scores,
            negative_scores=self.scale * negative_scores,
            label_smoothing=label_smoothing,
            batch_filter=batch_filter,
            num_entities=num_entities,
            pos_weights=pos_weights,
            neg_weights=neg_weights,
        )


def er_model(
    training,
    variant: str,
    composition: str = "distmult",
    embedding_dim: int = 64,
    loss=None,
    initializer: str = "xavier_normal_",
    random_seed: int = 0,
):
    """An ``ERModel`` with plain (unconstrained) entity and relation embeddings and a ``GridInteraction``."""
    from pykeen.models import ERModel

    if composition == "complex" and embedding_dim % 2:
        raise ValueError(f"the complex composition needs an even embedding_dim, got {embedding_dim}")
    representation = dict(shape=embedding_dim, initializer=initializer)
    return ERModel(
        triples_factory=training,
        interaction=GridInteraction(variant=variant, composition=composition),
        entity_representations_kwargs=dict(representation),
        relation_representations_kwargs=dict(representation),
        loss=loss if loss is not None else ScaledCrossEntropyLoss(),
        random_seed=random_seed,
    )


@contextlib.contextmanager
def scored_with(model, variant: str) -> Iterator[Any]:
    """Temporarily score a trained model's embeddings with another fixed variant (cross-evaluation)."""
    interaction = model.interaction
    trained = interaction.similarity
    interaction.similarity = make_similarity(variant)
    try:
        yield model
    finally:
        interaction.similarity = trained


def rank_evaluator(keep_ranks: bool = False):
    """PyKEEN's filtered ``RankBasedEvaluator``; ``keep_ranks`` keeps the per-triple ranks after it finishes."""
    from pykeen.evaluation import RankBasedEvaluator

    return RankBasedEvaluator(filtered=True, clear_on_finalize=not keep_ranks)


def _training_kwargs(params: dict[str, Any]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"training_loop": params["training_loop"]}
    if params["training_loop"] == "slcwa":
        # Corrupt tails only: with inverse triples every instance is already (entity, relation) -> candidate.
        kwargs["negative_sampler"] = "basic"
        kwargs["negative_sampler_kwargs"] = {
            "num_negs_per_pos": params["num_negatives"],
            "corruption_scheme": ("tail",),
        }
    return kwargs


# --- embeddings for diagnostics ---------------------------------------------------------------------


@torch.no_grad()
def entity_embeddings(model) -> torch.Tensor:
    return model.entity_representations[0](indices=None).detach().cpu()


@torch.no_grad()
def query_embeddings(model, mapped_triples: torch.Tensor) -> torch.Tensor:
    """q = compose(e, r) for every (h, r) -> t and (t, r⁻¹) -> h query of ``mapped_triples``."""
    device = model.device
    forward = model.relation_inverter.map(mapped_triples.to(device), invert=False)
    inverse = model.relation_inverter.map(mapped_triples.to(device), invert=True)
    entity_ids = torch.cat([forward[:, 0], inverse[:, 2]])
    relation_ids = torch.cat([forward[:, 1], inverse[:, 1]])
    h = model.entity_representations[0](indices=entity_ids)
    r = model.relation_representations[0](indices=relation_ids)
    return model.interaction.query(h, r).detach().cpu()


def candidate_frequency(
    mapped_triples: torch.Tensor, num_entities: int, both_directions: bool = True
) -> torch.Tensor:
    """How often each entity is the answer of a training query: as a tail, plus as a head of the
    inverse query when ``both_directions`` (the "relevance counter" of the paper's gradient argument)."""
    counts = torch.bincount(mapped_triples[:, 2], minlength=num_entities)
    if both_directions:
        counts = counts + torch.bincount(mapped_triples[:, 0], minlength=num_entities)
    return counts


def log_scale_to_temperature(scale: float) -> float:
    """log τ for PyKEEN's ``InfoNCELoss(log_adversarial_temperature=...)`` equivalent to ``scale``."""
    return -math.log(scale)


# --- the adapter ------------------------------------------------------------------------------------


class PyKEENAdapter:
    """``adapters.Adapter`` for PyKEEN. The model needs the training triples (entity and relation counts,
    inverse relations), so ``build_model`` takes them beside the parameters; ``fit`` is PyKEEN's own
    ``pipeline()``, which trains and then runs the filtered test evaluation in one call."""

    library = "pykeen"

    def build_model(self, params: dict[str, Any], training=None):
        """``training``: the dataset's training ``TriplesFactory`` (with inverse triples)."""
        if training is None:
            raise ValueError("the PyKEEN adapter builds its model from the training triples: pass training=")
        return er_model(
            training,
            variant=params["variant"],
            composition=params["composition"],
            embedding_dim=params["embedding_dim"],
            loss=self.make_loss(None, params),
            random_seed=params["seed"],
        )

    def similarity(self, model):
        return model.interaction.similarity

    def make_loss(self, model, params: dict[str, Any]) -> ScaledCrossEntropyLoss:
        """Softmax cross-entropy at the run's scale over the candidates the training loop supplies (the
        model carries its loss: ``build_model`` already sets this one)."""
        return ScaledCrossEntropyLoss(scale=params["scale"])

    def fit(
        self, model, loss, data, params: dict[str, Any], log: Callable[[str], None] | None = None
    ) -> dict:
        """PyKEEN's ``pipeline()`` on ``data`` (a ``Dataset``): its training loop, Adam at ``lr``, then its
        filtered rank-based test evaluation. Returns ``train_loss`` (per epoch), the ``PipelineResult``
        (``result``) and the test ``evaluator``, which keeps its per-triple ranks."""
        from pykeen.pipeline import pipeline

        from ..runtime import resolve_device

        if loss is not None and loss is not model.loss:
            model.loss = loss
        evaluator = rank_evaluator(keep_ranks=True)
        # PyKEEN runs gc.collect() after every epoch; freezing the objects that exist now keeps that cheap in
        # a notebook kernel (it otherwise dominates an epoch on the small datasets).
        gc.freeze()
        try:
            result = pipeline(
                dataset=data,
                model=model,
                optimizer="adam",
                optimizer_kwargs={"lr": params["lr"]},
                training_kwargs={
                    "num_epochs": params["epochs"],
                    "batch_size": params["batch_size"],
                    "use_tqdm": False,
                },
                evaluator=evaluator,
                evaluation_kwargs={"batch_size": params["eval_batch_size"], "use_tqdm": False},
                random_seed=params["seed"],
                device=resolve_device(params.get("device") or "cpu"),
                use_tqdm=False,
                **_training_kwargs(params),
            )
        finally:
            gc.unfreeze()
        if log is not None:
            log(f"trained {params['epochs']} epochs in {result.train_seconds:.1f}s")
        return {"train_loss": [float(x) for x in result.losses], "result": result, "evaluator": evaluator}

    def embed(self, model, split, params: dict[str, Any] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(queries, candidates) of a split's mapped triples: compose(e, r) for both directions of every
        triple, and every entity embedding (the candidates of every query)."""
        return query_embeddings(model, split), entity_embeddings(model)

    def scored_with(self, model, variant: str):
        return scored_with(model, variant)


ADAPTER = PyKEENAdapter()
