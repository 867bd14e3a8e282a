"""The one settings object (pydantic-settings, env prefix ``LABELLOOP_``).

Nothing else in labelloop reads the environment: routes get :class:`Settings`
through a dependency, ML code gets explicit arguments.
"""

from __future__ import annotations

import importlib.util
import re
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Deployment settings. Every field is ``LABELLOOP_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="LABELLOOP_", env_file=None, extra="ignore")

    data_dir: Path = Field(default=Path("./labelloop-data"), description="images, models, indexes, SQLite file")
    database_url: str = Field(default="", description="defaults to sqlite:///<data_dir>/labelloop.db")
    secret_key: str = Field(default="", description="generated and stored in the data dir on first start")

    host: str = "127.0.0.1"
    port: int = 8000
    web_workers: int = Field(default=1, ge=1, le=64, description=(
        "API server processes (`labelloop serve --workers`); more than one uses more cores, "
        "worth it on PostgreSQL (SQLite has one writer at a time whatever the count)"))

    # sessions and tokens
    session_ttl_hours: float = 12.0
    login_attempts_per_minute: int = 10
    cookie_secure: bool = False

    # queue
    lease_ttl_seconds: int = 300

    # uploads
    max_upload_bytes: int = 50 * 1024**2
    max_request_bytes: int = 512 * 1024**2
    # bodies that are not multipart uploads (JSON, forms): counted as they stream, chunked or not
    max_json_request_bytes: int = 16 * 1024**2
    max_image_pixels: int = 100_000_000
    thumbnail_size: int = 256
    allow_server_import_roots: list[Path] = Field(default_factory=list)

    # jobs and scheduler
    run_jobs_in_process: bool = True
    scheduler_enabled: bool = True
    scheduler_interval_seconds: float = 5.0
    job_heartbeat_timeout_seconds: float = 120.0
    job_threads: int = 1
    random_seed: int | None = Field(default=None, description=(
        "seed for queue ranks and audit draws, so that a simulation replays the same; "
        "unset (the default) they are unpredictable"))
    # API requests that may hold a database connection / the SQLite write lock at once;
    # the rest wait (cheaply) in front. Keep it below the thread pool (40) and the
    # PostgreSQL pool (20 + 20 overflow), or requests deadlock on each other.
    max_concurrent_requests: int = 16

    # where jobs run (issue 27)
    executor: Literal["inprocess", "worker", "ray"] = Field(default="inprocess", description=(
        "inprocess: the API's own threads run jobs; worker: only `labelloop worker` processes do; "
        "ray: the jobs' heavy steps run on a Ray cluster (LABELLOOP_RAY_ADDRESS), prepare and commit "
        "stay in the API or worker process that claimed the job"))
    ray_address: str = Field(default="local", description=(
        "with executor=ray: local (start a private Ray on this machine), auto (the cluster this "
        "machine joined with `ray start`), or ray://host:10001 (a remote cluster's client port)"))
    shard_size: int = Field(default=2048, ge=1, le=1_000_000, description=(
        "images per shard when embedding and predicting (one shard is one actor call on Ray)"))

    # learning
    allow_code_models: bool = Field(default=False, description=(
        "let admins register TorchScript models (code, run in a locked-down child process); "
        "off: only ONNX graphs can be registered and stored TorchScript models do not run"))
    hf_model_dirs: list[Path] = Field(default_factory=list, description=(
        "folders Hugging Face models may be registered from (JSON list), besides the local Hugging Face "
        "cache and <data dir>/models/huggingface; nothing is ever downloaded"))
    backbone: str = "tf_efficientnet_lite0"
    backbone_checkpoint: Path | None = None
    torch_threads: int = 2
    image_size: int = 96
    # devices (issue 26): checked when the settings are read, so a bad one stops the start
    device: str = Field(default="auto", description=(
        "where jobs train and predict: auto (the first CUDA GPU when torch sees one, else the CPU), "
        "cpu, cuda or cuda:N"))
    cpu_runtime: Literal["auto", "torch", "openvino", "onnxruntime"] = Field(default="auto", description=(
        "CPU inference path of the frozen backbone: auto (the fastest installed: OpenVINO, then ONNX "
        "Runtime, else eager PyTorch), or one of them; exports are cached per model version"))
    inference_batch_size: int = Field(default=64, ge=1, le=4096, description=(
        "images per forward pass when embedding and predicting (raise it on a GPU, e.g. 256)"))
    decode_workers: int = Field(default=2, ge=0, le=64, description=(
        "threads that decode and resize images while the model runs (0: decode in the job's thread)"))

    @field_validator("device")
    @classmethod
    def _device_exists(cls, value: str) -> str:
        from learning.device import resolve_device  # torch only once settings are read

        resolve_device(value)  # DeviceError (a ValueError): one sentence saying what is missing
        return value.strip().lower()

    @field_validator("ray_address")
    @classmethod
    def _ray_address(cls, value: str) -> str:
        value = value.strip()
        if value in ("local", "auto") or value.startswith("ray://") or _host_port(value):
            return value
        raise ValueError(f"LABELLOOP_RAY_ADDRESS={value!r} is not an address: use local, auto, "
                         "ray://host:10001 or host:6379")

    @model_validator(mode="after")
    def _defaults(self) -> Settings:
        if self.executor == "ray":
            if importlib.util.find_spec("ray") is None:
                raise ValueError("LABELLOOP_EXECUTOR=ray needs Ray, which is not installed here: "
                                 "pip install 'labelloop[ray]'")
            if self.ray_address == "local" and self.web_workers > 1:
                raise ValueError(f"LABELLOOP_RAY_ADDRESS=local would start a private Ray in each of the "
                                 f"{self.web_workers} API processes: start one with `ray start --head` and set "
                                 "LABELLOOP_RAY_ADDRESS=auto")
            # Ray's workers get image and model paths: relative ones would name their own folders
            self.data_dir = self.data_dir.resolve()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'labelloop.db'}"
        return self

    @property
    def torch_device(self) -> Any:
        """``device`` resolved to a ``torch.device`` (``auto`` becomes ``cuda:0`` or ``cpu``)."""
        from learning.device import resolve_device

        return resolve_device(self.device)

    @property
    def device_description(self) -> str:
        """E.g. ``cpu (2 threads, openvino)`` or ``cuda:0 (NVIDIA H100 80GB HBM3, bfloat16)``."""
        from learning.device import describe_device
        from learning.runtime import best_runtime

        device = self.torch_device
        if device.type != "cpu":
            return describe_device(device)
        runtime = best_runtime(device) if self.cpu_runtime == "auto" else self.cpu_runtime
        return f"cpu ({self.torch_threads} threads, {runtime})"

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "storage"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def hf_cache(self) -> Path:
        """The local Hugging Face cache: ``HF_HUB_CACHE``, else ``HF_HOME``/hub, else
        ~/.cache/huggingface/hub (read when asked)."""
        import os

        home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
        return Path(os.environ.get("HF_HUB_CACHE", home / "hub"))

    @property
    def hf_roots(self) -> list[Path]:
        """Where Hugging Face models may be registered from: ``hf_model_dirs``, the local
        Hugging Face cache (:attr:`hf_cache`) and ``<models dir>/huggingface``."""
        return [*self.hf_model_dirs, self.hf_cache, self.models_dir / "huggingface"]

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def ensure_dirs(self) -> None:
        for d in (self.data_dir, self.storage_dir, self.models_dir):
            d.mkdir(parents=True, exist_ok=True)

    def resolved_secret_key(self) -> str:
        """The configured secret, else one generated once and kept in the data dir."""
        if self.secret_key:
            return self.secret_key
        self.ensure_dirs()
        path = self.data_dir / "secret_key"
        if path.exists():
            return path.read_text().strip()
        key = secrets.token_urlsafe(48)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(key)
        tmp.chmod(0o600)
        tmp.replace(path)
        return key


def _host_port(value: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9.\-]+:\d{1,5}", value) is not None


@lru_cache
def get_settings() -> Settings:
    """Settings from the environment (cached); tests build their own ``Settings``."""
    return Settings()
