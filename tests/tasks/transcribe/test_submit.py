"""Output names of a transcription batch: never two inputs onto one output, never onto ovbatch's own files."""

from __future__ import annotations

from pathlib import Path

from ovbatch.registry.registry import Registry
from ovbatch.tasks.transcribe.submit import plan
from ovbatch.tasks.transcribe.types import TranscribeOptions


def test_inputs_whose_outputs_would_collide_keep_their_extension(
    registry: Registry, tiny_ir: Path, tmp_path: Path
) -> None:
    registry.import_folder(tiny_ir, "m")
    src = tmp_path / "in"
    for name in ("a.wav", "a.flac", "b.wav", "calls/a.wav", "batch-20260101-000000-abcdef.wav", ".ovbatch/x.wav"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(name.encode() * 10)  # distinct content: naming happens before decoding
    said: list[str] = []
    got = plan(
        [str(src)],
        batch_id="b",
        registry=registry,
        out_url=(tmp_path / "out").as_uri() + "/",
        model="m",
        device="CPU",
        options=TranscribeOptions(),
        formats=("txt", "json"),
        progress=said.append,
    )
    keys = {job.relpath: [job.output_key(f) for f in job.formats] for job in got.jobs}  # type: ignore[attr-defined]
    assert keys == {
        "a.flac": ["a.flac.txt", "a.flac.json"],
        "a.wav": ["a.wav.txt", "a.wav.json"],
        "b.wav": ["b.txt", "b.json"],
        "calls/a.wav": ["calls/a.txt", "calls/a.json"],  # another folder: no collision
        "batch-20260101-000000-abcdef.wav": [
            "batch-20260101-000000-abcdef.wav.txt",
            "batch-20260101-000000-abcdef.wav.json",
        ],
    }, keys
    outputs = [k for ks in keys.values() for k in ks]
    assert len(outputs) == len(set(outputs)), "two inputs of one batch write one output"
    (refused,) = got.failures
    assert ".ovbatch/x.wav" in refused.display and "ovbatch's own bookkeeping folder" in refused.error
    assert any("a.flac, a.wav: the same name but for the extension" in s or "a.wav, a.flac" in s for s in said), said
    ids = {job.relpath: job.job_id for job in got.jobs}
    assert len(set(ids.values())) == len(ids)
