"""Graded-difficulty self-check tasks: the right answer is in the media only, and contrast is a dial.

    item = make_item("audio", contrast=0.1, rng=random.Random(3), path=Path("media/a-0"))

Per modality, one generator makes easy (high-contrast) and hard (low-contrast)
pairs alike:
    image   a square whose colour lies between red and blue: "more red or more blue?"; contrast is how far
            its colour is from the even mix (1: pure red or blue; 0.1: a purple a tenth of the way over)
    audio   a tone above or below 600 Hz: "higher or lower than 600 Hz?"; contrast is the distance in
            octaves from 600 Hz, over 0.3 (1: 739 or 487 Hz; 0.1: 613 or 588 Hz, a mel bin apart)
    video   a soft bar that moves right or left: "which way does it move?"; contrast scales its step per frame
            (1: 8 px a frame; 0.1: 0.25 px, so its whole path is 1.3 px)
    av      a video whose frames are all alike (a grey square) and whose own sound track is the audio task's tone:
            the answer is in the video's sound only (the task `av` writes video items)
Position, size, phase and loudness are drawn at random too, so that no two items share a file. Each split
draws from its own seeded stream (`split_rng`): held-out items are never training items.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MODALITIES = ("image", "audio", "video")
AUDIO_VISUAL = "av"
TASKS = (*MODALITIES, AUDIO_VISUAL)
KIND = {AUDIO_VISUAL: "video"}  # the media kind of a task's items, where it is not the task's name
EXTENSIONS = {"image": ".png", "audio": ".wav", "video": ".mp4", AUDIO_VISUAL: ".mp4"}
SIZE = 56  # pixels, images and frames
FRAMES, FPS = 6, 3.0
RATE = 16_000
PIVOT_HZ = 600.0
MAX_OCTAVES = 0.3
MAX_STEP_PX = 8.0
STEP_POWER = 1.5  # the step grows as contrast ** 1.5: hard pairs move a quarter of a pixel a frame
BAR_SIGMA_PX = 4.0
EASY, HARD = 1.0, 0.1  # the contrast of an easy and of a hard pair


@dataclass(frozen=True)
class Item:
    modality: str  # the media kind (an `av` item is a video)
    path: Path  # the media file written
    question: str
    right: str
    wrong: str
    truth: bool  # which side of the dial the media fall on
    contrast: float
    signal: float  # what the media hold: the square's red share, the tone (Hz), the bar's net movement (px)


def split_rng(seed: int, split: str, modality: str) -> random.Random:
    """The random stream of one split of one modality: train, held-out easy and held-out hard never share one."""
    return random.Random(f"graded:{seed}:{split}:{modality}")


def make_item(task: str, contrast: float, rng: random.Random, path: Path) -> Item:
    """Write one item's media at `path` (with its extension added); 0 < contrast <= 1."""
    if not 0 < contrast <= 1:
        raise ValueError(f"contrast must be in (0, 1], got {contrast}")
    truth = rng.random() < 0.5
    path = path.parent / (path.name + EXTENSIONS[task])
    write = {"image": _image, "audio": _audio, "video": _video, AUDIO_VISUAL: _audio_visual}[task]
    question, options, signal = write(truth, contrast, rng, path)
    right, wrong = options if truth else options[::-1]
    return Item(KIND.get(task, task), path, question, right, wrong, truth, contrast, signal)


def _image(red: bool, contrast: float, rng: random.Random, path: Path):
    from PIL import Image

    balance = 0.5 + (0.5 if red else -0.5) * contrast  # 1 is pure red, 0 pure blue
    colour = (round(40 + 180 * balance), 30, round(40 + 180 * (1 - balance)))
    img = Image.new("RGB", (SIZE, SIZE), (rng.randrange(0, 20),) * 3)  # darker than the square's green 30
    side = rng.randrange(28, 48)
    x, y = rng.randrange(0, SIZE - side + 1), rng.randrange(0, SIZE - side + 1)
    img.paste(colour, (x, y, x + side, y + side))
    img.save(path)
    return "Is the square more red or more blue?", ("It is more red.", "It is more blue."), balance


def _tone(high: bool, contrast: float, rng: random.Random, seconds: float) -> tuple[np.ndarray, float]:
    hz = PIVOT_HZ * 2 ** ((1 if high else -1) * MAX_OCTAVES * contrast)
    t = np.arange(int(seconds * RATE)) / RATE
    return (rng.uniform(0.2, 0.5) * np.sin(2 * np.pi * hz * t + rng.uniform(0, 2 * np.pi))).astype(np.float32), hz


TONE_QUESTION = (f"Is the tone higher or lower than {PIVOT_HZ:g} Hz?",
                 (f"It is higher than {PIVOT_HZ:g} Hz.", f"It is lower than {PIVOT_HZ:g} Hz."))


def _audio(high: bool, contrast: float, rng: random.Random, path: Path):
    import soundfile as sf

    wave, hz = _tone(high, contrast, rng, rng.uniform(0.5, 0.8))
    sf.write(path, wave, RATE)
    return *TONE_QUESTION, hz


def _audio_visual(high: bool, contrast: float, rng: random.Random, path: Path):
    wave, hz = _tone(high, contrast, rng, FRAMES / FPS)  # the sound spans the frames
    _write_av(path, wave)
    return f"Is the tone heard in the video higher or lower than {PIVOT_HZ:g} Hz?", TONE_QUESTION[1], hz


def _write_av(path: Path, wave: np.ndarray) -> None:
    from rrm.media import write_video

    frames = np.full((FRAMES, SIZE, SIZE, 3), 128, np.uint8)  # every item's frames alike: they hold no answer
    write_video(path, frames, FPS, wave, RATE)


def mute(target: Path) -> Path:
    """An audio-visual item's video with a silent track as long as its tone: what the judge was trained on, but
    nothing to hear (every item's frames are alike, so it is any item, muted)."""
    _write_av(target, np.zeros(int(FRAMES / FPS * RATE), np.float32))
    return target


def _video(right: bool, contrast: float, rng: random.Random, path: Path):
    import cv2

    step = (1 if right else -1) * MAX_STEP_PX * contrast ** STEP_POWER
    # A soft bar (a Gaussian across x): it moves by fractions of a pixel too, where a hard-edged one would jump
    # a whole pixel at a time or stand still.
    sigma = rng.uniform(BAR_SIGMA_PX - 1, BAR_SIGMA_PX + 1)
    start = SIZE / 2 - step * (FRAMES - 1) / 2 + rng.uniform(-4, 4)
    xs = np.arange(SIZE)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (SIZE, SIZE))
    for i in range(FRAMES):
        row = np.round(255 * np.exp(-0.5 * ((xs - start - step * i) / sigma) ** 2)).astype(np.uint8)
        writer.write(np.broadcast_to(row[None, :, None], (SIZE, SIZE, 3)).copy())
    writer.release()
    return "Which way does the bar move?", ("It moves to the right.", "It moves to the left."), step * (FRAMES - 1)


def make_split(folder: Path, task: str, split: str, n: int, contrast: float | tuple[float, float],
               seed: int) -> list[Item]:
    """`n` items of one task for one split, their media under `folder`; a (low, high) contrast draws each
    item's contrast evenly between the two."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = split_rng(seed, split, task)
    low, high = contrast if isinstance(contrast, tuple) else (contrast, contrast)
    return [make_item(task, rng.uniform(low, high), rng, folder / f"{task}-{split}-{i}") for i in range(n)]


__all__ = ["Item", "make_item", "make_split", "mute", "split_rng", "MODALITIES", "TASKS", "AUDIO_VISUAL", "EASY",
           "HARD"]
