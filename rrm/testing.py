"""Tiny random Qwen2.5-Omni models built offline, for tests and smoke runs.

Nothing here downloads anything: the tokenizer is a byte-level BPE trained in
memory on a short inline corpus, and the model weights are random. The model
speaks junk, but it exercises every real code path: the processor, the chat
template, the vision and audio towers, multimodal rope, generation, saving and
loading, LoRA and quantization.

    python -m rrm.testing make-tiny DIR          # thinker-only checkpoint
    python -m rrm.testing make-tiny DIR --full   # thinker + talker, as released
    python -m rrm.testing make-tiny DIR --parrot # taught to judge the bundled examples (under a minute)
    python -m rrm.testing make-tiny DIR --chat vl|text  # a tiny Qwen2.5-VL or text LM (a synthesis generator)
    python -m rrm.testing make-tiny DIR --released swift-lora|swift-merged|thinker  # in a layout the release wrote
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SPECIAL_TOKENS = {
    "eos_token": "<|endoftext|>",
    "im_start": "<|im_start|>",
    "im_end": "<|im_end|>",
    "audio_token": "<|AUDIO|>",
    "audio_bos_token": "<|audio_bos|>",
    "audio_eos_token": "<|audio_eos|>",
    "vision_bos_token": "<|vision_bos|>",
    "vision_eos_token": "<|vision_eos|>",
    "vision_pad_token": "<|vision_pad|>",
    "image_token": "<|IMAGE|>",
    "video_token": "<|VIDEO|>",
}

# ChatML with media placeholders. It branches on content['type'] only: rows that
# come from `datasets` carry every key (missing ones as None), so a test such as
# "'audio' in content" would miscount media.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "<|im_start|>{{ message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}<|vision_bos|><|IMAGE|><|vision_eos|>"
    "{%- elif part['type'] == 'video' -%}<|vision_bos|><|VIDEO|><|vision_eos|>"
    "{%- elif part['type'] == 'audio' -%}<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "<|im_end|>{{ '\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|im_start|>{{ 'assistant\\n' }}{%- endif -%}"
)

_CORPUS = [
    "You are an expert judge of answers about images, videos and audio clips.",
    "Compare answer A with answer B on fluency, coherence, relevance, accuracy, completeness, "
    "reasoning quality, safety and ethics. Score each from 0 to 10.",
    '{"score_A": 7, "score_B": 4, "better": "A", "reasoning": "<think>Part 1: fluent.</think>", '
    '"final_verdict": "<answer>[[A]]</answer>"}',
    "The image shows a red circle on a white background. The video shows a ball moving left.",
    "The audio clip contains speech: a person says hello. Answer B invents a dog barking.",
    "Question: what is shown? Answer A: a cat. Answer B: a dog. Both are tie or equal.",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,;:!?'\"()[]{}<>|/\\-_=+*&^%$#@~`",
]

VOCAB_SIZE = 384  # BPE merges; the special tokens come on top
TEXT_HIDDEN = 64


def build_tokenizer(vocab_size: int = VOCAB_SIZE, corpus: list[str] = _CORPUS):
    """A byte-level BPE with the Omni special tokens, wrapped as a Qwen2 tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer=trainer)
    state = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    named = {k: v for k, v in SPECIAL_TOKENS.items() if k not in ("eos_token", "im_start", "im_end")}
    tokenizer = Qwen2Tokenizer(
        vocab=state["vocab"],
        merges=merges,
        eos_token=SPECIAL_TOKENS["eos_token"],
        pad_token=SPECIAL_TOKENS["eos_token"],
        extra_special_tokens=named,
    )
    tokenizer.add_special_tokens(
        {"additional_special_tokens": [SPECIAL_TOKENS["im_start"], SPECIAL_TOKENS["im_end"]]},
        replace_extra_special_tokens=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_processor(tokenizer=None):
    """The real Qwen2.5-Omni processor with small pixel bounds (a handful of tokens per image)."""
    from transformers import (
        Qwen2_5OmniProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
        WhisperFeatureExtractor,
    )

    tokenizer = tokenizer or build_tokenizer()
    size = {"shortest_edge": 28 * 28 * 4, "longest_edge": 28 * 28 * 16}
    return Qwen2_5OmniProcessor(
        image_processor=Qwen2VLImageProcessor(size=size),
        video_processor=Qwen2VLVideoProcessor(size=size),
        feature_extractor=WhisperFeatureExtractor(feature_size=128),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )


def _token_ids(tokenizer) -> dict[str, int]:
    return {k: tokenizer.convert_tokens_to_ids(v) for k, v in SPECIAL_TOKENS.items()}


# The thinkers of the released Qwen2.5-Omni models (Omni-RRM's bases), shape only: random
# weights at full size measure speed and memory as well as real ones do.
_ENCODERS = {  # the same vision and audio towers in both sizes
    "vision": {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
               "fullatt_block_indexes": [7, 15, 23, 31]},
    "audio": {"encoder_layers": 32, "encoder_attention_heads": 20, "encoder_ffn_dim": 5120, "d_model": 1280},
}
FULL_SIZES = {
    "7b": {"text": {"vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                    "num_attention_heads": 28, "num_key_value_heads": 4}, **_ENCODERS},
    "3b": {"text": {"vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
                    "num_attention_heads": 16, "num_key_value_heads": 2}, **_ENCODERS},
}
_TINY = {
    "text": {"hidden_size": TEXT_HIDDEN, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2},
    "vision": {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "fullatt_block_indexes": [1]},
    "audio": {"encoder_layers": 1, "encoder_attention_heads": 2, "encoder_ffn_dim": 64, "d_model": 32},
}
# A language model of Qwen2.5-0.5B's shape on the tiny towers: big enough on CPU for quantized kernels to matter
# (rrm.bench --sizes 0.5b), small enough to build there. Not a released size.
BENCH_SIZES = {**FULL_SIZES, "0.5b": {
    "text": {"vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
             "num_attention_heads": 14, "num_key_value_heads": 2},
    "vision": _TINY["vision"], "audio": _TINY["audio"]}}


def thinker_config(tokenizer, size: str = "tiny"):
    """The thinker's config: tiny (the test fixture), a released size ('7b', '3b') or a bench size ('0.5b'),
    with this tokenizer's special ids."""
    from transformers import Qwen2_5OmniThinkerConfig

    ids = _token_ids(tokenizer)
    shape = _TINY if size == "tiny" else BENCH_SIZES[size]
    hidden = shape["text"]["hidden_size"]
    head_dim = hidden // shape["text"]["num_attention_heads"]
    # Temporal, height and width halves of the head: Qwen2.5-Omni's 16/24/24 of 128, in proportion elsewhere.
    mrope = [head_dim // 8, head_dim * 3 // 16, head_dim * 3 // 16]
    assert sum(mrope) * 2 == head_dim
    return Qwen2_5OmniThinkerConfig(
        text_config={
            "vocab_size": len(tokenizer),
            **shape["text"],
            "max_position_embeddings": 32768,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0 if size == "tiny" else 1000000.0,
                                "mrope_section": mrope},
            "eos_token_id": ids["eos_token"],
            "pad_token_id": ids["eos_token"],
            "tie_word_embeddings": False,
        },
        vision_config={**shape["vision"], "out_hidden_size": hidden},
        audio_config={**shape["audio"], "output_dim": hidden, "num_mel_bins": 128},
        audio_token_index=ids["audio_token"],
        image_token_index=ids["image_token"],
        video_token_index=ids["video_token"],
        audio_start_token_id=ids["audio_bos_token"],
        audio_end_token_id=ids["audio_eos_token"],
        vision_start_token_id=ids["vision_bos_token"],
        vision_end_token_id=ids["vision_eos_token"],
        user_token_id=tokenizer.convert_tokens_to_ids("user") or 0,
    )


def full_config(tokenizer):
    """Thinker + a tiny talker and token2wav, shaped like the released checkpoints."""
    from transformers import Qwen2_5OmniConfig

    thinker = thinker_config(tokenizer)
    ids = _token_ids(tokenizer)
    talker = {
        "vocab_size": 96,
        "embedding_size": TEXT_HIDDEN,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 16,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        "audio_token_index": ids["audio_token"],
        "image_token_index": ids["image_token"],
        "video_token_index": ids["video_token"],
        "vision_start_token_id": ids["vision_bos_token"],
        "vision_end_token_id": ids["vision_eos_token"],
        "audio_start_token_id": ids["audio_bos_token"],
        "audio_end_token_id": ids["audio_eos_token"],
        "tts_text_start_token_id": 90,
        "tts_text_end_token_id": 91,
        "tts_text_pad_token_id": 89,
        "tts_codec_start_token_id": 93,
        "tts_codec_end_token_id": 94,
        "tts_codec_pad_token_id": 92,
        "tts_codec_mask_token_id": 95,
    }
    token2wav = {
        "dit_config": {
            "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "head_dim": 16,
            "emb_dim": 16, "num_embeds": 96, "enc_emb_dim": 16, "enc_dim": 16,
            "enc_channels": [16, 16, 16, 16, 48], "enc_attention_channels": 8, "enc_se_channels": 8,
            "look_ahead_layers": [0], "look_backward_layers": [0],
        },
        "bigvgan_config": {"upsample_initial_channel": 32},
    }
    return Qwen2_5OmniConfig(
        thinker_config=thinker.to_dict(), talker_config=talker, token2wav_config=token2wav
    )


def build_thinker(tokenizer=None, seed: int = 0):
    """(model, processor): a ~240K-parameter random thinker in float32 and its processor."""
    import torch
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    processor = build_processor(tokenizer)
    torch.manual_seed(seed)
    model = Qwen2_5OmniThinkerForConditionalGeneration(thinker_config(processor.tokenizer))
    with torch.no_grad():
        # At the default init (std 0.02, 64 wide) the output head caps logits near 1.3: a LoRA could
        # never make the model confident, and the learning self-check could not learn.
        model.lm_head.weight.mul_(10)
        # At their default init the audio tower's convolutions are small next to its fixed positional
        # embeddings: every clip came out nearly the same (a 300 Hz and a 1200 Hz tone differed by 2.5 %).
        model.model.audio_tower.conv1.weight.mul_(10)
        model.model.audio_tower.conv2.weight.mul_(10)
    return model.eval(), processor


def make_tiny(out_dir: str | Path, full: bool = False, seed: int = 0, judge_config: dict | None = None,
              max_shard_size: str = "5GB") -> Path:
    """Save a tiny checkpoint (thinker-only, or full thinker + talker) with its processor.

    `judge_config`, when given, is written as the judge's sidecar file (prompt
    format and rubric the checkpoint was trained with).
    """
    import torch
    from transformers import Qwen2_5OmniForConditionalGeneration

    from .model import JUDGE_CONFIG_FILE

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, processor = build_thinker(seed=seed)
    if full:
        torch.manual_seed(seed)
        full_model = Qwen2_5OmniForConditionalGeneration(full_config(processor.tokenizer))
        full_model.thinker.load_state_dict(model.state_dict())
        full_model.save_pretrained(out, max_shard_size=max_shard_size)
        # The released checkpoints ship speaker embeddings; the loader of the full
        # model requires the file even though the judge never speaks.
        torch.save({"Chelsie": {"cond": torch.zeros(1, 16), "ref_mel": torch.zeros(1, 8, 80)}}, out / "spk_dict.pt")
    else:
        model.save_pretrained(out, max_shard_size=max_shard_size)
    processor.save_pretrained(out)
    if judge_config is not None:
        (out / JUDGE_CONFIG_FILE).write_text(json.dumps(judge_config, indent=2))
    return out


# ---------------------------------------------------------------------------- the release's layouts
# The release trained with ms-swift on transformers 4.5x, on the full Qwen2.5-Omni model: its checkpoints name
# modules as that version did (thinker.model.layers..., thinker.visual..., thinker.audio_tower...), record 4.5x
# configs (rope_scaling, torch_dtype), shard large files with an index, and an ms-swift LoRA adapter writes its
# target_modules as one regular expression over those names, with ms-swift's own keys in adapter_config.json.
RELEASED_LAYOUTS = ("swift-lora", "swift-merged", "thinker")
SWIFT_TARGETS = (r"^(thinker.model.*\.(down_proj|gate_proj|k_proj|o_proj|q_proj|up_proj|v_proj)"
                 r"|thinker.audio_tower.proj|thinker.visual.merger.*\.(0|2))$")


def _legacy_config(node):
    """A config as transformers 4.5x wrote it: rope_scaling and rope_theta instead of rope_parameters, torch_dtype."""
    if isinstance(node, list):
        return [_legacy_config(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "rope_parameters" and isinstance(value, dict):
            rope = dict(value)
            out["rope_theta"] = rope.pop("rope_theta", 10000.0)
            out["rope_scaling"] = {**rope, "type": rope.get("rope_type", "default")}
        elif key == "dtype":
            out["torch_dtype"] = value
        else:
            out[key] = _legacy_config(value)
    if "model_type" in out and "architectures" in node:
        out["transformers_version"] = "4.52.3"
    return out


def _write_legacy_config(out: Path) -> None:
    path = out / "config.json"
    path.write_text(json.dumps(_legacy_config(json.loads(path.read_text())), indent=2))


def make_adapter(out_dir: str | Path, base: str | Path, seed: int = 0) -> Path:
    """A LoRA adapter on `base` with random, non-zero weights (so that it changes what the model writes)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    from .model import locate

    model = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(locate(str(base)).weights)
    targets = (r"model\.language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
               r"|model\.visual\.merger\.mlp\.(0|2)|model\.audio_tower\.proj")
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets, task_type="CAUSAL_LM"))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if "lora_" in name:
                weight.normal_(0, 0.5)
    model.peft_config["default"].base_model_name_or_path = str(base)
    out = Path(out_dir)
    model.save_pretrained(out)
    return out


def swift_lora_twin(adapter_dir: str | Path, out_dir: str | Path) -> Path:
    """The same adapter as ms-swift writes it for the full model: 4.5x module names under `thinker.`, a regex
    target_modules, ms-swift's extra config keys and files."""
    from safetensors.torch import load_file, save_file

    src, out = Path(adapter_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    renamed = {}
    for key, tensor in load_file(src / "adapter_model.safetensors").items():
        name = key.removeprefix("base_model.model.")
        for new, old in (("model.language_model.", "model."), ("model.visual.", "visual."),
                         ("model.audio_tower.", "audio_tower.")):
            if name.startswith(new):
                name = old + name[len(new):]
                break
        renamed[f"base_model.model.thinker.{name}"] = tensor.contiguous()
    save_file(renamed, out / "adapter_model.safetensors", metadata={"format": "pt"})
    config = json.loads((src / "adapter_config.json").read_text())
    config.update(target_modules=SWIFT_TARGETS, lora_dtype=None, lorap_lr_ratio=None, lorap_emb_lr=1e-6)
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2))
    (out / "additional_config.json").write_text(json.dumps({"lora_dtype": None, "lorap_lr_ratio": None,
                                                            "lorap_emb_lr": 1e-6}))
    (out / "args.json").write_text(json.dumps({"model": config["base_model_name_or_path"], "train_type": "lora",
                                               "lora_rank": config["r"], "target_modules": ["all-linear"]}))
    return out


def make_released(out_dir: str | Path, layout: str, seed: int = 0) -> Path:
    """A tiny checkpoint in one of the release's layouts (see RELEASED_LAYOUTS); returns what --model takes.

    swift-merged: thinker + talker + token2wav, sharded with an index. thinker: the thinker alone. swift-lora: an
    adapter (in OUT/adapter) on a full base (OUT/base), as ms-swift writes it.
    """
    if layout not in RELEASED_LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(RELEASED_LAYOUTS)}, got {layout!r}")
    out = Path(out_dir)
    if layout == "swift-lora":
        base = make_released(out / "base", "swift-merged", seed)
        native = make_adapter(out / "native-adapter", base, seed)
        return swift_lora_twin(native, out / "adapter")
    make_tiny(out, full=layout == "swift-merged", seed=seed, max_shard_size="200KB")
    _write_legacy_config(out)
    if layout == "swift-merged":
        (out / "args.json").write_text(json.dumps({"model": "Qwen/Qwen2.5-Omni-7B", "train_type": "lora",
                                                   "merge_lora": True}))
    return out


CHAT_KINDS = ("vl", "text")


def make_tiny_chat(out_dir: str | Path, kind: str = "vl", seed: int = 0) -> Path:
    """Save a tiny random chat model that is not an Omni judge: a Qwen2.5-VL ('vl') or a Qwen2 text LM ('text').

    They stand for the generators of preference-data synthesis (the paper pairs
    Qwen2.5-VL 7B with 3B); they share the Omni fixture's tokenizer and template.
    """
    import torch
    from transformers import (
        Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor, Qwen2Config, Qwen2ForCausalLM,
        Qwen2VLImageProcessor, Qwen2VLVideoProcessor,
    )

    if kind not in CHAT_KINDS:
        raise ValueError(f"kind must be one of {', '.join(CHAT_KINDS)}, got {kind!r}")
    tokenizer = build_tokenizer()
    ids = _token_ids(tokenizer)
    text = dict(vocab_size=len(tokenizer), hidden_size=TEXT_HIDDEN, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                bos_token_id=ids["eos_token"], eos_token_id=ids["im_end"], pad_token_id=ids["eos_token"])
    torch.manual_seed(seed)
    if kind == "text":
        model, processor = Qwen2ForCausalLM(Qwen2Config(**text)), tokenizer
    else:
        size = {"shortest_edge": 28 * 28 * 4, "longest_edge": 28 * 28 * 16}
        processor = Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(size=size),
                                        video_processor=Qwen2VLVideoProcessor(size=size), tokenizer=tokenizer,
                                        chat_template=CHAT_TEMPLATE)
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
        config = Qwen2_5_VLConfig(
            text_config=text,
            vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=TEXT_HIDDEN,
                               fullatt_block_indexes=[1], window_size=56, patch_size=14, spatial_merge_size=2,
                               temporal_patch_size=2),
            image_token_id=ids["image_token"], video_token_id=ids["video_token"],
            vision_start_token_id=ids["vision_bos_token"], vision_end_token_id=ids["vision_eos_token"],
            eos_token_id=ids["im_end"], pad_token_id=ids["eos_token"])
        model = Qwen2_5_VLForConditionalGeneration(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(out)
    processor.save_pretrained(out)
    return out


# The parrot: the tiny model taught, in under a minute, to write the judgment of each bundled example
# (assets/pairs.jsonl, the app's examples and the batch demo file: a labelled pair per modality) in both orders.
# Its output parses, streams criterion by criterion and agrees with itself under the swap check, so that the app
# and the tests show real judgments without a real checkpoint. It is random weights that learnt a few judgments by
# heart: any other input gets a garbled echo of them.
ASSETS = Path(__file__).resolve().parent.parent / "assets"
EXAMPLES = ASSETS / "pairs.jsonl"
PARROT_QUERY = "What colour is the ball, and where is it?"
PARROT_A = "A blue ball is floating in the sky."
PARROT_B = "A red ball lies on green grass under a blue sky with a yellow sun."


def parrot_picture():
    """The example picture (also assets/ball.png): a red ball on grass under a blue sky with a sun."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (320, 240), (120, 180, 250))
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 170, 320, 240], fill=(60, 160, 70))
    draw.ellipse([250, 20, 300, 70], fill=(250, 220, 60))
    draw.ellipse([120, 120, 180, 180], fill=(210, 40, 40))
    return img


def parrot_sample():
    from .schema import MediaItem, Sample

    return Sample(PARROT_QUERY, PARROT_A, PARROT_B, media=[MediaItem("image", data=parrot_picture())])


def examples():
    """The bundled examples: (sample, the judgment the parrot learns for it), media under assets/."""
    from .pairs import jsonl_rows, labelled_judgment, read_criteria, sample_from_record
    from .rubric import DEFAULT_RUBRIC

    out = []
    for _, row, _ in jsonl_rows(EXAMPLES, "examples file"):
        criteria = read_criteria(row["criteria"])
        judgment = labelled_judgment(row["label"], row["score_a"], row["score_b"], criteria, DEFAULT_RUBRIC)
        out.append((sample_from_record(row, ASSETS), judgment))
    return out


PARROT_RECORD = {"prompt_format": "rubric-v2"}  # the parrot's rrm_judge.json


def _lessons(model, processor) -> tuple[list, list[str]]:
    """Every bundled example in both orders: (prompt messages, decoded media) rows and their target judgments."""
    from .judge import Judge
    from .model import LoadedModel

    # The record it is saved with: the lessons are judged as the saved parrot judges (a video's sound heard).
    judge = Judge(LoadedModel(model, processor, "parrot", None, "none", "cpu", PARROT_RECORD))
    rows, targets = [], []
    for sample, judgment in examples():  # the judge's own prompts, in both orders (a video's sound note included)
        rows += judge._rows(sample, judge._decode_media(sample), swap_check=True)
        targets += [judge.format.render(judgment), judge.format.render(judgment.swapped())]
    return rows, targets


def make_parrot(out_dir: str | Path, steps: int = 400, seed: int = 0, progress: bool = True) -> Path:
    """Save a tiny checkpoint taught to judge every bundled example (rubric-v2, both orders)."""
    import torch
    from tqdm.auto import tqdm

    from .inputs import encode
    from .media import MediaLimits
    from .model import JUDGE_CONFIG_FILE

    # Its own tokenizer, trained on the prompts and judgments it learns: whole words rather than the fixture's
    # pieces halve the sequences, and attention over them is most of each step's time.
    model, processor = build_thinker(seed=seed)
    rows, targets = _lessons(model, processor)
    texts = [processor.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m, _ in rows]
    model, processor = build_thinker(build_tokenizer(4000, _CORPUS + texts + targets), seed=seed)
    rows, targets = _lessons(model, processor)
    # A batch per example (its two orders share a length): no row is padded to the longest example's length.
    batches = [encode(processor, rows[i:i + 2], MediaLimits(), targets=targets[i:i + 2])
               for i in range(0, len(rows), 2)]
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=6e-3)
    model.train()
    with tqdm(range(steps), desc="teaching the demo judge its examples", unit="step", disable=not progress) as bar:
        for _ in bar:
            wrong = 0
            for batch in batches:
                labels = batch["labels"]
                out = model(**batch)
                # Done when greedy decoding reproduces every target token of every lesson.
                taught = labels[:, 1:] != -100
                wrong += int((out.logits[:, :-1].argmax(-1) != labels[:, 1:])[taught].sum())
                (out.loss / len(batches)).backward()
            bar.set_postfix(wrong_tokens=wrong)
            if not wrong:
                break
            # Unclipped, Adam at this rate threw away what it had learnt every hundred steps or so: clipped, the
            # lessons are learnt in about 100 to 130 steps instead of 270 (seeds 0 to 2).
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
            optimizer.step()
            optimizer.zero_grad()
        else:
            raise RuntimeError(f"the parrot did not learn its {len(rows)} judgments in {steps} steps")
    model.eval()
    out = Path(out_dir)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / JUDGE_CONFIG_FILE).write_text(json.dumps(PARROT_RECORD, indent=2))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rrm.testing", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("make-tiny", help="save a tiny random Omni checkpoint to DIR")
    make.add_argument("dir")
    make.add_argument("--full", action="store_true", help="save thinker + talker, as the released checkpoints")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--parrot", action="store_true",
                      help="teach it (under a minute) to judge the bundled examples: its output is a real judgment")
    make.add_argument("--chat", choices=CHAT_KINDS,
                      help="instead, a tiny non-Omni chat model (a generator for train.synth): a VLM or a text LM")
    make.add_argument("--released", choices=RELEASED_LAYOUTS,
                      help="in a layout the research release wrote (prints the directory --model takes)")
    args = parser.parse_args(argv)
    if args.chat:
        out = make_tiny_chat(args.dir, args.chat, seed=args.seed)
    elif args.released:
        out = make_released(args.dir, args.released, seed=args.seed)
    elif args.parrot:
        out = make_parrot(args.dir, seed=args.seed)
    else:
        out = make_tiny(args.dir, full=args.full, seed=args.seed)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
