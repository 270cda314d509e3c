"""What SFT and GRPO share: the judge arguments, the model and LoRA setup, and saving a checkpoint rrm loads."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from rrm.errors import ModelLoadError
from rrm.media import MediaLimits
from rrm.model import (ADAPTER_WEIGHTS, JUDGE_CONFIG_FILE, attach_adapter, load_processor, load_thinker, locate,
                       resolve, with_adapters)
from rrm.prompts import TemplateFormat, get_format, read_text_file
from rrm.quantization import TORCHAO
from rrm.redact import install_log_redaction
from rrm.release import RELEASE_PROFILE
from rrm.rubric import load_rubric

# LoRA on every linear layer of the language model and on the multimodal projectors
# (vision merger, audio projection); the vision and audio encoders stay frozen.
LORA_TARGETS = (r"model\.language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
                r"|model\.visual\.merger\.mlp\.(0|2)|model\.audio_tower\.proj")
TRAIN_LOG = "train_log.json"


@dataclass
class JudgeTrainingArguments:
    model: str = field(default="Omni-RRM/Omni-RRM-7B",
                       metadata={"help": "base: hub id or local Qwen2.5-Omni checkpoint (full or thinker-only)"})
    data: str = field(default="", metadata={"help": "preference JSONL (or a benchmark file with --data-format)"})
    data_format: str = field(default="preference", metadata={
        "help": "preference, omni-preference (the released rows), trl, swift or llamafactory (other projects' "
                "preference rows: labels for GRPO), or an rrm.eval benchmark name"})
    media_root: str | None = field(default=None, metadata={"help": "media paths are relative to this"})
    prompt_format: str = field(default="rubric-v2", metadata={
        "help": "rubric-v2, or omni-rrm-release to continue a released Omni-RRM as it was trained (or omni-rrm)"})
    prompt_template: str | None = field(default=None, metadata={"help": "your own user prompt (a template file); "
                                                                        "the output schema stays the format's"})
    system_prompt: str | None = field(default=None, metadata={"help": "your own system turn (a text file)"})
    rubric: str | None = field(default=None, metadata={"help": "JSON rubric file (default: the five criteria)"})
    quantization: str = field(default="none", metadata={"help": "none, or 4bit for QLoRA on one 24 GB GPU"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha"})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout"})
    effective_batch_size: int = field(default=96, metadata={"help": "per-device batch x devices x accumulation"})
    image_max_pixels: int = field(default=MediaLimits.image_max_pixels, metadata={"help": "image pixel bound"})
    video_fps: float = field(default=1.0, metadata={"help": "video sampling rate (the paper: 1 fps)"})
    video_max_frames: int = field(default=20, metadata={"help": "at most this many frames per video"})
    video_max_pixels: int = field(default=MediaLimits.video_max_pixels, metadata={"help": "pixels per frame"})
    video_min_pixels: int = field(default=0, metadata={
        "help": "frames are resized to at least this many pixels (the release's video decoder: 100352)"})
    audio_max_seconds: float = field(default=MediaLimits.audio_max_seconds, metadata={"help": "audio cut"})
    video_audio: str = field(default="auto", metadata={
        "help": "hear a video's own sound track: auto or on (where the file has one), off (frames only; recorded, "
                "so the trained judge is run the same way)"})
    merge: bool = field(default=False, metadata={"help": "also save a merged full model in OUTPUT/merged"})
    eval_data: str = field(default="", metadata={
        "help": "held-out pairs, read as --data is, evaluated at --eval_strategy (SFT: eval_loss; GRPO: every reward "
                "of rollouts on them, eval_rewards/NAME/mean, and the greedy judgments' eval_judge_accuracy); "
                "--load_best_model_at_end with --metric_for_best_model then saves the best checkpoint, not the last "
                "(a late loss spike or a drift to one answer); with --eval_on_start too, the start competes"})
    init_adapter: str | None = field(default=None, metadata={
        "help": "a LoRA adapter to go on training (an SFT judge of ours, or ms-swift's), instead of a fresh one"})

    def limits(self) -> MediaLimits:
        return MediaLimits(image_max_pixels=self.image_max_pixels, video_fps=self.video_fps,
                           video_max_frames=self.video_max_frames, video_max_pixels=self.video_max_pixels,
                           video_min_pixels=self.video_min_pixels, audio_max_seconds=self.audio_max_seconds,
                           video_audio=self.video_audio)

    def prompt(self):
        fmt = get_format(self.prompt_format)
        if self.prompt_template:
            fmt = TemplateFormat.from_file(self.prompt_template, fmt)
        if self.system_prompt:
            fmt = fmt.with_system(read_text_file(self.system_prompt, "system prompt"))
        return fmt, load_rubric(self.rubric)


def evaluation_set(args: JudgeTrainingArguments, config, build):
    """The rows of --eval_data, built by `build(args, seed, path)` as the training rows are; None without it."""
    if args.eval_data:
        return build(args, config.seed, args.eval_data)
    if config.eval_strategy != "no" or config.load_best_model_at_end:
        raise ValueError("--eval_strategy and --load_best_model_at_end need --eval_data (held-out pairs)")
    return None


def accumulation_steps(effective: int, per_device: int, world_size: int) -> int:
    return max(1, -(-effective // (per_device * world_size)))  # -(-a // b): a / b rounded up


def load_base(source: str, quantization: str):
    """(thinker, processor) to train, on this process's device (a 4-bit base is prepared for QLoRA).

    The source may be a LoRA adapter (a released Omni-RRM, a judge of your own): it is merged into its base, and
    the new adapter is saved on top of it (loading that one merges the adapters beneath it first).
    """
    from accelerate import PartialState

    if quantization in TORCHAO:  # transformers trains torchao weights at 8 bits only (its quantizer says so)
        raise ModelLoadError(f"training on an {quantization} (torchao) base is not supported: use --quantization "
                             "4bit for QLoRA on an NF4 base, and judge with the trained adapter on int4")
    device = str(PartialState().device)
    checkpoint = locate(source)
    model = with_adapters(load_thinker(checkpoint.weights, quantization, device), checkpoint, quantization,
                          merge=True)
    if quantization != "none":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model.config.use_cache = False
    return model, load_processor(*checkpoint.processor_dirs)


def load_trainable(args: JudgeTrainingArguments):
    """(model, processor, peft_config) to train: a fresh LoRA on the base, or `init_adapter` trained on further."""
    model, processor = load_base(args.model, args.quantization)
    if not args.init_adapter:
        return model, processor, lora_config(args)
    return attach_adapter(model, resolve(args.init_adapter), False, args.quantization, trainable=True), processor, None


def share_every_gradient_across_ranks(model, config) -> None:
    """In a multi-process run, give every trainable weight a gradient in every step, in one order on all ranks.

    A rank whose batch holds no audio (or no image, no video) leaves that encoder's LoRA weights without a
    gradient while another rank's batch gives them one. DeepSpeed ZeRO-2 reduces gradients in buckets filled
    in the order they become ready, so such ranks exchange mismatched buckets: a crash, or gradients summed
    with the wrong weights. Adding 0 x the sum of every trainable weight to the input embeddings makes each
    weight's gradient (zero where its encoder did not run) become ready last and in the same order on every
    rank; DDP then no longer needs to look for unused parameters.
    """
    if config.world_size < 2:
        return
    import torch

    trainable = []

    def add_zero(module, inputs, output):
        if not torch.is_grad_enabled():
            return output
        if not trainable:  # LoRA weights exist once the trainer has wrapped the model
            trainable.extend(p for p in model.parameters() if p.requires_grad)
        zero = torch.stack([p.sum().float() for p in trainable]).sum() * 0
        return output + zero.to(output.dtype)

    model.get_input_embeddings().register_forward_hook(add_zero)
    config.ddp_find_unused_parameters = False


def lora_config(args: JudgeTrainingArguments):
    from peft import LoraConfig

    return LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                      target_modules=LORA_TARGETS, task_type="CAUSAL_LM")


def save_judge(model, processor, out: Path, base: str, args: JudgeTrainingArguments) -> None:
    """Save the adapter so that `rrm` and `app.py --model OUT` load it and speak its prompt format."""
    fmt, rubric = args.prompt()
    model.peft_config["default"].base_model_name_or_path = base
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / JUDGE_CONFIG_FILE).write_text(json.dumps(judge_record(fmt, rubric, args), indent=2))
    if args.merge:
        from rrm.model import load_model

        merged = load_model(str(out), quantization="none", device="cpu", merge_adapter=True)
        target = out / "merged"
        merged.model.save_pretrained(target)
        processor.save_pretrained(target)
        (target / JUDGE_CONFIG_FILE).write_text((out / JUDGE_CONFIG_FILE).read_text())


def judge_record(fmt, rubric, args: JudgeTrainingArguments) -> dict:
    """What rrm_judge.json records, so that the trained judge is prompted and sees media as it should.

    A judge trained in the release's format records only that profile: like the release's own checkpoints it is
    then judged with the release's evaluation settings (default system turn, larger images, 2 fps), whatever
    training used. Any other records its format, template, system turn and the media bounds it was trained on.
    """
    if fmt.name == RELEASE_PROFILE:
        return {"profile": RELEASE_PROFILE, "prompt_format": fmt.name, "rubric": rubric.to_dict()}
    record = {"prompt_format": args.prompt_format, "rubric": rubric.to_dict(),
              "media_limits": dataclasses.asdict(args.limits())}
    if isinstance(fmt, TemplateFormat):
        record["prompt_template"] = fmt.text
    if fmt.system_override is not None:
        record["system_prompt"] = fmt.system
    return record


def parse_recipe(arguments_class, config_class, argv: list[str] | None):
    """(judge arguments, TRL config) from a YAML recipe (--config) and command-line overrides.

    Precision and accumulation are settled in the arguments, and the config is built once more with them:
    DeepSpeed (ZeRO-2 under `accelerate launch`) copies both from the config as it is built.
    """
    import sys

    from trl import TrlParser

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = TrlParser((arguments_class, config_class))
    args, config = parser.parse_args_and_config(argv)
    # One report, not one per process: the other ranks log errors only.
    logging.basicConfig(level=logging.WARNING if config.process_index == 0 else logging.ERROR,
                        format="%(levelname)s: %(message)s")
    install_log_redaction()
    settled = ["--gradient_accumulation_steps", str(accumulation_steps(
        args.effective_batch_size, config.per_device_train_batch_size, config.world_size))]
    if config.bf16 and (config.use_cpu or not cuda_available()):
        # TRL turns bf16 on by default; on a CPU it only slows training and blurs small gradients.
        logging.getLogger(__name__).warning("no CUDA device: training in float32 (bf16 off)")
        settled += ["--bf16", "false"]
    args, config = parser.parse_args_and_config([*argv, *settled])
    config.remove_unused_columns = False  # the judge's own columns reach the collator and the rewards
    actual = config.per_device_train_batch_size * config.world_size * config.gradient_accumulation_steps
    if actual != args.effective_batch_size:
        logging.getLogger(__name__).warning(
            "effective batch %d (%d per device x %d devices x %d accumulation steps), not the %d asked",
            actual, config.per_device_train_batch_size, config.world_size, config.gradient_accumulation_steps,
            args.effective_batch_size)
    return args, config


def train_and_save(trainer, processor, args: JudgeTrainingArguments, config) -> int:
    """Train (resuming when asked), then save the adapter as a judge checkpoint, with every logged step
    (TRAIN_LOG: the loss, and for GRPO each reward, KL, completion length and the zero-spread share)."""
    from .card import write_card

    start = starting_weights(trainer.model) if config.eval_on_start and config.load_best_model_at_end else None
    trainer.train(resume_from_checkpoint=resume_checkpoint(config, trainer.accelerator.is_main_process))
    if start is not None:
        keep_start_if_best(trainer, start)
    if trainer.accelerator.is_main_process:
        out = Path(config.output_dir)
        save_judge(trainer.model, processor, out, args.model, args)
        (out / TRAIN_LOG).write_text(json.dumps(trainer.state.log_history, indent=1))
        write_card(out, args, config, trainer.train_dataset, "GRPO" if hasattr(config, "num_generations") else "SFT")
    return 0


def starting_weights(model) -> dict:
    """A copy, on the CPU, of the weights training will change (a LoRA adapter's: small)."""
    return {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters() if p.requires_grad}


def eval_key(metric: str) -> str:
    """The name a held-out metric is logged under (`eval_` and its name), for the metric named with or without it."""
    return metric if metric.startswith("eval_") else f"eval_{metric}"


def keep_start_if_best(trainer, start: dict) -> None:
    """With --eval_on_start and --load_best_model_at_end, the starting weights compete with the checkpoints: when
    no checkpoint bettered the start's held-out metric (a tie keeps the start), the start is put back and saved:
    a run that only made the judge worse on its held-out pairs leaves it as it was."""
    import torch

    key = eval_key(trainer.args.metric_for_best_model)
    at_start = next((e[key] for e in trainer.state.log_history if e.get("step") == 0 and key in e), None)
    best = trainer.state.best_metric
    if at_start is None or best is None or (at_start < best if trainer.args.greater_is_better else at_start > best):
        return
    params = dict(trainer.model.named_parameters())
    with torch.no_grad():
        for name, value in start.items():
            params[name].copy_(value)
    logging.getLogger(__name__).warning("kept the starting weights: no checkpoint bettered their held-out %s "
                                        "(%g; the best checkpoint's %g)", key.removeprefix("eval_"), at_start, best)


_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_WEIGHTS = (*ADAPTER_WEIGHTS, "model.safetensors", "pytorch_model.bin")


def incomplete(checkpoint: Path) -> str | None:
    """Why a checkpoint cannot be resumed from, or None. The trainer writes trainer_state.json last, so a run
    killed while saving leaves it missing or cut off."""
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text())
    except FileNotFoundError:
        return "no trainer_state.json"
    except (OSError, ValueError):
        return "its trainer_state.json is cut off"
    if not isinstance(state, dict) or "global_step" not in state:
        return "its trainer_state.json holds no step"
    if not any((checkpoint / name).is_file() for name in _WEIGHTS):
        return "no weights"
    return None


def resume_checkpoint(config, main_process: bool = True) -> str | bool | None:
    """`--resume_from_checkpoint auto`: the newest complete checkpoint in output_dir, if any.

    A newer incomplete one (a run killed while saving it) is said and set aside as checkpoint-N.incomplete, so
    that it is neither resumed from nor counted among the checkpoints kept.
    """
    wanted = config.resume_from_checkpoint
    if wanted != "auto":
        return wanted
    out = Path(config.output_dir)
    found = sorted(((int(m.group(1)), p) for p in (out.iterdir() if out.is_dir() else ())
                    if p.is_dir() and (m := _CHECKPOINT.match(p.name))), reverse=True)
    for _, checkpoint in found:
        why = incomplete(checkpoint)
        if why is None:
            return str(checkpoint)
        if main_process:
            aside = checkpoint.with_name(f"{checkpoint.name}.incomplete")
            n = 1
            while aside.exists():
                n += 1
                aside = checkpoint.with_name(f"{checkpoint.name}.incomplete-{n}")
            checkpoint.rename(aside)
            logging.getLogger(__name__).warning("%s is incomplete (%s): set aside as %s; resuming from an earlier "
                                                "checkpoint", checkpoint, why, aside.name)
    return None


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
