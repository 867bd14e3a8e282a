"""The one settings object (pydantic-settings, env prefix ``LABELLOOP_``).

Nothing else in labelloop reads the environment: routes get :class:`Settings`
through a dependency, ML code gets explicit arguments.
"""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path

from pydantic import Field, model_validator
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

    # learning
    allow_code_models: bool = Field(default=False, description=(
        "let admins register TorchScript models (code, run in a locked-down child process); "
        "off: only ONNX graphs can be registered and stored TorchScript models do not run"))
    backbone: str = "tf_efficientnet_lite0"
    backbone_checkpoint: Path | None = None
    torch_threads: int = 2
    image_size: int = 96

    @model_validator(mode="after")
    def _defaults(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'labelloop.db'}"
        return self

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "storage"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

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


@lru_cache
def get_settings() -> Settings:
    """Settings from the environment (cached); tests build their own ``Settings``."""
    return Settings()
