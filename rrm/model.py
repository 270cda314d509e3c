"""Load a judge model and its processor.

Accepted sources (a hub id or a local directory):
- a full Qwen2.5-Omni checkpoint (thinker + talker + token2wav, maybe sharded with
  an index, as released and as ms-swift merges one): only the thinker is built,
  and only its tensors are read from the files;
- a thinker-only checkpoint;
- a PEFT LoRA adapter directory: its base comes from adapter_config.json. An
  ms-swift adapter (trained on the full model: `thinker.` names of transformers
  4.5x, a regex target_modules) is renamed onto the thinker; an adapter whose base
  is another adapter has that one merged in first.

A checkpoint may carry `rrm_judge.json` beside its weights, recording the prompt
format, rubric and media bounds it was trained with; the judge uses them unless
told otherwise. Checkpoints without it are taken for released Omni-RRM ones and
judged with the release profile (rrm.release).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelLoadError, first_line
from .quantization import TORCHAO, load_kwargs, pick

log = logging.getLogger(__name__)

DEFAULT_MODEL = "Omni-RRM/Omni-RRM-7B"
JUDGE_CONFIG_FILE = "rrm_judge.json"
_FULL, _THINKER = "qwen2_5_omni", "qwen2_5_omni_thinker"


@dataclass
class LoadedModel:
    model: object
    processor: object
    name: str
    adapter: str | None
    quantization: str
    device: str
    judge_config: dict  # {"prompt_format": ..., "rubric": ...} recorded beside the weights, or {}

    def describe(self) -> str:
        parts = [self.name]
        if self.adapter:
            parts.append(f"adapter {self.adapter}")
        parts += [self.quantization, self.device]
        return " · ".join(parts)


def resolve(source: str) -> Path:
    """A local directory for a hub id or path; one clear error when it cannot be had."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ModelLoadError(f"{source} is a file; --model takes a checkpoint directory or a hub id")
    if source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise ModelLoadError(f"model directory {source} does not exist")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(source, local_files_only=True))
    except Exception:
        pass
    try:
        return Path(snapshot_download(source))
    except Exception as e:
        reason = first_line(e, 160)
        raise ModelLoadError(
            f"cannot get {source} from the Hugging Face hub and it is not cached ({reason}); "
            f"pass --model DIR with a downloaded checkpoint or adapter "
            f"(python -m rrm.testing make-tiny DIR makes a tiny one for a smoke run)"
        ) from None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"cannot read {path}: {e}") from None


def load_thinker(path: Path, quantization: str, device: str):
    from transformers import Qwen2_5OmniConfig, Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration

    config_file = path / "config.json"
    if not config_file.exists():
        raise ModelLoadError(f"{path} has no config.json: not a model checkpoint or LoRA adapter")
    model_type = _read_json(config_file).get("model_type")
    if model_type == _FULL:
        # Build only the thinker; its loader strips the 'thinker.' prefix and never
        # materialises the talker's tensors (they are unexpected keys, skipped).
        config = Qwen2_5OmniConfig.from_pretrained(path).thinker_config
    elif model_type == _THINKER:
        config = Qwen2_5OmniThinkerConfig.from_pretrained(path)
    else:
        raise ModelLoadError(f"{path} holds a {model_type!r} model; the judge needs a Qwen2.5-Omni checkpoint")
    try:
        model = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
            path, config=config, **load_kwargs(quantization, device, config)
        )
    except ModelLoadError:
        raise
    except Exception as e:
        raise ModelLoadError(f"cannot load the model in {path}: {first_line(e)}") from None
    return model.eval()


def load_processor(*dirs: Path):
    from transformers import AutoProcessor

    for d in dirs:
        if (d / "preprocessor_config.json").exists() or (d / "processor_config.json").exists():
            try:
                return AutoProcessor.from_pretrained(d)
            except Exception as e:
                raise ModelLoadError(f"cannot load the processor in {d}: {first_line(e)}") from None
    raise ModelLoadError(f"no processor files (preprocessor_config.json) in {' or '.join(map(str, dirs))}")


def default_device() -> str:
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


@dataclass
class Checkpoint:
    """Where a judge's files are: its weights (the base, for an adapter), its adapter, its processor, its record.

    `merged_first` are adapters under `adapter` (a judge trained on from another adapter), base first: they are
    merged into the weights before `adapter` is attached.
    """

    weights: Path
    adapter: Path | None
    name: str  # the base model's id or path
    judge_config: dict
    merged_first: tuple[Path, ...] = ()

    @property
    def processor_dirs(self) -> tuple[Path, ...]:
        return (*([self.adapter] if self.adapter else []), *reversed(self.merged_first), self.weights)


