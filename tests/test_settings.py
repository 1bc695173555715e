from pathlib import Path

import pytest

from ovbatch.errors import ConfigError
from ovbatch.settings import Settings


def test_embedded_default_is_a_file_folder_in_the_working_directory(tmp_path: Path) -> None:
    s = Settings.from_env({}, cwd=tmp_path)
    assert s.storage_url == (tmp_path / ".ovbatch" / "storage").resolve().as_uri()
    assert s.keyring_path == tmp_path / ".ovbatch" / "keyring.json"


def test_environment_overrides_and_masks_secrets(tmp_path: Path) -> None:
    env = {
        "OVBATCH_STORAGE_URL": "s3://bucket/models",
        "OVBATCH_KEYRING": str(tmp_path / "k.json"),
        "OVBATCH_BROKER_URL": "redis://:hunter2@redis.example:6380/3",
        "OVBATCH_S3_ENDPOINT_URL": "http://minio:9000",
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
    }
    s = Settings.from_env(env, cwd=tmp_path)
    shown = " ".join(s.masked().values())
    assert "hunter2" not in shown, f"broker password leaked into `ovbatch config`: {shown}"
    assert "AKIAEXAMPLE" not in shown
    assert "redis://:***@redis.example:6380/3" in shown
    assert s.s3_endpoint_url == "http://minio:9000"


def test_unknown_storage_scheme_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file:// or s3://"):
        Settings.from_env({"OVBATCH_STORAGE_URL": "ftp://x/y"}, cwd=tmp_path)


def test_whisper_packing_length_is_set_or_turned_off_and_bad_values_are_refused(tmp_path: Path) -> None:
    assert Settings.from_env({}, cwd=tmp_path).whisper_pack_s == 10.0
    assert Settings.from_env({"OVBATCH_WHISPER_PACK_S": "0"}, cwd=tmp_path).whisper_pack_s == 0.0
    assert Settings.from_env({"OVBATCH_WHISPER_PACK_S": "6.5"}, cwd=tmp_path).whisper_pack_s == 6.5
    for bad, why in (("ten", "is not a number"), ("-1", "use 0 .off. to 15 seconds"), ("25", "use 0 .off. to 15")):
        with pytest.raises(ConfigError, match=f"OVBATCH_WHISPER_PACK_S='{bad}'.*{why}"):
            Settings.from_env({"OVBATCH_WHISPER_PACK_S": bad}, cwd=tmp_path)
