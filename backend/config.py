"""The one settings object (env prefix ``SYNTHARENA_``), shared by the backend and the worker."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

GiB = 1024**3
MiB = 1024**2
DEV_SECRET_KEY = "dev-insecure-secret-change-me"  # noqa: S105 - the refused placeholder
# Secret keys that are placeholders, not secrets (compared case-insensitively).
PLACEHOLDER_SECRETS = frozenset({DEV_SECRET_KEY, "change-me", "changeme", "change_me", "secret",
                                 "secret-key", "secret_key", "password", "dev", "test", "xxx"})
MIN_SECRET_CHARS = 16


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SYNTHARENA_", env_file=".env", extra="ignore")

    # Where everything on disk lives. Inputs (what containers see) and ground truth (what only
    # the worker reads) are separate roots so a mount of one can never expose the other.
    data_dir: Path = Field(default_factory=lambda: Path("var").resolve())
    # Empty -> an SQLite file under data_dir (the embedded single-machine default).
    database_url: str = ""
    database_echo: bool = False
    # Connections per process (API process or worker child).
    database_pool_size: int = 10
    database_max_overflow: int = 30
    # How long a request (or task) waits for a pooled connection, and an API request for its
    # turn at the database (below), before it is answered with a retryable 503.
    database_pool_timeout_s: float = 30
    database_connect_timeout_s: int = 10  # a database host that does not answer is an outage
    # API requests that hold a database session at once, per API process; the others wait
    # their turn without holding a thread. Used as min(this, request threads - 1, pool size +
    # overflow): a request that holds a connection (and row locks) always gets a thread for
    # its next step, so a burst queues instead of dead-locking threads against connections.
    api_db_requests: int = 30
    # How long an API process may serve a public leaderboard page to anonymous readers from
    # memory without asking the database whether it changed (0: ask on every read). A change
    # made through this process is seen at once; one made through another, within this time.
    leaderboard_cache_s: float = 1.0
    redis_url: str = "redis://127.0.0.1:6379/0"

    # On a development or test machine only: allows the placeholder secret key below.
    dev_mode: bool = False
    secret_key: str = DEV_SECRET_KEY  # refused unless dev_mode (see _refuse_placeholder_secret)
    session_cookie_name: str = "syntharena_session"
    session_max_age_s: int = 14 * 24 * 3600
    session_cookie_secure: bool = False
    # Failed logins per account (per API process) before it is refused for the window.
    login_max_failures: int = 10
    login_failure_window_s: int = 300
    allow_registration: bool = True
    # Accounts created with these e-mail addresses become site admins.
    admin_emails: list[str] = Field(default_factory=list)

    storage_backend: Literal["local", "s3"] = "local"
    s3_endpoint_url: str | None = None
    s3_bucket: str = "syntharena"
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    s3_prefix: str = ""  # prepended to storage keys in the bucket
    # Ground truth (keys under groundtruth/) lives behind its own credentials so that workers
    # running participant containers (the GPU queue) cannot read it: give these only to the
    # API (imports) and eval workers. Unset endpoint/bucket/region/prefix: the s3_* values.
    # Unset keys: boto3's own chain (environment, instance role), never the s3_* keys.
    gt_s3_endpoint_url: str | None = None
    gt_s3_bucket: str | None = None
    gt_s3_region: str | None = None
    gt_s3_access_key_id: str | None = None
    gt_s3_secret_access_key: str | None = None
    gt_s3_prefix: str | None = None
    # Each host's cache of objects fetched from S3 (content-addressed, sha256-checked, least
    # recently used evicted above the size). Empty: data_dir/cache/objects.
    cache_dir: Path | None = None
    cache_max_bytes: int = Field(default=50 * GiB, ge=0)

    # Container-image uploads.
    max_image_bytes: int = 30 * GiB  # the tarball as uploaded (may be compressed)
    max_image_uncompressed_bytes: int = 60 * GiB  # sum of tar member sizes
    max_upload_chunk_bytes: int = 256 * MiB
    user_image_quota_bytes: int = 100 * GiB
    max_manifest_bytes: int = 16 * MiB  # manifest.json / config json members read into memory
    upload_expiry_s: int = 7 * 24 * 3600
    # How often each API process aborts every user's idle uploads and deletes their parts
    # (0: only when their owner starts a new upload).
    upload_sweep_interval_s: float = Field(default=3600.0, ge=0)

    # Limits on a phase's sandbox settings organisers may choose.
    max_case_time_limit_s: int = 24 * 3600
    max_memory_mb: int = 256 * 1024
    max_cpus: float = 64.0

    # Folders on the server that challenge organisers may import datasets from (admins: any).
    dataset_import_roots: list[Path] = Field(default_factory=list)
    # S3 prefixes organisers may import from ("s3://bucket/prefix/"; admins: any the import
    # worker's credentials read: the ground-truth ones, SYNTHARENA_GT_S3_*).
    dataset_import_s3_prefixes: list[str] = Field(default_factory=list)
    # A dataset archive uploaded for an import (.tar, .tar.gz, .tgz, .zip): as uploaded, and
    # the sum of its members' sizes once unpacked.
    max_dataset_archive_bytes: int = 200 * GiB
    max_dataset_unpacked_bytes: int = 400 * GiB

    log_capture_bytes: int = 64 * 1024  # per stream, per case run

    # Worker (Celery + Docker sandbox).
    worker_gpu_ids: list[str] = Field(default_factory=list)  # e.g. ["0","1"]: child i -> GPU i
    sandbox_pids_limit: int = 512
    sandbox_shm_mb: int = 256
    sandbox_tmp_mb: int = 512  # tmpfs /tmp (counts against the phase's memory limit)
    sandbox_log_lines: int = 500  # last N lines kept, per stream
    # A worker that itself runs in a container: the path on the Docker host of its work
    # directory (data_dir/work inside it), for the /input and /output bind mounts the engine
    # makes. Unset: the worker runs on the host and its own paths are the host's.
    host_work_dir: Path | None = None
    # /output caps (a container that writes more is stopped): bytes in all, and files.
    sandbox_output_mb: int = 4096
    sandbox_output_files: int = 1000
    case_run_max_attempts: int = 3  # lost-worker or Docker-engine retries before a case fails
    # How long a run waits for a restarting Docker engine before it gives its case back.
    sandbox_engine_wait_s: int = 60
    # Where the eval workers compute image and dose metrics: "cpu", "cuda", or "auto" (CUDA
    # when this worker sees a GPU).  Keep "cpu" where eval workers share GPUs with running
    # submissions.
    eval_device: Literal["cpu", "cuda", "auto"] = "cpu"
    # Threads (torch intra-op, BLAS/OpenMP) each eval child may use; 0 = its share of the
    # cores: max(1, cores // worker concurrency).  Children x threads above the cores
    # oversubscribe them (worker/threads.py).
    eval_threads: int = Field(default=0, ge=0)
    # TotalSegmentator 'total' 3 mm weights for SynthRAD2025 geometry metrics (profile
    # synthrad2025): a TotalSegmentator home (<dir>/nnunet/results/Dataset297_...) or an
    # nnU-Net results folder. Never downloaded; without them such a phase cannot open.
    totalseg_weights_dir: Path | None = None
    reaper_interval_s: int = 60
    reaper_grace_s: int = 120  # a running case with no live task this long is requeued

    @field_validator("admin_emails", mode="after")
    @classmethod
    def _normalise_admin_emails(cls, value: list[str]) -> list[str]:
        """Stored and registering addresses are normalised the same way: a match is exact."""
        from backend.auth.identity import IdentifierError, normalize_email

        out = []
        for raw in value:
            try:
                out.append(normalize_email(raw))
            except IdentifierError as exc:
                raise ValueError(f"admin_emails: {raw!r} {exc}") from None
        return out

    @model_validator(mode="after")
    def _refuse_placeholder_secret(self) -> Settings:
        key = self.secret_key.strip()
        weak = ("change-me" in key.lower() or key.lower() in PLACEHOLDER_SECRETS
                or len(key) < MIN_SECRET_CHARS)
        if weak and not self.dev_mode:
            raise ValueError(
                "SYNTHARENA_SECRET_KEY is unset or a placeholder (it signs sessions and CSRF "
                f"tokens; at least {MIN_SECRET_CHARS} characters, not 'change-me'). Set it to a "
                "random value, e.g. `python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`"
                ", or set SYNTHARENA_DEV_MODE=1 on a development machine."
            )
        return self

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'syntharena.db'}"
        return self

    @property
    def inputs_dir(self) -> Path:
        """Case inputs a container may see (image, body mask, region)."""
        return self.data_dir / "inputs"

    @property
    def groundtruth_dir(self) -> Path:
        """Ground-truth CT, labels and plans: read by the worker only, never mounted."""
        return self.data_dir / "groundtruth"

    @property
    def images_dir(self) -> Path:
        """Validated algorithm image tarballs (local storage backend)."""
        return self.data_dir / "images"

    @property
    def work_dir(self) -> Path:
        """Run directories of the worker (``/input`` and ``/output`` of each container)."""
        return self.data_dir / "work"

    @property
    def object_cache_dir(self) -> Path:
        return self.cache_dir or self.data_dir / "cache" / "objects"

    @property
    def uploads_dir(self) -> Path:
        """Partial uploads in progress."""
        return self.data_dir / "uploads"

    @property
    def predictions_dir(self) -> Path:
        """Synthetic CTs written by algorithm containers, per submission and case."""
        return self.data_dir / "predictions"


settings = Settings()
