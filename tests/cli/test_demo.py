"""``ovbatch demo`` as ``make demo`` runs it (without the INT8 step, which the quantize tests cover):
the registry's Whisper base found again, verified, the examples transcribed and their texts shown."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CACHE

OVBATCH = str(Path(sys.executable).with_name("ovbatch"))
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "audio"

pytestmark = [pytest.mark.slow, pytest.mark.real_model]


def test_demo_transcribes_the_examples_and_shows_only_their_texts(
    whisper_home: dict[str, str], whisper_base_ct2: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    shutil.copytree(Path(whisper_home["OVBATCH_KEYRING"]).parent, home)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OVBATCH_", "AWS_"))}
    env |= {
        "OVBATCH_STORAGE_URL": (home / "storage").as_uri(),
        "OVBATCH_KEYRING": str(home / "keyring.json"),
        "OVBATCH_BROKER_URL": "redis://127.0.0.1:1/0",  # the demo runs in process
    }
    assert whisper_base_ct2 == CACHE / "models" / "whisper-base-ct2"
    out = tmp_path / "out"
    args = ["demo", "--cache", str(whisper_base_ct2), "--audio", str(EXAMPLES), "--out", str(out)]
    done = subprocess.run([OVBATCH, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    where = f"`ovbatch demo` exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    assert done.returncode == 0 and "Traceback" not in done.stderr, where
    assert "whisper-base@1 is already in the registry" in done.stdout, where
    shown = [line.strip() for line in done.stdout.splitlines() if line.startswith("  ") and ": " in line]
    texts = {line.split(": ", 1)[0]: line.split(": ", 1)[1] for line in shown if not line.startswith("[")}
    assert {"archive", "quilter", "subtitles"} <= set(texts), where
    assert "Quilter" in texts["quilter"] and "subtitles" in texts["subtitles"], texts
    assert not [name for name in texts if name.startswith(".ovbatch")], f"the demo showed its own records: {texts}"
    assert (out / "quilter.srt").is_file() and (out / "archive.json").is_file()
