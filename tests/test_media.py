import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from rrm.errors import MediaError
from rrm.media import (
    AUDIO_SAMPLING_RATE, IMAGE_MAX_PIXELS, MediaLimits, load_audio, load_image, load_media, load_video,
    sample_indices,
)
from rrm.schema import MediaItem

from .media_files import VIDEO_CODECS, make_audio, make_image, make_video, tone


# ---------------------------------------------------------------- images

@pytest.mark.parametrize("ext", [".jpg", ".png", ".webp", ".gif", ".bmp"])
def test_images_of_each_format(tmp_path, ext):
    img = load_image(make_image(tmp_path / f"x{ext}", (120, 90)))
    assert img.mode == "RGB" and img.size == (120, 90)
    assert img.getpixel((60, 45))[0] > 150  # the red disc survived decoding


def test_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (40, 30), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    r, g, b = load_image(tmp_path / "a.gif").getpixel((5, 5))
    assert r > 200 and b < 50


def test_exif_rotation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    make_image(tmp_path / "r.jpg", (120, 60), exif=exif)
    assert load_image(tmp_path / "r.jpg").size == (60, 120)


def test_large_images_are_downscaled_to_the_pixel_bound(tmp_path):
    path = make_image(tmp_path / "big.png", (2000, 1500))
    img = load_image(path)
    assert img.width * img.height <= IMAGE_MAX_PIXELS
    assert abs(img.width / img.height - 2000 / 1500) < 0.01
    small = load_image(path, MediaLimits(image_max_pixels=100 * 100))
    assert small.width * small.height <= 100 * 100


# ---------------------------------------------------------------- videos

@pytest.mark.parametrize("ext", list(VIDEO_CODECS))
def test_videos_of_each_container(tmp_path, ext):
    clip = load_video(make_video(tmp_path / f"v{ext}", frames=30, fps=10))
    assert clip.frames.shape == (6, 64, 96, 3)  # 3 s at 2 fps
    assert clip.frames.dtype == np.uint8
    assert clip.fps == pytest.approx(2.0) and clip.source_fps == pytest.approx(10)
    assert clip.duration_s == pytest.approx(3.0)


def test_video_sampling_bounds_frames_and_reports_the_real_fps(tmp_path):
    path = make_video(tmp_path / "v.mp4", frames=100, fps=10, size=(320, 64))  # 10 s
    clip = load_video(path, MediaLimits(video_fps=2.0, video_max_frames=4))
    assert len(clip.frames) == 4
    assert clip.fps == pytest.approx(0.4)  # 4 frames over 10 s: the model's time axis needs this
    # The bar moves right: sampled frames are in temporal order.
    positions = [int(np.argmax(f[10, :, 1])) for f in clip.frames]
    assert positions == sorted(positions)


def test_video_frames_are_downscaled(tmp_path):
    clip = load_video(make_video(tmp_path / "v.avi", size=(320, 240)), MediaLimits(video_max_pixels=80 * 60))
    assert clip.frames.shape[1] * clip.frames.shape[2] <= 80 * 60


def test_sample_indices():
    assert sample_indices(100, 10, 2, 4) == [12, 37, 62, 87]  # centred in four equal spans
    assert sample_indices(1, 30, 2, 16) == [0]
    idx = sample_indices(300, 30, 1, 8)
    assert len(idx) == 8 and idx == sorted(set(idx)) and idx[-1] < 300


def test_decoded_video_array(rng):
    frames = rng.integers(0, 255, (20, 32, 48, 3), dtype=np.uint8)
    clip = load_media(MediaItem("video", data=frames, fps=5.0))
    assert clip.frames.shape == (8, 32, 48, 3) and clip.fps == pytest.approx(2.0)


# ---------------------------------------------------------------- audio

@pytest.mark.parametrize("ext", [".wav", ".flac", ".ogg", ".mp3", ".m4a"])
def test_audio_of_each_format_is_mono_16k(tmp_path, ext):
    clip = load_audio(make_audio(tmp_path / f"a{ext}", seconds=1.5, rate=22050, channels=2))
    assert clip.samples.ndim == 1 and clip.samples.dtype == np.float32
    assert clip.sampling_rate == AUDIO_SAMPLING_RATE
    assert clip.duration_s == pytest.approx(1.5, abs=0.1)
    assert 0.1 < np.abs(clip.samples).max() <= 1.0


