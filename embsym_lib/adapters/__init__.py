"""One adapter per domain library, all of one shape.

Each adapter module (``adapters/<library>.py``) patches its library only at the scoring step, through
the library's own hook, calls ``embsym_lib.similarity`` for every score, and exposes ``ADAPTER``, an
object with the methods of ``Adapter``. Training loops, samplers and evaluators stay the library's.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol


class Adapter(Protocol):
    """The protocol every domain-library adapter implements.

    - ``library``: the adapted package's distribution name (records list its version).
    - ``build_model(params)``: the library's model for one run, the grid's ``Similarity`` for
      ``params["variant"]`` plugged in at the library's own scoring hook.
    - ``similarity(model)``: that ``Similarity`` (learn's γ live there).
    - ``make_loss(model, params)``: the library's training objective, scoring through the grid.
    - ``fit(model, loss, data, params, log)``: train with the library's own trainer (or, where the
      library has none, the reference loop it documents); returns a history of lists.
    - ``embed(model, split, params)``: the (query side, candidate side) embeddings of a split.
    - ``scored_with(model, variant)``: a context in which the trained model scores with a fixed
      ``variant`` (the cross-evaluation, ``diagnostics.cross_evaluate``: the same embeddings, another
      score).
    """

    library: str

    def build_model(self, params: dict[str, Any]) -> Any: ...

    def similarity(self, model: Any) -> Any: ...

    def make_loss(self, model: Any, params: dict[str, Any]) -> Any: ...

    def fit(
        self, model: Any, loss: Any, data: Any, params: dict[str, Any], log: Callable[[str], None]
    ) -> dict: ...

    def embed(self, model: Any, split: Any, params: dict[str, Any]) -> tuple[Any, Any]: ...

    def scored_with(self, model: Any, variant: str) -> AbstractContextManager: ...
