"""Knowledge-graph completion: (entity, relation) -> entity link prediction with PyKEEN, scored with the grid.

``spec`` (what the runner, validation and report need), ``pipeline`` (the steps the notebook calls),
``tables`` (the family's own report tables and figures). The setup, where the paper gives none, is the
field's standard one (see notebooks/kg.ipynb)."""

from .spec import SPEC

__all__ = ["SPEC"]
