"""The graded self-check tasks: the answer is in the media, the dial really sets the contrast (measured on the
written files), and seeds keep held-out items apart from training ones."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import pytest

from train.graded import EASY, HARD, MODALITIES, make_item, make_split


def _measure(item) -> float:
    """What the file holds, read back with the decoders the judge uses."""
    from rrm.media import load_media
    from rrm.schema import MediaItem

    media = load_media(MediaItem(item.modality, str(item.path)))
    if item.modality == "image":
        pixels = np.asarray(media, dtype=float).reshape(-1, 3)
        square = pixels[pixels[:, 1] == 30]  # the square's green channel is 30; the background is grey
        return square[:, 0].mean() / (square[:, 0].mean() + square[:, 2].mean())
    if item.modality == "audio":
        spectrum = np.abs(np.fft.rfft(media.samples))
        return float(np.argmax(spectrum) * media.sampling_rate / len(media.samples))
    frames = media.frames.astype(float).mean(axis=(1, 3))  # brightness per column, per frame
    centres = [(np.arange(len(f)) * f).sum() / f.sum() for f in frames]
    return centres[-1] - centres[0]


@pytest.mark.parametrize("modality", MODALITIES)
def test_the_dial_sets_the_contrast_of_what_the_file_holds(modality, tmp_path):
    for contrast in (EASY, HARD):
        rng = random.Random(1)
        items = [make_item(modality, contrast, rng, tmp_path / f"{contrast}-{i}") for i in range(6)]
        assert {i.truth for i in items} == {True, False}
        for item in items:
            measured = _measure(item)
            side = {"image": measured - 0.5, "audio": measured - 600, "video": measured}[modality]
            assert (side > 0) == item.truth, (item, measured)  # the answer is in the media
            assert item.right != item.wrong and item.question
    easy = [abs(_measure(make_item(modality, EASY, random.Random(k), tmp_path / f"e{k}")) - _pivot(modality))
            for k in range(4)]
    hard = [abs(_measure(make_item(modality, HARD, random.Random(k), tmp_path / f"h{k}")) - _pivot(modality))
            for k in range(4)]
    assert min(easy) > 3 * max(hard) > 0  # a hard pair is a small difference, but still one


def _pivot(modality: str) -> float:
    return {"image": 0.5, "audio": 600.0, "video": 0.0}[modality]


def test_seeds_keep_held_out_items_apart_from_training_and_reproduce(tmp_path):
    for modality in MODALITIES:
        train = make_split(tmp_path / "a", modality, "train", 20, HARD, seed=0)
        held = make_split(tmp_path / "a", modality, "test-hard", 10, HARD, seed=0)
        again = make_split(tmp_path / "b", modality, "test-hard", 10, HARD, seed=0)

        def digest(items):
            return [hashlib.sha256(i.path.read_bytes()).hexdigest() for i in items]

        assert not set(digest(train)) & set(digest(held))
        assert [i.truth for i in held] == [i.truth for i in again]
        if modality != "video":  # MP4 files carry no timestamps that differ, but their encoder may
            assert digest(held) == digest(again)
    with pytest.raises(ValueError, match="contrast must be in"):
        make_item("image", 0.0, random.Random(0), tmp_path / "x")


def test_an_audio_visual_item_holds_its_answer_in_the_sound_only_and_mute_silences_it(tmp_path):
    from rrm.media import MediaLimits, load_video
    from train.graded import AUDIO_VISUAL, mute

    heard = MediaLimits(video_audio="on")
    rng = random.Random(3)
    items = [make_item(AUDIO_VISUAL, HARD, rng, tmp_path / f"av{i}") for i in range(6)]
    assert {i.truth for i in items} == {True, False} and all(i.modality == "video" for i in items)
    clips = [load_video(i.path, heard) for i in items]
    for item, clip in zip(items, clips):
        x = clip.audio.samples
        hz = np.argmax(np.abs(np.fft.rfft(x))) * clip.audio.sampling_rate / len(x)
        assert (hz > 600) == item.truth and abs(hz - item.signal) < 25, (item, hz)
    assert all(np.array_equal(c.frames, clips[0].frames) for c in clips)  # the frames tell nothing
    muted = load_video(mute(tmp_path / "muted.mp4"), heard)
    assert np.array_equal(muted.frames, clips[0].frames)
    assert abs(muted.audio.duration_s - clips[0].audio.duration_s) < 0.05 and np.abs(muted.audio.samples).max() < 1e-3