_MAX_ADAPTER_DEPTH = 4


BaseCheck = Callable[[str, Path], bool]  # (the base as named, where it resolves) -> may it be loaded?


def _adapter_base(adapter: Path, allow_base: BaseCheck | None = None) -> tuple[Path, str]:
    """(directory, name) of an adapter's base.

    adapter_config.json names it; ms-swift records the authors' own path there, so when that is not on this
    machine the model named in ms-swift's args.json is tried, then the path's last two parts as a hub id
    (".../Qwen/Qwen2.5-Omni-7B" -> "Qwen/Qwen2.5-Omni-7B"). A server passes `allow_base`: a base it does not
    serve is refused, whatever the adapter names.
    """
    named = _read_json(adapter / "adapter_config.json").get("base_model_name_or_path")
    if not named:
        raise ModelLoadError(f"{adapter}/adapter_config.json names no base_model_name_or_path")
    candidates = [named]
    if (adapter / "args.json").exists():
        candidates.append(_read_json(adapter / "args.json").get("model"))
    parts = Path(named).parts
    if Path(named).is_absolute() and len(parts) > 2:
        candidates.append(f"{parts[-2]}/{parts[-1]}")
    tried = []
    for candidate in dict.fromkeys(c for c in candidates if isinstance(c, str) and c):
        try:
            path = resolve(candidate)
        except ModelLoadError as e:
            tried.append(str(e))
            continue
        if allow_base is None or allow_base(candidate, path):
            return path, candidate
        raise ModelLoadError(f"the adapter {adapter.name} names its base {candidate}, which this server does not "
                             f"serve (it serves the model it was started with, the checkpoints it lists, hub ids)")
    raise ModelLoadError(f"the base of the adapter {adapter} cannot be found ({'; '.join(tried)}); "
                         f"set base_model_name_or_path in its adapter_config.json to the base checkpoint")


def locate(source: str, allow_base: BaseCheck | None = None) -> Checkpoint:
    """Resolve a full checkpoint, thinker checkpoint or LoRA adapter (hub id or directory) to its files."""
    path, name = resolve(source), str(source)
    adapters = []  # top first
    while (path / "adapter_config.json").exists():
        if len(adapters) == _MAX_ADAPTER_DEPTH:
            raise ModelLoadError(f"{source}: adapters stacked more than {_MAX_ADAPTER_DEPTH} deep")
        _adapter_file(path)
        adapters.append(path)
        path, name = _adapter_base(path, allow_base)
    judge_config = {}
    for d in (path, *reversed(adapters)):  # the record nearest the top wins
        if (d / JUDGE_CONFIG_FILE).exists():
            judge_config = _read_json(d / JUDGE_CONFIG_FILE)
    return Checkpoint(path, adapters[0] if adapters else None, name, judge_config, tuple(reversed(adapters[1:])))


def load_model(source: str = DEFAULT_MODEL, quantization: str = "auto", device: str | None = None,
               merge_adapter: bool = False, allow_base: BaseCheck | None = None) -> LoadedModel:
    """Load a judge: full checkpoint, thinker checkpoint or LoRA adapter; see the module doc."""
    device = device or default_device()
    quantization = pick(quantization, device)
    checkpoint = locate(source, allow_base)
    model = with_adapters(load_thinker(checkpoint.weights, quantization, device), checkpoint, quantization,
                           merge_adapter)
    processor = load_processor(*checkpoint.processor_dirs)
    adapter = str(source) if checkpoint.adapter else None
    log.info("loaded %s (%s, %s)", checkpoint.name, quantization, device)
    return LoadedModel(model, processor, checkpoint.name, adapter, quantization, device, checkpoint.judge_config)


def with_adapters(model, checkpoint: Checkpoint, quantization: str, merge: bool = False, trainable: bool = False):
    """The thinker with the checkpoint's adapters: those underneath merged in, the top one attached (or merged)."""
    if checkpoint.merged_first and quantization != "none":
        raise ModelLoadError(f"{checkpoint.adapter} was trained on from another adapter, which is merged into the "
                             f"base first: load it with --quantization none")
    for inner in checkpoint.merged_first:
        model = attach_adapter(model, inner, True, quantization)
    if checkpoint.adapter:
        model = attach_adapter(model, checkpoint.adapter, merge, quantization, trainable)
    return model


def is_omni(source: str) -> bool:
    """Whether a checkpoint (or the base of an adapter) is a Qwen2.5-Omni model, which the judge path loads."""
    config = locate(source).weights / "config.json"
    return config.exists() and _read_json(config).get("model_type") in (_FULL, _THINKER)


