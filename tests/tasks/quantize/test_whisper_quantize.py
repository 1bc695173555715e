"""Whisper quantization on the real Whisper base: calibration captured from real transcription, the
WER gate with references and by agreement with the parent, and the new version transcribing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.speech import make_clips
from tests.conftest import CACHE, cache_lock

pytestmark = [pytest.mark.slow, pytest.mark.real_model]
OVBATCH = str(Path(sys.executable).with_name("ovbatch"))


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([OVBATCH, *args], env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture
def sets(tmp_path: Path) -> dict[str, Path]:
    with cache_lock("speech"):
        refs = make_clips(CACHE / "speech")
    names = sorted(refs)
    folders = {"calib": tmp_path / "calib", "eval": tmp_path / "eval", "bare": tmp_path / "bare"}
    for folder in folders.values():
        folder.mkdir()
    for name in names[:12]:  # fewer windows calibrate the encoder badly (4 clips: +10 WER points)
        shutil.copy(CACHE / "speech" / name, folders["calib"] / name)
    for name in names[12:18]:
        shutil.copy(CACHE / "speech" / name, folders["eval"] / name)
        (folders["eval"] / name).with_suffix(".txt").write_text(refs[name])
        shutil.copy(CACHE / "speech" / name, folders["bare"] / name)
    return folders


def test_int8_hybrid_passes_its_gate_and_the_new_version_transcribes(
    whisper_home: dict[str, str], sets: dict[str, Path], tmp_path: Path
) -> None:
    env = {**os.environ, **whisper_home, "OVBATCH_BROKER_URL": "redis://127.0.0.1:1/0"}
    out = tmp_path / "reports"
    args = ["quantize", "whisper-base@1", "--recipe", "int8-hybrid", "--calibration", str(sets["calib"])]
    # a target name of its own: the session's whisper-base stays the float model for the other tests
    args += ["--eval", str(sets["eval"]), "--language", "en", "--target", "whisper-int8", "--out", str(out)]
    done = run(env, *args, "--max-drop", "15", "--local")  # plumbing: accuracy is benchmarks/quantize_bench
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    report = json.loads((out / "whisper-base@1" / "int8-hybrid.json").read_text())
    short = report["metrics"]["short"]
    assert report["metrics"]["mode"] == "references" and short["files"] == 6, report["metrics"]
    assert short["before"] < 60 and short["after"] < 60, f"WER out of any sane range: {short}"
    assert report["version"].startswith("whisper-int8@"), report
    assert report["size_bytes"]["after"] < report["size_bytes"]["before"] / 2.5, report["size_bytes"]
    assert report["calibration"]["items"] == 12 and report["seconds"]["calibrate"] > 0
    shown = run(env, "models", "show", report["version"])
    lineage = json.loads(shown.stdout)["lineage"]
    assert lineage["parent"] == "whisper-base@1" and lineage["params"]["smooth_quant_alpha"] == 0.5
    assert lineage["evaluation_sha256"] == report["evaluation"]["sha256"]
    clip = sorted(sets["eval"].glob("*.wav"))[0]
    transcribed = run(
        env,
        "transcribe",
        str(clip),
        "--model",
        report["version"],
        "--out",
        str(tmp_path / "t"),
        "--language",
        "en",
        "--local",
    )
    assert transcribed.returncode == 0, transcribed.stderr
    text = (tmp_path / "t" / clip.with_suffix(".txt").name).read_text()
    assert len(text.split()) >= 3, f"the INT8 model transcribed {clip.name} as {text!r}"


def test_without_references_the_gate_compares_with_the_parent(
    whisper_home: dict[str, str], sets: dict[str, Path], tmp_path: Path
) -> None:
    env = {**os.environ, **whisper_home, "OVBATCH_BROKER_URL": "redis://127.0.0.1:1/0"}
    out = tmp_path / "reports"
    done = run(
        env,
        "quantize",
        "whisper-base@1",
        "--recipe",
        "int8-weights",
        "--eval",
        str(sets["bare"]),
        "--language",
        "en",
        "--target",
        "whisper-w8",
        "--out",
        str(out),
        "--max-drop",
        "0",
        "--local",
    )
    report = json.loads((out / "whisper-base@1" / "int8-weights.json").read_text())
    short = report["metrics"]["short"]
    assert report["metrics"]["mode"] == "agreement" and short["before"] == 0.0, report["metrics"]
    if short["after"] > 0:  # any disagreement fails a zero-drop gate, and nothing is registered
        assert done.returncode == 1 and "gate failed on agreement with the parent" in done.stderr, done.stderr
        assert "version" not in report
    else:
        assert done.returncode == 0, done.stderr
