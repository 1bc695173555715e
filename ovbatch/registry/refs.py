"""Model references (``name`` or ``name@version``) and where a version lives in storage."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ovbatch.errors import InputError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_VERSION = re.compile(r"^[0-9]{1,9}$")
ROOT = "models"


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise InputError(f"model name {name!r}: use letters, digits, '.', '_' or '-' (at most 100)")
    return name


def check_version(version: str) -> str:
    if not _VERSION.match(version):
        raise InputError(f"model version {version!r}: versions are positive integers (1, 2, ...)")
    return str(int(version))


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: str | None = None  # None: the newest

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        name, _, version = text.partition("@")
        return cls(check_name(name), check_version(version) if version else None)

    def __str__(self) -> str:
        return f"{self.name}@{self.version}" if self.version else self.name


def version_prefix(name: str, version: str) -> str:
    return f"{ROOT}/{name}/{version}/"


def manifest_key(name: str, version: str) -> str:
    return version_prefix(name, version) + "manifest.json"


def reservation_key(name: str, version: str) -> str:
    return version_prefix(name, version) + "RESERVED"


def object_key(name: str, version: str, role: str) -> str:
    return version_prefix(name, version) + role + ".enc"
