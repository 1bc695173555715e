"""Shared CLI plumbing: one Settings object per invocation, errors turned into one clear line."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ovbatch.crypto.keyring import Keyring
from ovbatch.errors import OvbatchError
from ovbatch.registry.registry import Registry
from ovbatch.settings import Settings
from ovbatch.storage import open_store

F = TypeVar("F", bound=Callable[..., Any])


def wait_or_local(fn: F) -> F:
    """Every submitting command's ``--wait`` and ``--local``."""
    fn = click.option("--local", is_flag=True, help="Run in this process, no Redis or workers (embedded mode).")(fn)
    return click.option("--wait", is_flag=True, help="Show progress until the batch ends.")(fn)


def overwrite_option(fn: F) -> F:
    """``--overwrite``, for the kinds whose output names follow from their inputs (``jobs.claim_outputs``)."""
    return click.option(
        "--overwrite",
        is_flag=True,
        help="Replace outputs that another batch (other model or options) wrote under the same names in --out.",
    )(fn)


def settings_of(ctx: click.Context) -> Settings:
    root = ctx.find_root()
    if root.obj is None:
        root.obj = Settings.from_env()  # the only place the CLI reads the environment
    assert isinstance(root.obj, Settings)
    return root.obj


def clean_errors(fn: F) -> F:
    """Report an ``OvbatchError`` as ``Error: <message>`` and exit 1, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except OvbatchError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper  # type: ignore[return-value]


def open_registry(ctx: click.Context, *, need_keyring: bool = True) -> Registry:
    settings = settings_of(ctx)
    store = open_store(settings.storage_url, s3_endpoint_url=settings.s3_endpoint_url)
    ring = Keyring.load(settings.keyring_path) if need_keyring else Keyring(settings.keyring_path)
    return Registry(store, ring)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
