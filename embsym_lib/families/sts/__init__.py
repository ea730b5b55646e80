"""STS: sentence-pair similarity, trained with a regression loss on the grid's pair score through the
sentence-transformers adapter that retrieval uses (objective ``pairs``).

``spec`` (what the runner, validation and report need), ``pipeline`` (the steps the notebook calls),
``tables`` (the family's own report tables and figures)."""

from .spec import SPEC

__all__ = ["SPEC"]
