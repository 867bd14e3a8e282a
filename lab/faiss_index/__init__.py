"""A FAISS vector index (flat / IVF / HNSW kinds, persisted with a JSON header).

The product searches exactly (``service.loop.clusters``, ``learning.query``), which is
right at today's pool sizes; this index is measured by ``lab/benchmarks/bench_scale.py``
for pools of millions and stays here until a product feature needs it.
"""

from lab.faiss_index.index import IndexFileError, IndexVersionError, VectorIndex

__all__ = ["IndexFileError", "IndexVersionError", "VectorIndex"]