def test_audio_is_cut_to_the_max_duration(tmp_path):
    clip = load_audio(make_audio(tmp_path / "long.wav", seconds=5, rate=16000), MediaLimits(audio_max_seconds=2))
    assert clip.truncated and clip.samples.size == 2 * AUDIO_SAMPLING_RATE


def test_decoded_audio_array_is_resampled():
    clip = load_media(MediaItem("audio", data=tone(1.0, 8000), sampling_rate=8000))
    assert clip.samples.size == AUDIO_SAMPLING_RATE and not clip.truncated


# ---------------------------------------------------------------- bad input

def _png_with_size(path, width, height):
    """A valid PNG signature and header that claims absurd dimensions."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10))
                     + chunk(b"IEND", b""))
    return path


def _bad_files(d):
    """(kind, path, expected message part) for every bad input the loaders must refuse."""
    good_png = make_image(d / "good.png", (200, 150))
    good_mp4 = make_video(d / "good.mp4")
    good_wav = make_audio(d / "good.wav")
    good_flac = make_audio(d / "good.flac")
    cases = [
        ("image", d / "missing.png", "does not exist"),
        ("video", d / "missing.mp4", "does not exist"),
        ("audio", d / "missing.wav", "does not exist"),
        ("image", d, "is not a file"),
    ]
    for kind, ext in (("image", ".png"), ("video", ".mp4"), ("audio", ".wav")):
        (d / f"empty{ext}").write_bytes(b"")
        cases.append((kind, d / f"empty{ext}", "is empty"))
        (d / f"noise{ext}").write_bytes(np.random.default_rng(1).bytes(4096))
        cases.append((kind, d / f"noise{ext}", "cannot be decoded"))
        (d / f"text{ext}").write_text("this is a text file, renamed\n" * 20)
        cases.append((kind, d / f"text{ext}", "cannot be decoded"))
        (d / "doc.xyz").write_text("x")
        cases.append((kind, d / "doc.xyz", "unsupported format .xyz"))
    for good, kind, part in ((good_png, "image", "truncated"), (good_mp4, "video", "cannot be decoded"),
                             (good_wav, "audio", "truncated"), (good_flac, "audio", "cannot be decoded")):
        cut = d / f"cut_{good.name}"
        data = good.read_bytes()
        cut.write_bytes(data[: len(data) // 2])
        cases.append((kind, cut, part))
    import cv2

    writer = cv2.VideoWriter(str(d / "noframes.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 64))
    writer.release()  # a container with no frames at all
    cases.append(("video", d / "noframes.mp4", "has no video stream"))
    webm = make_video(d / "good.webm")
    data = webm.read_bytes()
    (d / "cut.webm").write_bytes(data[: len(data) // 3])
    cases.append(("video", d / "cut.webm", "is truncated"))
    import soundfile as sf

    sf.write(d / "silence0.wav", np.zeros((0, 1), np.float32), 16000)
    cases.append(("audio", d / "silence0.wav", "zero length"))
    cases.append(("image", _png_with_size(d / "huge.png", 100_000, 100_000), "absurd dimensions"))
    return cases


def test_every_bad_input_raises_one_media_error_naming_the_file(tmp_path):
    loaders = {"image": load_image, "video": load_video, "audio": load_audio}
    for kind, path, part in _bad_files(tmp_path):
        with pytest.raises(MediaError) as info:
            loaders[kind](path)
        message = str(info.value)
        assert part in message, (kind, path, message)
        assert str(path) in message and "\n" not in message


@pytest.mark.parametrize("item,part", [
    (MediaItem("video", data=np.zeros((4, 8, 8)), fps=2), "(T, H, W, 3)"),
    (MediaItem("video", data=np.zeros((4, 8, 8, 3)), fps=None), "needs its fps"),
    (MediaItem("audio", data=np.zeros(10)), "sampling_rate"),
    (MediaItem("audio", data=np.zeros(0), sampling_rate=16000), "zero length"),
    (MediaItem("image", data=np.zeros((3, 3))), "(H, W, 3)"),
    (MediaItem("audio", data=np.array([0.0, np.nan]), sampling_rate=16000), "non-finite"),
])
def test_bad_decoded_data(item, part):
    with pytest.raises(MediaError, match=part.replace("(", r"\(").replace(")", r"\)")):
        load_media(item)


def test_file_size_limit(tmp_path):
    path = make_image(tmp_path / "x.png")
    with pytest.raises(MediaError, match="over the"):
        load_image(path, MediaLimits(max_file_bytes=10))
    assert os.path.getsize(path) > 10
