"""A tiny SD 1.x single-file checkpoint, and a registry that imported it through the real CLI (once a session)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ovbatch.crypto.keyring import Keyring
from ovbatch.registry.registry import Registry
from ovbatch.storage.file import FileStore
from tests.sd_tiny import write_tiny_sd_checkpoint

OVBATCH = str(Path(sys.executable).with_name("ovbatch"))


@dataclass
class TinySD:
    checkpoint: Path  # the LDM single-file .safetensors
    components: dict[str, Any]  # the diffusers/transformers models it was written from


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> TinySD:
    path, components = write_tiny_sd_checkpoint(tmp_path_factory.mktemp("sd-tiny") / "sd-tiny.safetensors")
    return TinySD(path, components)


def run_ovbatch(env: dict[str, str], cwd: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    """``ovbatch ARGS`` as a user runs it; the assertion message carries its output."""
    done = subprocess.run([OVBATCH, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=540)
    where = f"`ovbatch {' '.join(args)}` exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, where
    assert (done.returncode == 0) == ok, where
    return done


@dataclass
class SDHome:
    env: dict[str, str]  # OVBATCH_STORAGE_URL / OVBATCH_KEYRING of the registry below
    cwd: Path
    registry: Registry
    import_output: str


@pytest.fixture(scope="session")
def sd_home(tmp_path_factory: pytest.TempPathFactory, tiny_sd: TinySD) -> SDHome:
    """A registry holding ``sd-tiny@1``, imported from the tiny single-file checkpoint by `ovbatch models import`."""
    root = tmp_path_factory.mktemp("sd-home")
    ring = Keyring(root / "keyring.json")
    ring.add_new_key()
    ring.save()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OVBATCH_", "AWS_"))}
    env |= {"OVBATCH_STORAGE_URL": (root / "storage").as_uri(), "OVBATCH_KEYRING": str(ring.path)}
    done = run_ovbatch(env, root, "models", "import", str(tiny_sd.checkpoint), "--name", "sd-tiny")
    return SDHome(env, root, Registry(FileStore(root / "storage"), ring), done.stdout)
