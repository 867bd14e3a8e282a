"""What every task's learning pipeline provides, and the plain values its steps exchange.

A pipeline (one per task type: :mod:`service.pipelines.classification`,
:mod:`service.pipelines.detection`) gives the three learning jobs their task-specific
parts; the jobs themselves (:mod:`service.pipelines.jobs`) are the same for every task:

* **train**: ``prepare_train(session) -> TrainPlan`` (the training set as paths and
  labels, a config with the :class:`learning.policy.Policy`), ``compute_train(inputs,
  ctx) -> TrainOutputs`` (fit, calibrate, save: no database), then the job publishes the
  version in one transaction and calls ``after_train`` (detection flags its hold-out's
  hard examples from the same out-of-sample predictions).
* **infer**: ``prepare_infer -> InferPlan``, ``compute_infer(inputs, ctx)`` (predict,
  score, decide per image: no database), ``commit_infer`` (proposals, in one transaction).
* **hard examples**: ``prepare_scan`` -> ``compute_scan`` (cross-fit, second views: no
  database) -> ``commit_scan`` (flags), and the sentence that sums a scan up.

``inputs`` and compute outputs are plain and picklable (paths, arrays, dataclasses), so
another executor may run ``compute_*`` on another machine; ``keep`` holds what only the
commit needs (item ids, label versions), never sent to compute.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from sqlmodel import Session

from learning.adapters import load_adapter
from learning.policy import Policy
from service.config import Settings
from service.jobs.executor import ComputeContext, is_remote
from service.models import ModelVersion, Project

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class ModelConfig:
    """The deployment's model settings a compute step needs (not the whole
    :class:`service.config.Settings`: no database URL, no secrets)."""

    backbone: str
    checkpoint: Path | None
    image_size: int
    torch_threads: int
    data_dir: Path  # the embedding cache lives under it
    device: str = "cpu"  # ``LABELLOOP_DEVICE`` resolved: cpu, cuda:0, ...
    cpu_runtime: str = "torch"  # what runs the frozen backbone on the CPU (auto: the fastest installed)
    runtime_dir: Path | None = None  # exported backbones, shared by every model version
    decode_workers: int = 0
    batch_size: int = 32  # images per forward pass when predicting and embedding
    device_setting: str = "cpu"  # ``LABELLOOP_DEVICE`` as set: ``auto`` is resolved again where compute runs

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelConfig:
        return cls(backbone=settings.backbone, checkpoint=settings.backbone_checkpoint,
                   image_size=settings.image_size, torch_threads=settings.torch_threads,
                   data_dir=settings.data_dir, device=str(settings.torch_device), cpu_runtime=settings.cpu_runtime,
                   runtime_dir=settings.models_dir / "runtime", decode_workers=settings.decode_workers,
                   batch_size=settings.inference_batch_size, device_setting=settings.device)

    def here(self) -> ModelConfig:
        """This config on the machine that runs it: with ``LABELLOOP_DEVICE=auto`` the device
        is resolved again (a Ray worker with a GPU uses it, whatever the driver has), and so is
        ``cuda:N`` in a remote worker (Ray shows each GPU worker its GPU as ``cuda:0``)."""
        if self.device_setting != "auto" and not (is_remote() and self.device_setting.startswith("cuda")):
            return self
        from learning.device import resolve_device

        device = str(resolve_device("auto"))
        return self if device == self.device else replace(self, device=device)

    def classifier_options(self) -> dict[str, Any]:
        """Where and how a new classifier adapter computes (``create_adapter("classifier", ...)``)."""
        return {"device": self.device, "runtime": self.cpu_runtime, "runtime_dir": self.runtime_dir,
                "decode_workers": self.decode_workers}

    def load(self, path: Path | str) -> Any:
        """A saved model on this deployment's device. A classifier keeps the runtime its
        calibration was computed on (never ``runtime=``: predictions must match it)."""
        return load_adapter(path, device=self.device, runtime_dir=self.runtime_dir,
                            decode_workers=self.decode_workers)

    def cache_settings(self) -> Settings:
        """Settings naming only ``data_dir`` and the batch size, for
        :func:`service.loop.features.cached_embeddings`
        (built without reading the environment)."""
        return Settings.model_construct(data_dir=self.data_dir, inference_batch_size=self.batch_size)


@dataclass
class TrainPlan:
    """``prepare_train``'s answer: the new version row's facts, compute's ``inputs``, and
    what ``after_train`` needs (``keep``)."""

    classes: list[str]
    algorithm: str
    n_train: int
    n_holdout: int
    inputs: Any
    keep: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainOutputs:
    """A fitted, calibrated, saved model: ``thresholds`` / ``metrics`` / ``risk_coverage``
    as stored on the model version (JSON shapes unchanged); ``holdout``: task-specific
    out-of-sample predictions ``after_train`` uses (detection: ``(preds, gts)``)."""

    model_path: Path
    thresholds: dict[str, Any]
    metrics: dict[str, Any]
    risk_coverage: dict[str, Any] | None = None
    holdout: Any = None


@dataclass
class InferPlan:
    """``prepare_infer``'s answer: compute's ``inputs`` and what the commit needs (``keep``)."""

    inputs: Any
    keep: dict[str, Any] = field(default_factory=dict)


@dataclass
class ScanPlan:
    """``prepare_scan``'s answer (``None`` from it: this task has no scan)."""

    inputs: Any
    keep: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainResult:
    """The ``train`` job's result (``Job.result``); ``quality``: the task's hold-out figures
    (``holdout_accuracy``; ``holdout_map50`` and ``flags``)."""

    model_version_id: int | None
    version: int
    n_train: int
    n_holdout: int
    quality: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"model_version_id": self.model_version_id, "version": self.version, "n_train": self.n_train,
                "n_holdout": self.n_holdout, **self.quality}


class Pipeline(Protocol):
    """One task type's learning steps (see the module docstring)."""

    name: str
    #: whether the scheduler scans this task's projects for hard examples after inference
    scans_hard_examples: bool

    def prepare_train(self, session: Session, *, project: Project, settings: Settings, policy: Policy,
                      version: int, path: Path) -> TrainPlan: ...

    def compute_train(self, inputs: Any, ctx: ComputeContext) -> TrainOutputs: ...

    def after_train(self, session: Session, *, project: Project, mv: ModelVersion, plan: TrainPlan,
                    outputs: TrainOutputs) -> dict[str, Any]: ...

    def prepare_infer(self, session: Session, *, project: Project, mv: ModelVersion, settings: Settings,
                      policy: Policy, rng: Any) -> InferPlan: ...

    def compute_infer(self, inputs: Any, ctx: ComputeContext) -> Any: ...

    def commit_infer(self, session: Session, *, project: Project, mv: ModelVersion, policy: Policy,
                     plan: InferPlan, outputs: Any, rng: Any, progress: Progress) -> dict[str, Any]: ...

    def prepare_scan(self, session: Session, *, project: Project, settings: Settings, seed: int
                     ) -> ScanPlan | None: ...

    def compute_scan(self, inputs: Any, ctx: ComputeContext) -> Any: ...

    def commit_scan(self, session: Session, *, project: Project, plan: ScanPlan, outputs: Any) -> dict[str, Any]: ...

    def hard_examples_summary(self, out: dict[str, Any]) -> str: ...
