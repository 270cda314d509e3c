"""Real media files written with real encoders (PIL, OpenCV's FFmpeg, libsndfile, PyAV)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

VIDEO_CODECS = {".mp4": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG", ".webm": "VP90"}


def make_image(path: Path, size=(120, 90), **save_kwargs) -> Path:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", size, (240, 240, 240))
    ImageDraw.Draw(img).ellipse([10, 10, size[0] - 10, size[1] - 10], fill=(200, 30, 30))
    img.save(path, **save_kwargs)
    return path


def make_video(path: Path, frames: int = 30, fps: float = 10, size=(96, 64)) -> Path:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*VIDEO_CODECS[path.suffix]), fps, size)
    assert writer.isOpened(), f"OpenCV cannot write {path.suffix}"
    for i in range(frames):
        frame = np.full((size[1], size[0], 3), 30, np.uint8)
        x = (i * 3) % size[0]
        frame[:, x:x + 12] = (40, 200, 240)  # a bar moving right
        writer.write(frame)
    writer.release()
    return path


def tone(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def make_audio(path: Path, seconds: float = 1.5, rate: int = 22050, channels: int = 2) -> Path:
    x = tone(seconds, rate)
    if path.suffix in (".m4a", ".aac"):
        _write_aac(path, x, rate)
    else:
        import soundfile as sf

        sf.write(path, np.stack([x] * channels, axis=1), rate)
    return path


def _write_aac(path: Path, x: np.ndarray, rate: int) -> None:
    import av

    with av.open(str(path), "w", format="ipod" if path.suffix == ".m4a" else "adts") as out:
        stream = out.add_stream("aac", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(x.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def make_av_video(path: Path, seconds: float = 2.0, fps: float = 10, size=(96, 64), sound_seconds: float | None = None,
                  rate: int = 16_000, channels: int = 1, hz: float = 440.0) -> Path:
    """A video (the moving bar of make_video) with a sound track: a tone of `sound_seconds` (default: as long as
    the video; None for no track at all is make_video's), written by PyAV's FFmpeg encoders."""
    from rrm.media import write_video

    n = round(seconds * fps)
    frames = np.full((n, size[1], size[0], 3), 30, np.uint8)
    for i in range(n):
        frames[i, :, (i * 3) % size[0]:(i * 3) % size[0] + 12] = (40, 200, 240)
    t = np.arange(int((seconds if sound_seconds is None else sound_seconds) * rate)) / rate
    wave = (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)
    write_video(path, frames, fps, np.stack([wave] * channels, axis=1), rate)
    return path


def make_broken_sound_video(path: Path, seconds: float = 2.0, fps: float = 10, size=(96, 64)) -> Path:
    """A valid video whose AAC sound track holds packets of random bytes: no decoder can read them."""
    import av
    from fractions import Fraction

    rng = np.random.default_rng(1)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.height, video.width, video.pix_fmt = size[1], size[0], "yuv420p"
        sound = out.add_stream("aac", rate=16_000, layout="mono")
        for _ in range(round(seconds * fps)):
            out.mux(video.encode(av.VideoFrame.from_ndarray(np.full((size[1], size[0], 3), 90, np.uint8),
                                                            format="rgb24")))
        out.mux(video.encode())
        for i in range(round(seconds * 16_000 / 1024)):
            packet = av.Packet(rng.integers(0, 255, 300, dtype=np.uint8).tobytes())
            packet.stream, packet.pts, packet.dts, packet.time_base = sound, i * 1024, i * 1024, Fraction(1, 16_000)
            out.mux(packet)
    return path


def modality_samples(media_dir: Path) -> list:
    """A text, an image, a video and an audio pair over conftest's `media_dir` files."""
    from rrm.schema import MediaItem, Sample

    return [Sample("Which answer is right?", "Two plus two is four.", "Two plus two is five.", id="t"),
            Sample("What colour is it?", "Red.", "Blue.", [MediaItem("image", str(media_dir / "red.png"))], id="i"),
            Sample("What moves?", "A bar.", "Nothing.", [MediaItem("video", str(media_dir / "clip.mp4"))], id="v"),
            Sample("What is heard?", "A tone.", "Speech.", [MediaItem("audio", str(media_dir / "tone.wav"))], id="a")]


def comparable(judgment) -> dict:
    """A judgment without what differs from one model or backend to another (its timing, the model's name)."""
    d = judgment.to_dict()
    for x in (d, (d.get("swap") or {}).get("other") or {}):
        x.pop("timing", None)
        x.pop("model", None)
    return d
