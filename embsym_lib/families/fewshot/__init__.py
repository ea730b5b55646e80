"""Few-shot classification with Prototypical Networks (learn2learn episodes, Conv-4): the query ->
prototype score under each variant, plus ProtoNets' squared-Euclidean default.

``spec`` (what the runner, validation and report need), ``pipeline`` (the steps the notebook calls),
``tables`` (the family's own report tables and figures)."""

from .spec import SPEC
from .tables import ARMS, CROSS_ARMS

__all__ = ["ARMS", "CROSS_ARMS", "SPEC"]
