"""The ``ovbatch`` command as a user runs it: a real process, real storage, clear one-line errors."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import build_tiny_ir, free_port

OVBATCH = str(Path(sys.executable).with_name("ovbatch"))


class Cli:
    def __init__(self, cwd: Path, env: dict[str, str]):
        self.cwd, self.env = cwd, env

    def __call__(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([OVBATCH, *args], cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=300)
        where = f"`ovbatch {' '.join(args)}` exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        assert "Traceback" not in done.stderr, where
        assert (done.returncode == 0) == ok, where
        return done


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OVBATCH_", "AWS_"))}
    return Cli(tmp_path, env)


def test_embedded_default_end_to_end(cli: Cli, tmp_path: Path) -> None:
    out = cli("keys", "new").stdout
    ring = tmp_path / ".ovbatch" / "keyring.json"
    assert "created key kek-" in out and stat.S_IMODE(ring.stat().st_mode) == 0o600
    key_material = json.loads(ring.read_text())["keys"]
    model = build_tiny_ir(tmp_path / "src")
    assert "imported tiny@1: generic, fp32, 3 files" in cli("models", "import", str(model), "--name", "tiny").stdout
    assert "imported tiny@2" in cli("models", "import", str(model), "--name", "tiny").stdout
    listing = cli("models", "list").stdout
    assert "tiny@1" in listing and "tiny@2" in listing
    shown = json.loads(cli("models", "show", "tiny@1").stdout)
    assert shown["version"] == "1" and "wrapped_key" not in shown
    verified = cli("models", "verify", "tiny", "--device", "CPU").stdout
    assert "verified tiny@2 on CPU" in verified
    for phase in ("fetch", "decrypt", "read_model", "compile"):
        assert f"{phase} " in verified, verified
    cli("models", "rm", "tiny@1")
    assert "tiny@1" not in cli("models", "list").stdout
    every_output = out + listing + verified
    for entry in key_material.values():
        assert entry["key"] not in every_output, "a key was printed"


def test_rotate_rewraps_without_touching_data(cli: Cli, tmp_path: Path) -> None:
    cli("keys", "new")
    cli("models", "import", str(build_tiny_ir(tmp_path / "src")), "--name", "tiny")
    storage = tmp_path / ".ovbatch" / "storage"
    before = {p: p.read_bytes() for p in storage.rglob("*.enc")}
    old = json.loads((tmp_path / ".ovbatch" / "keyring.json").read_text())["active"]
    out = cli("keys", "rotate").stdout
    assert "rewrapped 1 model version(s); retired 1 old key(s)" in out
    ring = json.loads((tmp_path / ".ovbatch" / "keyring.json").read_text())
    assert ring["active"] != old and set(ring["keys"]) == {old, ring["active"]}  # prune removes old
    assert {p: p.read_bytes() for p in storage.rglob("*.enc")} == before
    assert "verified tiny@1" in cli("models", "verify", "tiny").stdout
    assert f"* {ring['active']}" in cli("keys", "list").stdout


def test_config_masks_secrets(cli: Cli) -> None:
    cli.env.update(OVBATCH_BROKER_URL="redis://:s3cret@h:6379/0", AWS_ACCESS_KEY_ID="AKIA123")
    out = cli("config").stdout
    assert "s3cret" not in out and "AKIA123" not in out and ":***@h:6379" in out
    assert "file://" in out and ".ovbatch/storage" in out


def test_errors_are_one_clear_line(cli: Cli, tmp_path: Path) -> None:
    err = cli("models", "list", ok=True).stdout
    assert "no models" in err
    assert "keyring" in cli("models", "import", str(tmp_path), "--name", "x", ok=False).stderr
    cli("keys", "new")
    assert "does not exist" in cli("models", "import", str(tmp_path / "nope"), "--name", "x", ok=False).stderr
    (tmp_path / "empty").mkdir()
    assert "holds no model" in cli("models", "import", str(tmp_path / "empty"), "--name", "x", ok=False).stderr
    model = build_tiny_ir(tmp_path / "src")
    cli("models", "import", str(model), "--name", "tiny")
    dup = cli("models", "import", str(model), "--name", "tiny", "--version", "1", ok=False).stderr
    assert "tiny@1 already exists; versions are immutable" in dup
    assert "not in the registry" in cli("models", "verify", "ghost", ok=False).stderr
    gpu = cli("models", "verify", "tiny", "--device", "GPU", ok=False).stderr
    assert "device 'GPU' is not available" in gpu and "available: CPU" in gpu
    (tmp_path / ".ovbatch" / "keyring.json").chmod(0o644)
    assert "chmod 600" in cli("models", "verify", "tiny", ok=False).stderr


def test_unreachable_storage_is_a_clear_error(cli: Cli) -> None:
    cli.env.update(
        OVBATCH_STORAGE_URL="s3://bucket/models",
        OVBATCH_S3_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}",
        AWS_ACCESS_KEY_ID="x",
        AWS_SECRET_ACCESS_KEY="y",
        AWS_DEFAULT_REGION="us-east-1",
    )
    err = cli("models", "list", ok=False).stderr
    assert "cannot list" in err and "Could not connect" in err, err


def test_cli_against_s3(cli: Cli, tmp_path: Path, s3_endpoint: str) -> None:
    import boto3

    cli.env.update(
        OVBATCH_STORAGE_URL="s3://cli-bucket/reg",
        OVBATCH_S3_ENDPOINT_URL=s3_endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket="cli-bucket")
    cli("keys", "new")
    cli("models", "import", str(build_tiny_ir(tmp_path / "src")), "--name", "tiny")
    assert "verified tiny@1" in cli("models", "verify", "tiny").stdout
