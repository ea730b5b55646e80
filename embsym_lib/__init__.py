"""embsym: the query/document normalization grid (cosine, dot, qnorm, dnorm, learn) across task families.

Layers: ``similarity`` (the grid) and ``losses`` -> ``diagnostics`` / ``stats`` / ``symmetry`` ->
``adapters`` (one per domain library) and ``data`` -> notebooks -> ``records`` -> ``collate`` (report).
``params`` and ``runner`` turn a params YAML file into executed notebooks. See docs/architecture.md.
"""

from .similarity import (
    FIXED_VARIANTS,
    SYMMETRIC_VARIANTS,
    VARIANTS,
    LearnableSimilarity,
    Similarity,
    UnknownVariantError,
    is_symmetric,
    make_similarity,
    normalize,
    paired,
    pairwise,
)

__version__ = "0.1.0"
__all__ = [
    "FIXED_VARIANTS",
    "SYMMETRIC_VARIANTS",
    "VARIANTS",
    "LearnableSimilarity",
    "Similarity",
    "UnknownVariantError",
    "is_symmetric",
    "make_similarity",
    "normalize",
    "paired",
    "pairwise",
]
