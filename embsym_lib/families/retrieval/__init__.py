"""Retrieval (and RAG): fine-tune a dense retriever under each grid variant with sentence-transformers,
evaluate by exact search.

``spec`` (what the runner, validation and report need), ``pipeline`` (the steps the notebook calls),
``rag`` (the RAG step), ``tables`` (the family's own report tables and figures)."""

from .spec import SPEC

__all__ = ["SPEC"]
