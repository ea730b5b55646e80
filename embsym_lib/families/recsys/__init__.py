"""Recommender systems: user -> item top-k recommendation, scored with the grid inside RecBole.

``spec`` (what the runner, validation and report need), ``pipeline`` (the steps the notebook calls),
``tables`` (the family's own report tables and figures)."""

from .spec import SPEC

__all__ = ["SPEC"]
