"""One Settings object, built from the environment at the entry points and passed down.

Nothing else in ovbatch reads ``os.environ``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from ovbatch.errors import ConfigError
from ovbatch.roots import Roots

# The embedded single-machine default: everything under ./.ovbatch in the working directory.
DEFAULT_HOME = ".ovbatch"


def _mask_url(url: str) -> str:
    """Hide a password in a URL (redis://:secret@host -> redis://:***@host)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} must be positive")
    return value


WHISPER_PRECISIONS = ("auto", "recheck", "f32", "bf16", "f16", "device")


@dataclass(frozen=True)
class Settings:
    """Effective configuration. Units are in the names."""

    storage_url: str
    keyring_path: Path
    broker_url: str
    s3_endpoint_url: str | None = None
    # AWS credentials stay in the environment that boto3 reads itself; we only note their presence.
    aws_credentials_set: bool = False
    # The longest job must finish well inside the visibility timeout: Redis redelivers any message
    # unacknowledged for longer, even while its first worker is still running it.
    visibility_timeout_s: int = 6 * 3600
    job_time_limit_s: int = 5 * 3600
    max_audio_duration_s: float = 4 * 3600.0
    cache_max_models: int = 4
    cache_max_bytes: int = 8 << 30
    # jobs a worker runs at once (threads); their audio windows are batched through one engine
    worker_batch_files: int = 8
    # image jobs: the worker's own limits (a message cannot raise them), and how many pipelines
    # (infer requests) one worker runs at once: one uses every core it is pinned to
    max_image_side: int = 2048
    max_image_steps: int = 200
    image_pipelines: int = 1
    # Whisper's inference precision on CPU. "auto": for float versions "recheck" where the CPU's default
    # is bf16 (bf16 first, the windows it doubts again in f32: f32's accuracy, bf16 alone lost 0.7 WER
    # points), else f32; the plugin's default (bf16 on CPUs with AVX-512 BF16) for quantized ones (as
    # accurate and faster); "f32": f32 only; "device": the plugin's default for all.
    # See tasks/transcribe/precision.py
    whisper_precision: str = "auto"
    # Whisper: whole files up to this long (with --language given) share 30 s windows, several
    # clips to one encoder window and decoder row (tasks/transcribe/packing.py): 3x faster and more
    # accurate on short clips (benchmarks/RESULTS.md, "Short clips packed"); 0 decodes each alone
    whisper_pack_s: float = 10.0
    # where workers may read inputs and write outputs (ovbatch/roots.py); empty: anywhere
    allowed_roots: Roots = Roots()
    # a signed job message older than this is refused (ovbatch/crypto/signing.py): the batch
    # record's lifetime, so any job still recorded can run, and `retry` signs fresh ones
    message_max_age_s: int = 30 * 24 * 3600
    # SIGTERM (scale-in, deploys): running jobs get this long to finish before they stop and go back
    # to the queue; the supervisor's grace period (k8s terminationGracePeriodSeconds, systemd
    # TimeoutStopSec) must exceed it
    stop_grace_s: int = 600
    # a message held by a worker that died (its job lock lapsed, its presence gone) goes back to its
    # queue once it was delivered this long ago (workers/redeliver.py); the visibility timeout stays
    # the last resort
    redeliver_after_s: int = 30

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> Settings:
        env = os.environ if environ is None else environ
        base = (cwd or Path.cwd()) / DEFAULT_HOME
        storage_url = env.get("OVBATCH_STORAGE_URL") or (base / "storage").resolve().as_uri()
        keyring = Path(env.get("OVBATCH_KEYRING") or base / "keyring.json").expanduser()
        broker = env.get("OVBATCH_BROKER_URL", "redis://127.0.0.1:6379/0")
        numbers = {
            name: _number(env, f"OVBATCH_{name.upper()}", default)
            for name, default in (
                ("visibility_timeout_s", cls.visibility_timeout_s),
                ("job_time_limit_s", cls.job_time_limit_s),
                ("max_audio_duration_s", cls.max_audio_duration_s),
                ("cache_max_models", cls.cache_max_models),
                ("cache_max_bytes", cls.cache_max_bytes),
                ("worker_batch_files", cls.worker_batch_files),
                ("max_image_side", cls.max_image_side),
                ("max_image_steps", cls.max_image_steps),
                ("image_pipelines", cls.image_pipelines),
                ("message_max_age_s", cls.message_max_age_s),
                ("stop_grace_s", cls.stop_grace_s),
                ("redeliver_after_s", cls.redeliver_after_s),
            )
        }
        if numbers["job_time_limit_s"] >= numbers["visibility_timeout_s"]:
            raise ConfigError(
                "OVBATCH_JOB_TIME_LIMIT_S must be below OVBATCH_VISIBILITY_TIMEOUT_S, or Redis redelivers "
                "running jobs to a second worker"
            )
        whisper_precision = env.get("OVBATCH_WHISPER_PRECISION", cls.whisper_precision).strip().lower()
        if whisper_precision not in WHISPER_PRECISIONS:
            raise ConfigError(
                f"OVBATCH_WHISPER_PRECISION={whisper_precision!r}: use one of {', '.join(WHISPER_PRECISIONS)}"
            )
        pack = env.get("OVBATCH_WHISPER_PACK_S", "").strip()
        try:
            whisper_pack_s = float(pack) if pack else cls.whisper_pack_s
        except ValueError:
            raise ConfigError(f"OVBATCH_WHISPER_PACK_S={pack!r} is not a number") from None
        if not 0 <= whisper_pack_s <= 15:
            raise ConfigError(f"OVBATCH_WHISPER_PACK_S={pack!r}: use 0 (off) to 15 seconds")
        scheme = urlsplit(storage_url).scheme
        if scheme not in ("file", "s3"):
            raise ConfigError(f"OVBATCH_STORAGE_URL={storage_url!r}: scheme must be file:// or s3://")
        return cls(
            storage_url=storage_url,
            keyring_path=keyring,
            broker_url=broker,
            s3_endpoint_url=env.get("OVBATCH_S3_ENDPOINT_URL")
            or env.get("AWS_ENDPOINT_URL_S3")
            or env.get("AWS_ENDPOINT_URL"),
            aws_credentials_set=bool(env.get("AWS_ACCESS_KEY_ID")),
            visibility_timeout_s=int(numbers["visibility_timeout_s"]),
            job_time_limit_s=int(numbers["job_time_limit_s"]),
            max_audio_duration_s=float(numbers["max_audio_duration_s"]),
            cache_max_models=int(numbers["cache_max_models"]),
            cache_max_bytes=int(numbers["cache_max_bytes"]),
            worker_batch_files=int(numbers["worker_batch_files"]),
            max_image_side=int(numbers["max_image_side"]),
            max_image_steps=int(numbers["max_image_steps"]),
            image_pipelines=int(numbers["image_pipelines"]),
            whisper_precision=whisper_precision,
            whisper_pack_s=whisper_pack_s,
            allowed_roots=Roots.parse(env.get("OVBATCH_ALLOWED_ROOTS")),
            message_max_age_s=int(numbers["message_max_age_s"]),
            stop_grace_s=int(numbers["stop_grace_s"]),
            redeliver_after_s=int(numbers["redeliver_after_s"]),
        )

    def masked(self) -> dict[str, str]:
        """The settings as strings, safe to print: no password or key material."""
        return {
            "storage_url": _mask_url(self.storage_url),
            "keyring": str(self.keyring_path),
            "broker_url": _mask_url(self.broker_url),
            "s3_endpoint_url": self.s3_endpoint_url or "(AWS default)",
            "aws_credentials": "set (hidden)" if self.aws_credentials_set else "not set",
            "visibility_timeout_s": str(self.visibility_timeout_s),
            "job_time_limit_s": str(self.job_time_limit_s),
            "max_audio_duration_s": str(self.max_audio_duration_s),
            "cache_max_models": str(self.cache_max_models),
            "cache_max_bytes": str(self.cache_max_bytes),
            "worker_batch_files": str(self.worker_batch_files),
            "max_image_side": str(self.max_image_side),
            "max_image_steps": str(self.max_image_steps),
            "image_pipelines": str(self.image_pipelines),
            "whisper_precision": self.whisper_precision,
            "whisper_pack_s": str(self.whisper_pack_s),
            "allowed_roots": ",".join(self.allowed_roots.prefixes) or "(any)",
            "message_max_age_s": str(self.message_max_age_s),
            "stop_grace_s": str(self.stop_grace_s),
            "redeliver_after_s": str(self.redeliver_after_s),
        }
