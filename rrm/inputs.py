"""Model inputs for chat messages with decoded media: the one place the processor is called.

The judge encodes prompts; training encodes prompts followed by their target
judgments, with labels on the target tokens only.
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import RRMError, first_line
from .media import MediaLimits
from .schema import AUDIO, IMAGE, VIDEO

# Pixels and audio features take the model's dtype; everything else keeps its own.
MEDIA_TENSORS = ("pixel_values", "pixel_values_videos", "input_features")
END_OF_TURN = "<|im_end|>"

Row = tuple[list[dict], list[tuple[str, object]]]  # (chat messages, [(kind, decoded media)])


def _size(sub_processor, max_pixels: int, min_pixels: int = 0) -> dict:
    # Pass the bounds on every call: the processor's built-in defaults override
    # the saved ones (a 64 px clip would be upscaled to hundreds of tokens).
    saved = dict(getattr(sub_processor, "size", None) or {})
    low = min_pixels or min(saved.get("shortest_edge", 56 * 56), max_pixels)
    return {"shortest_edge": low, "longest_edge": max_pixels}


def encode(processor, rows: Sequence[Row], limits: MediaLimits, targets: Sequence[str] | None = None):
    """A BatchFeature (left-padded, on the CPU) for rows of (messages, decoded media).

    With `targets`, each row's prompt is followed by its target and the end of
    the turn, and `labels` mark those tokens only (-100 elsewhere).
    """
    import torch

    texts = [processor.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m, _ in rows]
    if targets is not None:
        texts = [t + target + END_OF_TURN for t, target in zip(texts, targets)]
    images = [obj for _, media in rows for kind, obj in media if kind == IMAGE]
    clips = [obj for _, media in rows for kind, obj in media if kind == VIDEO]
    audio = [obj.samples for _, media in rows for kind, obj in media if kind == AUDIO]
    kwargs = {}
    if images:
        kwargs["images"] = images
        kwargs["images_kwargs"] = {"size": _size(processor.image_processor, limits.image_max_pixels)}
    if clips:
        kwargs["videos"] = [c.frames for c in clips]
        low, high = limits.video_frame_pixels
        kwargs["videos_kwargs"] = {"size": _size(processor.video_processor, high, low),
                                   "do_sample_frames": False, "fps": clips[0].fps, "cap_pixels_per_frame": True}
    if audio:
        kwargs["audio"] = audio
    try:
        inputs = processor(text=texts, padding=True, return_tensors="pt", **kwargs)
    except Exception as e:
        raise RRMError(f"the processor rejected the input: {first_line(e)}") from None
    if clips:
        # The processor applies one fps to every video of a call; each clip has its own.
        patch = processor.video_processor.temporal_patch_size
        inputs["video_second_per_grid"] = torch.tensor([patch / c.fps for c in clips])
    inputs.pop("num_audio_tokens", None)
    if targets is not None:
        inputs["labels"] = _target_labels(processor.tokenizer, inputs, targets)
    return inputs


def _target_labels(tokenizer, inputs, targets: Sequence[str]):
    """Labels on the last tokens of each (left-padded) row: its target and the end of the turn."""
    labels = inputs["input_ids"].clone().fill_(-100)
    for row, target in enumerate(targets):
        # The chat template ends the prompt with a newline, a token boundary: the
        # target tokenizes the same on its own as after the prompt.
        n = len(tokenizer(target + END_OF_TURN, add_special_tokens=False).input_ids)
        labels[row, -n:] = inputs["input_ids"][row, -n:]
    return labels


def to_device(inputs, model) -> dict:
    device = next(model.parameters()).device
    dtype = next(p for p in model.parameters() if p.is_floating_point()).dtype
    # The video time axis stays float32 (bf16 would round 2/3 s per grid and shift temporal positions).
    return {k: v.to(device, dtype=dtype) if k in MEDIA_TENSORS else v.to(device) if hasattr(v, "to") else v
            for k, v in inputs.items()}
