"""What ``models import`` accepts, and how each source becomes an OpenVINO IR folder.

* an OpenVINO IR folder (``*.xml`` + ``*.bin``): imported as is, after OpenVINO reads every model
* a Hugging Face folder (``config.json`` + weights, or a diffusers ``model_index.json``):
  exported with optimum-intel, tokenizer/detokenizer converted by openvino-tokenizers
* a faster-whisper / CTranslate2 Whisper folder (``model.bin`` with ``WhisperSpec``):
  rebuilt as a Hugging Face Whisper (``ct2.py``), then exported as above
* a single-file SD 1.x checkpoint (``.safetensors``, LDM keys): rebuilt as a diffusers folder
  (``sd/single_file.py``), then exported as above
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import warnings
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ovbatch.errors import CorruptModelError, InputError, NotAModelError
from ovbatch.registry import ct2, extensions

HF_WEIGHTS = ("*.safetensors", "pytorch_model*.bin", "model.safetensors.index.json")
# optimum cannot infer the task of a local folder; the architecture name tells it (first match wins)
ARCHITECTURE_TASKS = (
    ("WhisperForConditionalGeneration", "automatic-speech-recognition-with-past"),
    ("ForCausalLM", "text-generation-with-past"),
    ("LMHeadModel", "text-generation-with-past"),
    ("ForSpeechSeq2Seq", "automatic-speech-recognition-with-past"),
    ("ForConditionalGeneration", "text2text-generation-with-past"),
    ("ForSeq2SeqLM", "text2text-generation-with-past"),
    ("ForSequenceClassification", "text-classification"),
    ("ForTokenClassification", "token-classification"),
    ("ForQuestionAnswering", "question-answering"),
    ("ForMaskedLM", "fill-mask"),
    ("ForImageClassification", "image-classification"),
)


@dataclass(frozen=True)
class PreparedModel:
    folder: Path  # an OpenVINO IR folder, ready to encrypt
    source: dict[str, str]
    kind: str
    precision: str
    extra: dict[str, Any] = field(default_factory=dict)  # more manifest fields (a LoRA's metadata)


def _ir_pairs(folder: Path) -> list[Path]:
    """OpenVINO models at the top of ``folder``, or one level down in a diffusers-style pipeline."""
    pattern = "*/*.xml" if (folder / "model_index.json").is_file() else "*.xml"
    found = list(folder.glob("*.xml")) + (list(folder.glob(pattern)) if pattern != "*.xml" else [])
    return sorted(p for p in found if p.with_suffix(".bin").is_file())


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CorruptModelError(f"{path}: not valid JSON ({exc})") from exc
    return data if isinstance(data, dict) else {}


# diffusers pipelines whose models ovbatch's image engine builds (one CLIP text encoder, a UNet, a VAE)
IMAGE_PIPELINES = ("StableDiffusionPipeline", "LatentConsistencyModelPipeline")


def detect_kind(folder: Path) -> str:
    index = folder / "model_index.json"
    if index.is_file():
        data = _json(index)
        scheduler = data.get("scheduler", [None, None])
        cls = str(data.get("_class_name", "")).removeprefix("OV")  # optimum-intel's IR folders: OV<class>
        if cls not in IMAGE_PIPELINES or "text_encoder_2" in data or "unet" not in data:
            # SDXL (two text encoders), SD 3 / Flux (transformers), img2img/inpaint classes: the engine
            # builds none of them, so refuse now rather than on a worker at its first job
            raise NotAModelError(
                f"{index}: a {cls or 'diffusers'} pipeline; image generation takes "
                f"{' or '.join(IMAGE_PIPELINES)} folders (Stable Diffusion 1.x/2.x, SD-turbo, LCM), not SDXL, "
                "SD 3, Flux or others"
            )
        if "LatentConsistency" in cls or (isinstance(scheduler, list) and "LCM" in str(scheduler[-1])):
            return "lcm"
        return "stable-diffusion"
    config = folder / "config.json"
    if config.is_file() and _json(config).get("model_type") == "whisper":
        return "whisper"
    return "generic"


def detect_precision(folder: Path) -> str:
    """The dominant weight type of the IR's constants, by bytes (int4 wins if present at all)."""
    texts = []
    for xml in _ir_pairs(folder):
        texts.append((str(xml), xml.read_text(errors="replace")))
    return precision_of_xml(texts)


def precision_of_xml(texts: list[tuple[str, str]]) -> str:
    """``detect_precision`` over (name, xml text) pairs: models held in memory (quantization results)."""
    by_type: Counter[str] = Counter()
    for name, text in texts:
        try:
            for layer in ET.fromstring(text).iter("layer"):
                data = layer.find("data")
                if layer.get("type") == "Const" and data is not None:
                    by_type[data.get("element_type", "?")] += int(data.get("size", "0"))
        except ET.ParseError as exc:
            raise CorruptModelError(f"{name}: not a valid OpenVINO IR XML ({exc})") from exc
    if by_type["u4"] + by_type["i4"] + by_type["nf4"]:
        return "int4"
    if not by_type:
        return "unknown"
    top = by_type.most_common(1)[0][0]
    return {"f32": "fp32", "f16": "fp16", "bf16": "bf16", "u8": "int8", "i8": "int8"}.get(top, top)


