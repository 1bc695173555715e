"""The wheel, not the editable checkout: build it, install it into a fresh venv, import everything."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_wheel_installs_and_imports_all_packages(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist"), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, f"wheel build failed:\n{built.stdout[-2000:]}\n{built.stderr[-2000:]}"
    wheel = next((tmp_path / "dist").glob("ovbatch-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for module in (
        "ovbatch/cli/main.py",
        "ovbatch/tasks/__init__.py",
        "ovbatch/workers/__init__.py",
        "ovbatch/registry/loader.py",
        "ovbatch/storage/s3.py",
        "ovbatch/crypto/stream.py",
    ):
        assert module in names, f"{module} missing from the wheel"
    assert not any(n.startswith(("cli/", "tasks/", "workers/", "tests/")) for n in names), names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    site = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # dependencies come from the test venv (installing openvino again would take minutes);
    # ovbatch itself comes only from the wheel: the checkout is not on the new venv's path
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([py, "-m", "pip", "install", "--no-deps", "--quiet", str(wheel)], check=True, timeout=300)
    probe = (
        "import ovbatch, ovbatch.cli.main, ovbatch.tasks, ovbatch.workers, ovbatch.registry.loader;"
        "print(ovbatch.__file__)"
    )
    done = subprocess.run([py, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(str(venv)), f"imported from {done.stdout!r}, not the wheel"
    help_text = subprocess.run(
        [venv / "bin" / "ovbatch", "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert help_text.returncode == 0 and "models" in help_text.stdout, help_text.stderr
