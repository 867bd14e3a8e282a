"""Model adapters: the :class:`ModelAdapter` contract, its data shapes and the registry.

Built-in adapters (``classifier``, ``detector``) register themselves the first time the registry is
asked for a key, so importing this package stays cheap and free of import cycles.
"""

from learning.adapters.base import (
    Cancelled,
    EpochStats,
    FitConfig,
    FitEmbeddings,
    FitReport,
    LabelledImages,
    ModelAdapter,
    Predictions,
    Progress,
    Task,
)
from learning.adapters.registry import (
    UnknownAdapterError,
    create_adapter,
    get_adapter_class,
    list_adapters,
    load_adapter,
    read_manifest,
    register_adapter,
)

__all__ = [
    "Cancelled",
    "EpochStats",
    "FitConfig",
    "FitEmbeddings",
    "FitReport",
    "LabelledImages",
    "ModelAdapter",
    "Predictions",
    "Progress",
    "Task",
    "UnknownAdapterError",
    "create_adapter",
    "get_adapter_class",
    "list_adapters",
    "load_adapter",
    "read_manifest",
    "register_adapter",
]