def check_ir(folder: Path, libraries: Sequence[Path] = ()) -> None:
    """Have OpenVINO read every model, with the extension libraries that come with it, so a corrupt IR
    (or one using an operation no library defines) is refused before it is encrypted."""
    import openvino as ov

    with contextlib.suppress(ImportError):
        import openvino_tokenizers  # noqa: F401  registers the tokenizer ops with OpenVINO
    core = ov.Core()
    libraries = [*libraries, *extensions.folder_libraries(folder)]
    extensions.add_libraries(core, libraries)
    for xml in _ir_pairs(folder):
        try:
            core.read_model(xml)
        except Exception as exc:
            why = extensions.read_error(exc, [p.name for p in libraries], "this IR")
            raise CorruptModelError(f"{xml}: {why}") from exc


def infer_task(folder: Path) -> str:
    """The optimum export task for a Hugging Face folder."""
    if (folder / "model_index.json").is_file():
        return "text-to-image"
    architectures = _json(folder / "config.json").get("architectures") or []
    for suffix, task in ARCHITECTURE_TASKS:
        if any(str(a).endswith(suffix) for a in architectures):
            return task
    return "feature-extraction"


def _export_hf(folder: Path, out: Path, task: str | None) -> None:
    try:
        from optimum.exporters.openvino import main_export
    except ImportError as exc:
        raise InputError(
            f"{folder} is a Hugging Face model; exporting it needs the export extra: "
            f"pip install 'ovbatch[export]' ({exc})"
        ) from exc
    task = task or infer_task(folder)
    try:
        with warnings.catch_warnings():
            # torch's tracer warns about every Python branch in the model; none is actionable here
            warnings.simplefilter("ignore")
            main_export(model_name_or_path=str(folder), output=out, task=task, convert_tokenizer=True)
    except Exception as exc:
        raise CorruptModelError(f"{folder}: optimum-intel could not export this model: {exc}") from exc


def _has_hf_weights(folder: Path) -> bool:
    return any(any(folder.glob(pattern)) for pattern in HF_WEIGHTS)


@contextlib.contextmanager
def _quiet_exporters() -> Iterator[None]:
    """Exporters print progress bars and deprecation chatter that tells an importing user nothing."""
    import logging

    # openvino.frontend logs "Failed to build model wrapper." at ERROR when it falls back to tracing
    # the model itself, which then succeeds; the other loggers are chatter
    names = ("transformers", "optimum", "nncf", "openvino_tokenizers", "openvino.frontend")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass
    try:  # diffusers prints "Loading pipeline components" bars while optimum loads a pipeline
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.disable_progress_bar()
    except ImportError:
        pass
    for lg in loggers:
        lg.setLevel(logging.CRITICAL if lg.name == "openvino.frontend" else logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


@contextlib.contextmanager
def prepare(path: Path, task: str | None = None, libraries: Sequence[Path] = ()) -> Iterator[PreparedModel]:
    """Yield the source as an IR folder; exported copies live in a temp dir removed afterwards.
    ``libraries``: extension libraries from outside the folder its IR needs (``*.so`` inside it are found)."""
    if not path.exists():
        raise InputError(f"{path} does not exist")
    if path.is_file():
        with _prepare_single_file(path.resolve(), task) as prepared:
            yield prepared
        return
    if not path.is_dir():
        raise InputError(f"{path} is not a folder: import takes a model folder")
    folder = path.resolve()
    if _ir_pairs(folder):
        check_ir(folder, libraries)
        yield PreparedModel(
            folder, {"type": "openvino-ir", "path": str(folder)}, detect_kind(folder), detect_precision(folder)
        )
        return
    is_ct2 = ct2.is_ct2_whisper(folder)
    is_hf = (folder / "model_index.json").is_file() or ((folder / "config.json").is_file() and _has_hf_weights(folder))
    if not (is_ct2 or is_hf):
        raise NotAModelError(
            f"{folder} holds no model ovbatch can import: expected an OpenVINO IR (*.xml + *.bin), "
            "a Hugging Face folder (config.json + *.safetensors / pytorch_model.bin, or model_index.json) "
            "or a faster-whisper/CTranslate2 Whisper folder (model.bin + config.json + tokenizer.json)"
        )
    if (folder / "model_index.json").is_file():
        detect_kind(folder)  # a pipeline the engine cannot build is refused before a long export
    work = Path(tempfile.mkdtemp(prefix="ovbatch-import-"))
    try:
        hf = folder
        source_type = "huggingface"
        with _quiet_exporters():
            if is_ct2:
                hf, source_type = work / "hf", "ctranslate2-whisper"
                ct2.rebuild_hf_whisper(folder, hf)
            ir = work / "ir"
            _export_hf(hf, ir, task)
        if not _ir_pairs(ir):
            raise CorruptModelError(f"{folder}: export produced no OpenVINO model")
        source = {"type": source_type, "path": str(folder), "task": task or infer_task(hf)}
        yield PreparedModel(ir, source, detect_kind(ir), detect_precision(ir))
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def _prepare_single_file(path: Path, task: str | None) -> Iterator[PreparedModel]:
    """An SD 1.x single-file checkpoint: converted to a diffusers folder, exported, the copy deleted at once."""
    from ovbatch.registry.sd import single_file

    work = Path(tempfile.mkdtemp(prefix="ovbatch-import-"))
    try:
        hf, ir = work / "hf", work / "ir"
        single_file.convert_to_diffusers(path, hf)
        with _quiet_exporters():
            _export_hf(hf, ir, task or "text-to-image")
        shutil.rmtree(hf)  # plaintext weights: gone before encryption starts
        if not _ir_pairs(ir):
            raise CorruptModelError(f"{path}: export produced no OpenVINO model")
        source = {"type": "sd1-single-file", "path": str(path), "task": task or "text-to-image"}
        yield PreparedModel(ir, source, detect_kind(ir), detect_precision(ir))
    finally:
        shutil.rmtree(work, ignore_errors=True)
