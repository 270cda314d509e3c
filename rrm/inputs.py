"""Model inputs for chat messages with decoded media: the one place the processor is called.

The judge encodes prompts; training encodes prompts followed by their target
judgments, with labels on the target tokens only.
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import RRMError, first_line
from .media import MediaLimits, load_media
from .schema import AUDIO, IMAGE, ORDER_AB, ORDER_BA, VIDEO, Sample

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

    if len(sound_groups(rows)) > 1:
        raise RRMError("one batch mixes videos heard with their sound and silent ones (or sound at two frame "
                       "rates): the model takes them in separate batches")
    texts = [processor.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m, _ in rows]
    if targets is not None:
        texts = [t + target + END_OF_TURN for t, target in zip(texts, targets)]
    images = [obj for _, media in rows for kind, obj in media if kind == IMAGE]
    clips = [obj for _, media in rows for kind, obj in media if kind == VIDEO]
    audio, from_video = _audio_slots(rows)
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
    if any(i is not None for i in from_video):
        # Qwen2.5-Omni's audio in video: each clip's frames and sound interleaved in 2-second chunks, on one time
        # axis (TMRoPE). The processor lays the chunks out with the one fps of the call: sound_key keeps it true.
        kwargs.update(load_audio_from_video=True, audio_from_video_indices=from_video)
    try:
        inputs = processor(text=texts, padding=True, return_tensors="pt", **kwargs)
    except Exception as e:
        raise RRMError(f"the processor rejected the input: {first_line(e)}") from None
    if clips:
        # The processor applies one fps to every video of a call; each clip has its own.
        patch = processor.video_processor.temporal_patch_size
        inputs["video_second_per_grid"] = torch.tensor([patch / c.fps for c in clips])
    inputs.pop("num_audio_tokens", None)
    if clips:  # the model's positions must interleave frames and sound as the processor did, or not at all
        inputs["use_audio_in_video"] = any(i is not None for i in from_video)
    if targets is not None:
        inputs["labels"] = _target_labels(processor.tokenizer, inputs, targets)
    return inputs


def _audio_slots(rows: Sequence[Row]) -> tuple[list, list[int | None]]:
    """The sound the processor takes, in the order it appears in the text: each audio item's, and each heard
    video's own track; beside each, the index of the video it comes from (None: a standalone audio item)."""
    audio, from_video, video = [], [], 0
    for _, media in rows:
        for kind, obj in media:
            if kind == AUDIO:
                audio.append(obj.samples)
                from_video.append(None)
            elif kind == VIDEO:
                if obj.audio is not None:
                    audio.append(obj.audio.samples)
                    from_video.append(video)
                video += 1
    return audio, from_video


def sound_key(media) -> tuple | None:
    """What rows must share to go through the model together: Qwen2.5-Omni takes audio in video for every video
    of a forward or for none, laid out at one frame rate. ("sound", fps) for a row whose videos are heard,
    ("silent",) for one with silent videos, None for one without video (it goes with either)."""
    clips = [obj for kind, obj in media if kind == VIDEO]
    if not clips:
        return None
    heard = [c for c in clips if c.audio is not None]
    if not heard:
        return ("silent",)
    rates = {round(c.fps, 6) for c in heard}
    if len(heard) < len(clips) or len(rates) > 1:
        raise RRMError("the videos of one sample must all be heard at one frame rate, or none: "
                       + ", ".join(f"{c.fps:.3g} fps " + ("with sound" if c.audio is not None else f"({c.audio_note})")
                                   for c in clips) + "; judge them with --video-audio off, or apart")
    return ("sound", rates.pop())


def sound_groups(rows: Sequence[Row]) -> list[list[int]]:
    """The indices of `rows` in groups that can share a forward (sound_key), in first-seen order."""
    groups: dict = {}
    for i, (_, media) in enumerate(rows):
        groups.setdefault(sound_key(media), []).append(i)
    free = groups.pop(None, [])
    if not groups:
        return [free]
    first = next(iter(groups))
    groups[first] = sorted(groups[first] + free)
    return list(groups.values())


def has_sound(media) -> bool:
    """Whether a row's decoded media hold a video that is heard."""
    return any(kind == VIDEO and obj.audio is not None for kind, obj in media)


def decode_media(sample: Sample, limits: MediaLimits) -> list[tuple[str, object]]:
    """A sample's media decoded, in order: [(kind, image | VideoClip | AudioClip)]."""
    return [(m.kind, load_media(m, limits)) for m in sample.media]


def judge_rows(sample: Sample, media, fmt, rubric, orders: Sequence[str] = (ORDER_AB,)) -> list[Row]:
    """A sample's judging prompt in each order, with its decoded media. The prompt says a video is heard where one
    is; a sample whose videos cannot all be heard together (sound_key) is refused here."""
    from .prompts import build_messages

    sound_key(media)
    return [(build_messages(sample, fmt, rubric, o, sound=has_sound(media)), media) for o in orders]


BOTH_ORDERS = (ORDER_AB, ORDER_BA)


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
