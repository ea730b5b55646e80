"""The controlled synthetic testbed: generated tasks with a known ground truth (``embsym_lib.testbed``).

``spec`` (what the runner, validation and report need), ``pipeline`` (the steps the notebook calls),
``tables`` (the family's own report tables and figures)."""

from .spec import SPEC

__all__ = ["SPEC"]
