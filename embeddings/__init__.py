"""Embeddings: feature extraction, an on-disk cache and grid pages.

Arrays in, arrays out: nothing here knows about the database or the web app.
Vectors are float32 ``[N, D]`` with unit-L2 rows, keyed by int64 item ids and
stamped with the model version that produced them.
"""

from embeddings.cache import EmbeddingCache
from embeddings.cluster import GridPage, choose_k, grid_pages, kmeans
from embeddings.extract import (
    ExtractionCancelled,
    ImageLoadError,
    extract,
    extract_incremental,
    extract_masked,
    l2_normalize,
    load_image,
)

__all__ = [
    "EmbeddingCache",
    "ExtractionCancelled",
    "GridPage",
    "ImageLoadError",
    "choose_k",
    "extract",
    "extract_incremental",
    "extract_masked",
    "grid_pages",
    "kmeans",
    "l2_normalize",
    "load_image",
]
