"""openvino_genai text-to-image pipelines built from a decrypted model version, in memory only.

Models, weights and the tokenizer go to genai as ``(xml string, ov.Tensor over the plaintext)``: no
copy, no file. genai's ``*.Config`` classes and ``Scheduler.from_config`` take only a path (2026.4:
no constructor from a string or dict), so each JSON config is put in an anonymous memory file
(``os.memfd_create``) and passed as ``/proc/self/fd/N``: RAM, never a disk.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import openvino_genai as genai

from ovbatch.errors import CorruptModelError, InputError, WrongModelKindError
from ovbatch.registry.loader import DecryptedVersion

TEXT_ENCODER, UNET, VAE_DECODER = (
    "text_encoder/openvino_model.xml",
    "unet/openvino_model.xml",
    "vae_decoder/openvino_model.xml",
)
TOKENIZER, DETOKENIZER = "tokenizer/openvino_tokenizer.xml", "tokenizer/openvino_detokenizer.xml"
SCHEDULER_CONFIG = "scheduler/scheduler_config.json"
CONFIGS = ("text_encoder/config.json", "unet/config.json", "vae_decoder/config.json", SCHEDULER_CONFIG)
MODELS = (TEXT_ENCODER, UNET, VAE_DECODER, TOKENIZER, DETOKENIZER)
# every file an engine reads: a loader can decrypt just these (the VAE encoder is for image-to-image)
ROLES = tuple(r for xml in MODELS for r in (xml, xml[:-4] + ".bin")) + CONFIGS
KINDS = ("lcm", "stable-diffusion")

# request name -> genai scheduler type (no name: the model's own). genai 2026.4 also lists LMS_DISCRETE,
# but builds a DDIM scheduler for it, so it is not offered.
SCHEDULERS = {
    "lcm": "LCM",
    "ddim": "DDIM",
    "pndm": "PNDM",
    "euler": "EULER_DISCRETE",
    "euler-ancestral": "EULER_ANCESTRAL_DISCRETE",
}
# genai implements only these settings of two schedulers and refuses a config without them (diffusers'
# defaults differ); the model's config gets them, as SD 1.x's own scheduler configs have them
SCHEDULER_OVERRIDES: dict[str, dict[str, Any]] = {"ddim": {"clip_sample": False}, "pndm": {"skip_prk_steps": True}}


class UnknownSchedulerError(InputError):
    """Raised when a request names a scheduler that is not one of ``SCHEDULERS``."""


def scheduler_type(name: str | None) -> Any:
    """genai's ``Scheduler.Type`` for a request's scheduler name (None: the model's own)."""
    if name is None:
        return genai.Scheduler.Type.AUTO
    if name not in SCHEDULERS:
        raise UnknownSchedulerError(f"unknown scheduler {name!r}; valid schedulers: {', '.join(sorted(SCHEDULERS))}")
    return getattr(genai.Scheduler.Type, SCHEDULERS[name])


class MemoryFile:
    """Bytes behind a path that lives in RAM only: an anonymous ``memfd``, closed by ``close``."""

    def __init__(self, name: str, data: bytes | memoryview):
        self.fd = os.memfd_create(name, os.MFD_CLOEXEC)
        view = memoryview(data)
        written = 0
        while written < len(view):
            written += os.write(self.fd, view[written:])

    @property
    def path(self) -> str:
        return f"/proc/self/fd/{self.fd}"

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass
class ModelFiles:
    """What pipelines are built from: the plaintext version and its configs as memory files."""

    version: DecryptedVersion
    configs: dict[str, MemoryFile]  # by role, and scheduler configs with overrides by scheduler name

    @classmethod
    def open(cls, version: DecryptedVersion) -> ModelFiles:
        missing = [r for r in ROLES if r not in version.buffers]
        kind = version.manifest.get("kind")
        if kind not in KINDS:
            raise WrongModelKindError(f"{version.ref} is a {kind!r} model; image generation needs: {', '.join(KINDS)}")
        if missing:
            raise CorruptModelError(f"{version.ref} lacks files an image pipeline needs: {', '.join(missing)}")
        files = cls(version, {})
        try:
            for role in CONFIGS:
                files.configs[role] = MemoryFile(role.replace("/", "-"), version.data(role))
            scheduler = json.loads(version.text(SCHEDULER_CONFIG))
            for name, overrides in SCHEDULER_OVERRIDES.items():
                data = json.dumps({**scheduler, **overrides}).encode()
                files.configs[name] = MemoryFile(f"scheduler-{name}", data)
        except BaseException:
            files.close()
            raise
        return files

    @property
    def kind(self) -> str:
        return str(self.version.manifest["kind"])

    def config_json(self, role: str) -> dict[str, Any]:
        return dict(json.loads(self.version.text(role)))

    def model(self, xml_role: str) -> tuple[str, Any]:
        return self.version.text(xml_role), self.version.weights_tensor(xml_role)

    @property
    def scheduler_class(self) -> str | None:
        """The class of the model's own scheduler (``_class_name`` in its config), e.g. LCMScheduler."""
        name = json.loads(self.version.text(SCHEDULER_CONFIG)).get("_class_name")
        return str(name) if name else None

    def scheduler(self, name: str | None) -> Any:
        """A fresh scheduler: each holds per-generation state (PNDM's history, timesteps)."""
        config = self.configs.get(name or "", self.configs[SCHEDULER_CONFIG])
        return genai.Scheduler.from_config(config.path, scheduler_type(name))

    def close(self) -> None:
        for memory_file in self.configs.values():
            memory_file.close()


def build_pipeline(files: ModelFiles) -> Any:
    """An uncompiled ``Text2ImagePipeline`` with its own copy of each model (reshape and compile follow)."""
    config = files.configs
    tokenizer = genai.Tokenizer(*files.model(TOKENIZER), *files.model(DETOKENIZER))
    text_encoder = genai.CLIPTextModel(
        *files.model(TEXT_ENCODER), genai.CLIPTextModel.Config(config["text_encoder/config.json"].path), tokenizer
    )
    vae = genai.AutoencoderKL(
        *files.model(VAE_DECODER), genai.AutoencoderKL.Config(config["vae_decoder/config.json"].path)
    )
    unet = genai.UNet2DConditionModel(
        *files.model(UNET),
        genai.UNet2DConditionModel.Config(config["unet/config.json"].path),
        vae.get_vae_scale_factor(),
    )
    build = genai.Text2ImagePipeline.latent_consistency_model
    if files.kind != "lcm":
        build = genai.Text2ImagePipeline.stable_diffusion
    return build(files.scheduler(None), text_encoder, unet, vae)


def vae_scale_factor(files: ModelFiles) -> int:
    """Pixels per latent cell: 2 ** (VAE blocks - 1), as genai and diffusers compute it."""
    blocks = files.config_json("vae_decoder/config.json").get("block_out_channels") or [64]
    return int(2 ** (len(blocks) - 1))