def load_chat_model(source: str, quantization: str = "auto", device: str | None = None) -> LoadedModel:
    """Any other chat model, to write answers: an image-text-to-text VLM, or a text-only language model.

    The processor of a VLM, or the tokenizer of a text model, is LoadedModel.processor.
    """
    from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor,
                              AutoTokenizer)
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    device = device or default_device()
    quantization = pick(quantization, device)
    path = resolve(source)
    if not (path / "config.json").exists():
        raise ModelLoadError(f"{path} has no config.json: not a model checkpoint")
    vision = _read_json(path / "config.json").get("model_type") in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
    try:
        model_class, processor_class = ((AutoModelForImageTextToText, AutoProcessor) if vision
                                        else (AutoModelForCausalLM, AutoTokenizer))
        config = AutoConfig.from_pretrained(path) if quantization in TORCHAO else None
        model = model_class.from_pretrained(path, **load_kwargs(quantization, device, config))
        processor = processor_class.from_pretrained(path)
    except ModelLoadError:
        raise
    except Exception as e:
        raise ModelLoadError(f"cannot load the chat model in {path}: {first_line(e)}") from None
    log.info("loaded %s (%s, %s)", source, quantization, device)
    return LoadedModel(model.eval(), processor, str(source), None, quantization, device, {})


def thinker_name(name: str) -> str:
    """A module or tensor name of a released checkpoint (transformers 4.5x, maybe of the full model under
    `thinker.`) as this thinker names it; names already in this form are returned unchanged."""
    name = name.removeprefix("thinker.")
    for old, new in (("model.", "model.language_model."), ("visual.", "model.visual."),
                     ("audio_tower.", "model.audio_tower.")):
        if name.startswith(old) and not name.startswith(("model.language_model.", "model.visual.",
                                                          "model.audio_tower.")):
            return new + name[len(old):]
    return name


ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")  # PEFT's weight files, either


def _adapter_file(path: Path) -> Path:
    """The adapter's weights file; a folder holding only adapter_config.json is refused before anything loads."""
    for name in ADAPTER_WEIGHTS:
        if (path / name).is_file():
            return path / name
    raise ModelLoadError(f"the adapter folder {path} has no weights: adapter_model.safetensors (or .bin) "
                         f"is missing beside its adapter_config.json")


def _adapter_weights(path: Path) -> dict:
    file = _adapter_file(path)
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(file)
    import torch

    return torch.load(file, map_location="cpu", weights_only=True)


def _renamed_adapter(path: Path):
    """(LoraConfig, weights) for an adapter whose names this thinker does not use (ms-swift's, on the full
    model, with a regex target_modules over 4.5x names), or None when PEFT can load it as it is.

    The targets become the exact modules the weights belong to, so that a regex written for other names
    cannot miss (PEFT's "Target modules ... not found") or hit modules that carry no weights.
    """
    from peft import LoraConfig

    weights = _adapter_weights(path)
    prefix = "base_model.model."
    renamed = {prefix + thinker_name(k.removeprefix(prefix)): v for k, v in weights.items()}
    if list(renamed) == list(weights):
        return None
    config = _read_json(path / "adapter_config.json")
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise ModelLoadError(f"{path} holds a {config.get('peft_type')} adapter; the judge loads LoRA adapters")
    targets = sorted({k.removeprefix(prefix).split(".lora_")[0] for k in renamed if ".lora_" in k})
    known = {f.name for f in dataclasses.fields(LoraConfig)} - {"peft_type", "target_modules", "auto_mapping"}
    kwargs = {k: v for k, v in config.items() if k in known}
    return LoraConfig(**{**kwargs, "target_modules": targets}), renamed


def attach_adapter(model, path: Path, merge: bool, quantization: str, trainable: bool = False):
    try:
        from peft import PeftModel, get_peft_model, set_peft_model_state_dict
    except ImportError:
        raise ModelLoadError("loading a LoRA adapter needs peft: pip install peft") from None
    if merge and quantization != "none":
        raise ModelLoadError("merging a LoRA adapter into a quantized base is lossy; use --quantization none")
    try:
        renamed = _renamed_adapter(path)
        if renamed is None:
            model = PeftModel.from_pretrained(model, path, is_trainable=trainable)
        else:
            config, weights = renamed
            config.inference_mode = not trainable
            model = get_peft_model(model, config)
            result = set_peft_model_state_dict(model, weights)
            if result.unexpected_keys:
                raise ModelLoadError(f"the LoRA adapter in {path} has weights for modules this model lacks: "
                                     f"{result.unexpected_keys[0]}")
    except ModelLoadError:
        raise
    except Exception as e:
        raise ModelLoadError(f"cannot load the LoRA adapter in {path}: {first_line(e)}") from None
    if merge:
        return model.merge_and_unload()
    return model if trainable else model.eval()
