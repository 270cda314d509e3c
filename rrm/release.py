"""The research release's settings: what the released Omni-RRM checkpoints were trained and evaluated with.

Facts read from the public release (tmfk418/Omni-RRM: train/sft_7b_lora.sh, train/grpo_7b.sh,
inference/*/infer_lora*.py) and from the ms-swift and qwen-omni-utils code it runs on. A checkpoint with no
`rrm_judge.json` beside its weights is taken for a released one and judged with this profile; so is any
checkpoint whose `rrm_judge.json` says `"profile": "omni-rrm-release"`.

- Prompt: the `omni-rrm-release` format (`rrm.prompts.ReleaseFormat`): the layout of the released training rows
  (media, the instruction, a `### Context` block), asking for the released output schema.
- System turn: ms-swift's default for its qwen2_5_omni template, which the release's SFT and evaluation used
  (its GRPO stage set train/prompt.txt as the system turn instead).
- Media: the evaluation scripts' environment (MAX_PIXELS, VIDEO_MAX_PIXELS, FPS_MAX_FRAMES; FPS left at
  qwen-omni-utils' 2.0) and qwen-omni-utils' floor of 100,352 pixels per video frame, which in practice
  overrides the lower VIDEO_MAX_PIXELS the scripts set. Training used smaller images and 1 fps.
- Sound of videos: off. ms-swift's Qwen2.5-Omni template hears a video's sound track only when the environment
  sets USE_AUDIO_IN_VIDEO (default false), and neither the training scripts nor the evaluation scripts set it:
  the released judges learnt and were measured on silent frames.
"""

from __future__ import annotations

import dataclasses

from .media import MediaLimits

RELEASE_PROFILE = "omni-rrm-release"
RELEASE_SYSTEM = "You are a helpful assistant."

# qwen-omni-utils' VIDEO_MIN_PIXELS (128 x 28 x 28): every frame is resized to at least this many pixels.
_FRAME_FLOOR = 100_352
EVAL_LIMITS = MediaLimits(image_max_pixels=1_003_520, video_fps=2.0, video_max_frames=20, video_max_pixels=50_176,
                          video_min_pixels=_FRAME_FLOOR, video_audio="off")
SFT_LIMITS = MediaLimits(image_max_pixels=131_072, video_fps=1.0, video_max_frames=20, video_max_pixels=12_288,
                         video_min_pixels=_FRAME_FLOOR, video_audio="off")
GRPO_LIMITS = dataclasses.replace(SFT_LIMITS, video_max_frames=8)

# The folders of the released Omni-Preference media (images, videos, audio), under one root.
MEDIA_FOLDERS = ("rlaif-v-dataset", "video-dataset", "audio_files")


def is_release(judge_config: dict | None) -> bool:
    """Whether a checkpoint's record (its rrm_judge.json, {} when it has none) calls for the release profile."""
    return not judge_config or judge_config.get("profile") == RELEASE_PROFILE


def judge_limits(judge_config: dict | None, given: MediaLimits | None = None) -> MediaLimits:
    """The media bounds a checkpoint is judged with: `given`, else its profile's with what its record sets on top.

    `video_audio="auto"` (in `given`) takes what the checkpoint calls for: "off" for one trained on silent frames
    (the released checkpoints; a record that says "off"), else "auto" (hear a video's sound where it has one)."""
    base = EVAL_LIMITS if is_release(judge_config) else MediaLimits()
    known = {f.name for f in dataclasses.fields(MediaLimits)}
    recorded = (judge_config or {}).get("media_limits") or {}
    own = dataclasses.replace(base, **{k: v for k, v in recorded.items() if k in known})
    if given is None:
        return own
    return given if given.video_audio != "auto" else dataclasses.replace(given, video_audio=own.video_audio)
