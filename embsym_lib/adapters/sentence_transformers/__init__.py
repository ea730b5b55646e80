"""The sentence-transformers adapter: the grid enters through the library's ``similarity_fct`` hooks.

One adapter for the retrieval and STS families: one encoder registry (``ENCODERS``: ``minilm``,
``scratch`` and the paper's checkpoints, or a local model folder), one parameter base
(``SentenceEncoderParams``), and the library's two training objectives, each patched only at its
scoring step:

- ``"ranking"`` (retrieval): ``MultipleNegativesRankingLoss(similarity_fct=...)`` with the grid's
  pairwise score, a dev evaluator ranking by exact search, the paper's optimizer (``train_retriever``);
- ``"pairs"`` (STS): ``PairScore``, the grid's paired score scaled by λ, in ``PairScoreRegressionLoss``
  (``CosineSimilarityLoss``'s shape with a ``similarity_fct`` hook, whose cosine is hard-wired) and in
  ``EmbeddingSimilarityEvaluator`` with its scoring step replaced (``train_pairs``).

Scoring functions are module-level and named, because sentence-transformers' losses and evaluators
store and print them, and saving a model records them. ``model.similarity_fn_name`` is a closed enum
in sentence-transformers, so we never set it to our names: the variant is passed explicitly instead.
The library itself is imported inside the functions: the family specs import this module.
"""

from .adapter import ADAPTER, SentenceTransformersAdapter
from .encoders import (
    ENCODERS,
    EncoderInfo,
    GridEncoder,
    SentenceEncoderParams,
    build_encoder,
    encode_texts,
    encoder_from_checkpoint,
    encoder_info,
    freeze_lower_layers,
    load_encoder,
    offline_minilm_path,
    scratch_encoder,
    set_pooling,
    strip_normalize,
    with_overrides,
)
from .pairs import PairScore, PairScoreRegressionLoss, pair_correlations, pair_evaluator, train_pairs
from .ranking import (
    best_checkpoint_callback,
    fit_retriever,
    retrieval_evaluator,
    retrieval_loss,
    retrieval_similarity,
    train_retriever,
)
from .scores import (
    PAIRWISE_FUNCTIONS,
    cosine_scores,
    dnorm_scores,
    dot_scores,
    grid_similarity,
    qnorm_scores,
    score_function,
)

__all__ = [
    "ADAPTER",
    "best_checkpoint_callback",
    "build_encoder",
    "cosine_scores",
    "dnorm_scores",
    "dot_scores",
    "encode_texts",
    "encoder_from_checkpoint",
    "encoder_info",
    "EncoderInfo",
    "ENCODERS",
    "fit_retriever",
    "freeze_lower_layers",
    "grid_similarity",
    "GridEncoder",
    "load_encoder",
    "offline_minilm_path",
    "pair_correlations",
    "pair_evaluator",
    "PairScore",
    "PairScoreRegressionLoss",
    "PAIRWISE_FUNCTIONS",
    "qnorm_scores",
    "retrieval_evaluator",
    "retrieval_loss",
    "retrieval_similarity",
    "score_function",
    "scratch_encoder",
    "SentenceEncoderParams",
    "SentenceTransformersAdapter",
    "set_pooling",
    "strip_normalize",
    "train_pairs",
    "train_retriever",
    "with_overrides",
]

# The library and what its first training step imports: every run needs them, the specs must not.
WARM_IMPORTS = (
    "sentence_transformers",
    "sentence_transformers.losses",
    "sentence_transformers.models",
    "sentence_transformers.training_args",
    "transformers.models.bert.modeling_bert",
)
