"""Load and validate images, videos and audio into what the processor takes.

Every bad input raises `MediaError` with a one-line message naming the file and
the problem: never a decoder traceback. Limits are the named constants below,
overridable per call through `MediaLimits`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import MediaError, first_line
from .schema import AUDIO, IMAGE, VIDEO, MediaItem

log = logging.getLogger(__name__)

# FFmpeg inside OpenCV prints decoder complaints ("moov atom not found") straight
# to stderr; our own MediaError says what is wrong in one line instead.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")
VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mov", ".mkv")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac")
EXTENSIONS = {IMAGE: IMAGE_EXTENSIONS, VIDEO: VIDEO_EXTENSIONS, AUDIO: AUDIO_EXTENSIONS}

MAX_FILE_BYTES = 2 * 1024**3  # refuse larger files before decoding anything
IMAGE_MAX_PIXELS = 1024 * 1024  # images are downscaled to at most this many pixels
MAX_INPUT_PIXELS = 12_000 * 12_000  # larger images or frames are refused as absurd
VIDEO_FPS = 2.0  # target sampling rate of frames
VIDEO_MAX_FRAMES = 16
VIDEO_MAX_PIXELS = 448 * 448  # per frame, after downscaling
VIDEO_MAX_SECONDS = 3 * 3600  # longer videos are refused: decoding them would take minutes
# Qwen2.5-Omni's processor refuses images and frames whose long side is over 200 times the short side;
# the short side of such an input is padded (white, centred) up to this ratio.
MAX_ASPECT_RATIO = 150
AUDIO_SAMPLING_RATE = 16_000  # what the Whisper feature extractor of Qwen2.5-Omni expects
AUDIO_MAX_SECONDS = 30.0  # the feature extractor sees 30 s at most; longer audio is cut, with a warning
# A video's own sound track: "auto" hears it where the file has one (unless a judge's checkpoint records that it
# was trained on silent frames), "on" hears it whatever the record says, "off" takes the frames only.
VIDEO_AUDIO_MODES = ("auto", "on", "off")
NO_AUDIO_TRACK = "no audio track"
SOUND_OFF = "sound off"


@dataclass(frozen=True)
class MediaLimits:
    image_max_pixels: int = IMAGE_MAX_PIXELS
    video_fps: float = VIDEO_FPS
    video_max_frames: int = VIDEO_MAX_FRAMES
    video_max_pixels: int = VIDEO_MAX_PIXELS
    # A floor on the pixels of a video frame (0: none, frames are only ever downscaled). qwen-omni-utils, which
    # the release's ms-swift decodes video with, resizes every frame into [floor, max(bound, 1.05 x floor)]
    # (its floor is 100,352): there the floor wins over a bound set below it.
    video_min_pixels: int = 0
    audio_max_seconds: float = AUDIO_MAX_SECONDS
    max_input_pixels: int = MAX_INPUT_PIXELS
    max_file_bytes: int = MAX_FILE_BYTES
    video_audio: str = "auto"  # one of VIDEO_AUDIO_MODES

    def __post_init__(self):
        if self.video_audio not in VIDEO_AUDIO_MODES:
            raise MediaError(f"video audio must be one of {', '.join(VIDEO_AUDIO_MODES)}, got {self.video_audio!r}")

    def replace(self, **changes) -> MediaLimits:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def video_frame_pixels(self) -> tuple[int, int]:
        """(fewest, most) pixels of a video frame as the model sees it."""
        if not self.video_min_pixels:
            return 0, self.video_max_pixels
        return self.video_min_pixels, max(self.video_max_pixels, int(self.video_min_pixels * 1.05))


@dataclass
class AudioClip:
    samples: np.ndarray  # float32 mono
    sampling_rate: int
    duration_s: float
    truncated: bool = False


@dataclass
class VideoClip:
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    fps: float  # the real rate of the sampled frames: T / duration
    source_fps: float | None
    duration_s: float
    source: Path | None = None  # the file it was decoded from (sent whole to an endpoint)
    audio: AudioClip | None = None  # its sound track over the frames' span, when it is heard
    audio_note: str = NO_AUDIO_TRACK  # why there is no sound (NO_AUDIO_TRACK, SOUND_OFF, an undecodable track)

    def heard(self) -> dict:
        """What the judge hears of this clip: the seconds of sound, or why there are none."""
        if self.audio is None:
            return {"audio_s": None, "note": self.audio_note}
        note = f"{self.audio.duration_s:.1f} s of sound"
        if self.audio.truncated:
            note += " (cut to the audio bound)"
        return {"audio_s": round(self.audio.duration_s, 2), "note": note}


def media_kind(path: str | Path) -> str | None:
    """'image', 'video' or 'audio' by the file's extension; None when it is none of them."""
    ext = Path(path).suffix.lower()
    return next((kind for kind, exts in EXTENSIONS.items() if ext in exts), None)


def _check_file(path: str | Path, kind: str, limits: MediaLimits) -> Path:
    p = Path(path)
    if not p.exists():
        raise MediaError(f"{kind} file {p} does not exist")
    if not p.is_file():
        raise MediaError(f"{kind} path {p} is not a file")
    size = p.stat().st_size
    if size == 0:
        raise MediaError(f"{kind} file {p} is empty")
    if size > limits.max_file_bytes:
        raise MediaError(f"{kind} file {p} is {size / 1024**2:.0f} MB, over the "
                         f"{limits.max_file_bytes / 1024**2:.0f} MB limit")
    ext = p.suffix.lower()
    if ext not in EXTENSIONS[kind]:
        raise MediaError(f"{kind} file {p} has an unsupported format {ext or '(no extension)'}; "
                         f"supported: {' '.join(EXTENSIONS[kind])}")
    return p


def _fit(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """The size that keeps the aspect ratio within max_pixels (never upscales)."""
    if width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    return max(1, int(width * scale)), max(1, int(height * scale))


def _padded(width: int, height: int) -> tuple[int, int]:
    """The canvas that brings an extreme aspect ratio within MAX_ASPECT_RATIO (the input when it is within)."""
    if max(width, height) <= MAX_ASPECT_RATIO * min(width, height):
        return width, height
    short = math.ceil(max(width, height) / MAX_ASPECT_RATIO)
    return (width, short) if width > height else (short, height)


def _fit_frame(rgb: np.ndarray, max_pixels: int) -> np.ndarray:
    """An (H, W, 3) frame padded into the processor's aspect ratio, then downscaled to max_pixels."""
    import cv2

    h, w = rgb.shape[:2]
    pw, ph = _padded(w, h)
    if (pw, ph) != (w, h):
        top, left = (ph - h) // 2, (pw - w) // 2
        rgb = cv2.copyMakeBorder(rgb, top, ph - h - top, left, pw - w - left, cv2.BORDER_CONSTANT,
                                 value=(255, 255, 255))
    size = _fit(pw, ph, max_pixels)
    return rgb if size == (pw, ph) else cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


# ----------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------

def load_image(path: str | Path, limits: MediaLimits = MediaLimits()):
    """An RGB PIL image: EXIF rotation applied, the first frame of a GIF, at most image_max_pixels."""
    from PIL import Image, ImageOps

    p = _check_file(path, IMAGE, limits)
    try:
        with Image.open(p) as img:
            w, h = img.size
            if w <= 0 or h <= 0 or w * h > limits.max_input_pixels:
                raise MediaError(f"image file {p} has absurd dimensions: {w}x{h} pixels, beyond the "
                                 f"{limits.max_input_pixels:,}-pixel limit")
            img.seek(0)
            img = ImageOps.exif_transpose(img)
            img = img.convert("RGB")
    except MediaError:
        raise
    except Image.DecompressionBombError:
        raise MediaError(f"image file {p} has absurd dimensions (a decompression bomb)") from None
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... on bad files
        raise MediaError(f"image file {p} cannot be decoded: {first_line(e)}") from None
    return _resize_image(img, limits.image_max_pixels)


def _resize_image(img, max_pixels: int):
    """Pad an extreme aspect ratio into what the processor accepts, then downscale to max_pixels."""
    from PIL import Image

    canvas = _padded(img.width, img.height)
    if canvas != img.size:
        log.warning("image %dx%d: its long side is over %d times its short side; padded to %dx%d",
                    img.width, img.height, MAX_ASPECT_RATIO, *canvas)
        padded = Image.new("RGB", canvas, (255, 255, 255))
        padded.paste(img, ((canvas[0] - img.width) // 2, (canvas[1] - img.height) // 2))
        img = padded
    size = _fit(img.width, img.height, max_pixels)
    return img if size == img.size else img.resize(size, Image.Resampling.BICUBIC)


# ----------------------------------------------------------------------------
# Videos
# ----------------------------------------------------------------------------

def sample_indices(n_frames: int, source_fps: float, target_fps: float, max_frames: int) -> list[int]:
    """Uniformly spaced frame indices: target_fps over the clip, at most max_frames, at least 1."""
    duration = n_frames / source_fps
    count = max(1, min(max_frames, n_frames, round(duration * target_fps)))
    return sorted({min(n_frames - 1, int((i + 0.5) * n_frames / count)) for i in range(count)})


def load_video(path: str | Path, limits: MediaLimits = MediaLimits()) -> VideoClip:
    """Frames sampled uniformly at about video_fps (at most video_max_frames), and their real rate.

    OpenCV decodes first; a codec its FFmpeg build cannot decode (AV1 in most wheels) is read through PyAV.
    """
    p = _check_file(path, VIDEO, limits)
    try:
        clip = _load_video_cv2(p, limits)
        clip = clip if clip is not None else _load_video_av(p, limits)
    except MediaError:
        raise
    except Exception as e:
        raise MediaError(f"video file {p} cannot be decoded: {first_line(e)}") from None
    clip.source = p
    _add_sound(clip, p, limits)
    return clip


def _add_sound(clip: VideoClip, p: Path, limits: MediaLimits) -> None:
    """The clip's sound track, or why there is none (with the sound off, what the file would have given)."""
    if limits.video_audio != "off":
        clip.audio, clip.audio_note = video_audio(p, clip.duration_s, limits)
        return
    seconds = _track_seconds(p)
    heard = None if seconds is None else min(seconds or clip.duration_s, clip.duration_s, limits.audio_max_seconds)
    clip.audio_note = NO_AUDIO_TRACK if heard is None else (
        f"{SOUND_OFF}: its {heard:.1f} s sound track is not heard (--video-audio on hears it)")


def _track_seconds(p: Path) -> float | None:
    """The length of a file's first audio stream from its header (0.0 when the header gives none), None without one."""
    import av

    try:
        with av.open(str(p)) as container:
            stream = next((s for s in container.streams if s.type == "audio"), None)
            if stream is None:
                return None
            return _stream_seconds(stream) or (container.duration or 0) / 1e6
    except Exception:
        return None


def _load_video_cv2(p: Path, limits: MediaLimits) -> VideoClip | None:
    """The clip, or None when OpenCV opens no stream or decodes too few of the frames its header promises."""
    import cv2

    cap = cv2.VideoCapture(str(p))
    try:
        if not cap.isOpened():
            return None
        _check_dimensions(p, int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                          limits)
        source_fps = cap.get(cv2.CAP_PROP_FPS)
        n_frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if n_frames <= 0:  # some containers (webm) do not record it: count by decoding
            n_frames = _count_frames(cap, source_fps)
            cap.release()
            cap = cv2.VideoCapture(str(p))
        if n_frames == 0:
            return None
        source_fps = _checked_fps(p, n_frames, source_fps, _container_seconds(p))
        wanted = sample_indices(n_frames, source_fps, limits.video_fps, limits.video_max_frames)
        frames = _read_frames(cap, wanted, limits.video_frame_pixels[1])
    finally:
        cap.release()
    return _clip(p, frames, wanted, n_frames, source_fps) if len(frames) >= _ENOUGH * len(wanted) else None


def _load_video_av(p: Path, limits: MediaLimits) -> VideoClip:
    import av

    try:  # an mp4 whose edit list is off (a zero time scale) would show FFmpeg only its first frame
        container = av.open(str(p), options={"ignore_editlist": "1"})
    except Exception:
        raise MediaError(f"video file {p} cannot be decoded (not a valid {p.suffix} video)") from None
    with container:
        if not container.streams.video:
            raise MediaError(f"video file {p} has no video stream")
        stream = container.streams.video[0]
        _check_dimensions(p, stream.codec_context.width, stream.codec_context.height, limits)
        seconds = _container_seconds(p)  # read without ignoring the edit list: the duration the file declares
        n_frames = stream.frames or _counted_frames(p, container, stream, seconds)
        source_fps = _checked_fps(p, n_frames, float(stream.average_rate or 0), seconds)
        wanted = sample_indices(n_frames, source_fps, limits.video_fps, limits.video_max_frames)
    with av.open(str(p), options={"ignore_editlist": "1"}) as container:  # counting consumed the packets
        frames = _keep_frames(_decoded_av(container, container.streams.video[0]),
                              lambda frame: frame.to_ndarray(format="rgb24"), wanted, limits.video_frame_pixels[1])
    if not frames:
        raise MediaError(f"video file {p} has no decodable frames")
    return _clip(p, frames, wanted, n_frames, source_fps)


def _counted_frames(p: Path, container, stream, seconds: float | None) -> int:
    """The frames of a stream whose header does not count them (webm), by reading its packets (no decoding),
    checked against the duration the header declares: a cut-off file holds fewer."""
    counted = sum(1 for packet in container.demux(stream) if packet.size)
    if counted == 0:
        raise MediaError(f"video file {p} has no decodable frames")
    rate = float(stream.average_rate or 0)
    if rate and seconds and counted < _ENOUGH * seconds * rate:
        raise MediaError(f"video file {p} is truncated: its header declares {seconds:.1f} s, "
                         f"{counted / rate:.1f} s of frames could be read")
    return counted


def _check_dimensions(p: Path, width: int, height: int, limits: MediaLimits) -> None:
    if width * height > limits.max_input_pixels:
        raise MediaError(f"video file {p} has absurd dimensions: {width}x{height} frames, beyond the "
                         f"{limits.max_input_pixels:,}-pixel limit")


def _usable_fps(fps: float | None) -> bool:
    return bool(fps) and math.isfinite(fps) and 0 < fps < 1000


def _checked_fps(p: Path, n_frames: int, header_fps: float, seconds: float | None) -> float:
    """The frame rate, checked against the container's duration (`seconds`): a broken time scale in a track's
    header (zero, or wrong) gives a rate that makes a 2 s clip last hours; the container's own duration is kept."""
    if seconds and (not _usable_fps(header_fps) or abs(n_frames / header_fps - seconds) > max(1.0, 0.25 * seconds)):
        header_fps = n_frames / seconds
    if not _usable_fps(header_fps):
        raise MediaError(f"video file {p} records no usable frame rate or duration in its header")
    if n_frames / header_fps > VIDEO_MAX_SECONDS:
        raise MediaError(f"video file {p} lasts {n_frames / header_fps / 3600:.1f} h, over the "
                         f"{VIDEO_MAX_SECONDS / 3600:.0f} h limit")
    return header_fps


def _container_seconds(p: Path) -> float | None:
    """The duration of the video the container records (PyAV reads only the header), None when it records none.

    That is the container's duration; with a sound track, which may run on past the last frame, it is the video
    stream's own where the header gives one that ends sooner."""
    import av

    try:
        with av.open(str(p)) as container:
            seconds = container.duration / 1e6 if container.duration and container.duration > 0 else None
            if seconds and container.streams.audio and container.streams.video:
                own = _stream_seconds(container.streams.video[0])
                seconds = own if own and own < seconds else seconds
            return seconds
    except Exception:
        return None


def _stream_seconds(stream) -> float | None:
    """A stream's own duration: its header's, or the DURATION tag Matroska writers add ("00:00:02.000000000")."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    try:
        h, m, sec = (stream.metadata.get("DURATION") or "").split(":")
        return int(h) * 3600 + int(m) * 60 + float(sec)
    except ValueError:
        return None


_ENOUGH = 0.9  # of the sampled frames a header promises; fewer is a truncated file


def _clip(p: Path, frames: list[np.ndarray], wanted: list[int], n_frames: int, source_fps: float) -> VideoClip:
    if len(frames) < _ENOUGH * len(wanted):
        raise MediaError(f"video file {p} is truncated: {len(frames)} of {len(wanted)} sampled frames "
                         f"could be decoded")
    if len(frames) < len(wanted):  # frame counts in headers can be a little off at the end
        log.warning("video %s: decoded %d of %d sampled frames (the file may be truncated)",
                    p, len(frames), len(wanted))
    duration = n_frames / source_fps
    return VideoClip(np.stack(frames), fps=len(frames) / duration, source_fps=source_fps, duration_s=duration)


def _count_frames(cap, source_fps: float) -> int:
    n = 0
    fps = source_fps if _usable_fps(source_fps) else 1000
    limit = int(VIDEO_MAX_SECONDS * fps) + 1
    while n <= limit and cap.grab():
        n += 1
    return n


def _read_frames(cap, wanted: list[int], max_pixels: int) -> list[np.ndarray]:
    """Decode sequentially (seeking is unreliable across codecs), keeping the wanted frames."""
    import cv2

    def rgb(_):
        ok, bgr = cap.retrieve()
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if ok and bgr is not None else None

    return _keep_frames(iter(cap.grab, False), rgb, wanted, max_pixels)


def _decoded_av(container, stream):
    """PyAV's frames until the stream ends or stops decoding (a cut-off file)."""
    frames = container.decode(stream)
    while True:
        try:
            yield next(frames)
        except StopIteration:
            return
        except Exception as e:  # PyAV raises av.error.* on corrupt packets
            log.warning("video %s stops decoding: %s", container.name, first_line(e))
            return


def _keep_frames(decoded, to_rgb, wanted: list[int], max_pixels: int) -> list[np.ndarray]:
    """The wanted frames (by index) of a decoded stream, converted by to_rgb (None: failed) and fitted."""
    frames: list[np.ndarray] = []
    targets = iter(wanted)
    target = next(targets, None)
    for index, item in enumerate(decoded):
        if target is None:
            break
        if index == target:
            rgb = to_rgb(item)
            if rgb is not None:
                frames.append(_fit_frame(rgb, max_pixels))
            target = next(targets, None)
    return frames


# ----------------------------------------------------------------------------
# Audio
# ----------------------------------------------------------------------------

def load_audio(path: str | Path, limits: MediaLimits = MediaLimits()) -> AudioClip:
    """Mono float32 at 16 kHz, cut to audio_max_seconds (with a warning)."""
    p = _check_file(path, AUDIO, limits)
    try:
        samples, rate, full_duration = _decode_audio(p, limits.audio_max_seconds)
    except MediaError:
        raise
    except Exception as e:
        raise MediaError(f"audio file {p} cannot be decoded: {first_line(e)}") from None
    return _finish_audio(samples, rate, full_duration, limits, str(p))


def _decode_audio(p: Path, max_seconds: float) -> tuple[np.ndarray, int, float]:
    """(mono samples up to max_seconds, their rate, the full duration)."""
    import soundfile as sf

    try:
        info = sf.info(str(p))
    except Exception:
        info = None
    if info is None or _streamed_wav(p):  # formats libsndfile does not read (m4a, aac), or sizes it: PyAV
        return _decode_audio_av(p, max_seconds)
    if info.samplerate <= 0 or info.frames <= 0:
        raise MediaError(f"audio file {p} has no samples (zero length)")
    wanted = min(info.frames, int(max_seconds * info.samplerate) + 1)
    data, rate = sf.read(str(p), dtype="float32", always_2d=True, frames=wanted)
    if len(data) < 0.9 * wanted:  # the header promised more than the file holds
        raise MediaError(f"audio file {p} is truncated: its header declares {wanted / rate:.2f} s, "
                         f"{len(data) / rate:.2f} s could be decoded")
    return data.mean(axis=1), rate, info.frames / info.samplerate


# A WAV written to a pipe cannot go back to fill in its size: writers leave 0 or a maximal value there.
_STREAMED_RIFF_SIZES = (0, 0xFFFFFFFF, 0x7FFFFFFF, 0x7FFFF000)


def _streamed_wav(p: Path) -> bool:
    """True for a WAV whose size field is a streaming placeholder; MediaError when the header declares more
    bytes than the file holds (libsndfile quietly reads a cut-off file)."""
    with open(p, "rb") as f:
        head = f.read(12)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return False
    field = int.from_bytes(head[4:8], "little")
    if field in _STREAMED_RIFF_SIZES:
        return True
    if field + 8 > p.stat().st_size:
        raise MediaError(f"audio file {p} is truncated: its header declares {field + 8} bytes, "
                         f"the file has {p.stat().st_size}")
    return False


def _decode_audio_av(p: Path, max_seconds: float) -> tuple[np.ndarray, int, float]:
    import av

    try:
        container = av.open(str(p))
    except Exception as e:
        raise MediaError(f"audio file {p} cannot be decoded: {first_line(e)}") from None
    with container:
        stream = next((s for s in container.streams if s.type == "audio"), None)
        if stream is None:
            raise MediaError(f"audio file {p} has no audio stream")
        samples = _resampled(container, stream, max_seconds)
        full = float(stream.duration * stream.time_base) if stream.duration else samples.size / AUDIO_SAMPLING_RATE
    return samples, AUDIO_SAMPLING_RATE, full


def _resampled(container, stream, max_seconds: float) -> np.ndarray:
    """An audio stream decoded to mono float32 at AUDIO_SAMPLING_RATE, up to a little past max_seconds."""
    import av

    resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_SAMPLING_RATE)
    chunks, total = [], 0
    limit = int(max_seconds * AUDIO_SAMPLING_RATE) + 1
    for frame in container.decode(stream):
        for out in resampler.resample(frame):
            chunk = out.to_ndarray().reshape(-1)
            chunks.append(chunk)
            total += chunk.size
        if total > limit:
            break
    return (np.concatenate(chunks) if chunks else np.zeros(0, np.float32)).astype(np.float32)


def _start_s(stream) -> float:
    return float(stream.start_time * stream.time_base) if stream is not None and stream.start_time else 0.0


def video_audio(path: str | Path, duration_s: float,
                limits: MediaLimits = MediaLimits()) -> tuple[AudioClip | None, str]:
    """A video file's sound track as the judge hears it: mono at 16 kHz over the span its frames cover (from the
    video's start, `duration_s` long), within audio_max_seconds; (None, why) where there is none to hear.

    A missing or undecodable track leaves a valid video: the reason is returned, nothing is raised."""
    import av

    try:
        container = av.open(str(path))
    except Exception as e:
        return None, f"audio track undecodable: {first_line(e)}"
    with container:
        stream = next((s for s in container.streams if s.type == "audio"), None)
        if stream is None:
            return None, NO_AUDIO_TRACK
        # Where the track starts against the frames: a later start is silence first, an earlier one is cut.
        offset = _start_s(stream) - _start_s(container.streams.video[0] if container.streams.video else None)
        span = min(duration_s, limits.audio_max_seconds)
        try:
            samples = _resampled(container, stream, max(0.0, span - offset))
        except Exception as e:
            return None, f"audio track undecodable: {first_line(e)}"
    shift = int(round(abs(offset) * AUDIO_SAMPLING_RATE))
    samples = np.concatenate([np.zeros(shift, np.float32), samples]) if offset > 0 else samples[shift:]
    limit = int(span * AUDIO_SAMPLING_RATE)
    truncated = duration_s > limits.audio_max_seconds + 1e-3 and samples.size > limit
    samples = samples[:limit]
    if samples.size == 0:
        return None, "audio track holds no samples"
    if not np.all(np.isfinite(samples)):
        return None, "audio track holds non-finite samples"
    if truncated:
        log.warning("video %s: its sound is heard for the first %.1f s only (the audio bound)", path, span)
    return AudioClip(samples, AUDIO_SAMPLING_RATE, samples.size / AUDIO_SAMPLING_RATE, truncated), ""


def _finish_audio(samples: np.ndarray, rate: int, full_duration: float, limits: MediaLimits,
                  name: str) -> AudioClip:
    if samples.size == 0 or full_duration <= 0:
        raise MediaError(f"audio file {name} has no samples (zero length)")
    if not np.all(np.isfinite(samples)):
        raise MediaError(f"audio file {name} holds non-finite samples")
    if rate != AUDIO_SAMPLING_RATE:
        import soxr

        samples = soxr.resample(samples, rate, AUDIO_SAMPLING_RATE).astype(np.float32)
    limit = int(limits.audio_max_seconds * AUDIO_SAMPLING_RATE)
    truncated = full_duration > limits.audio_max_seconds + 1e-3
    if truncated:
        log.warning("audio %s lasts %.1f s; only the first %.1f s are judged", name, full_duration,
                    limits.audio_max_seconds)
    samples = samples[:limit]
    return AudioClip(samples, AUDIO_SAMPLING_RATE, samples.size / AUDIO_SAMPLING_RATE, truncated)


# ----------------------------------------------------------------------------
# Items
# ----------------------------------------------------------------------------

def load_media(item: MediaItem, limits: MediaLimits = MediaLimits()):
    """Decode one media item (from its path, or validate its decoded data)."""
    if item.data is None:
        loader = {IMAGE: load_image, VIDEO: load_video, AUDIO: load_audio}[item.kind]
        return loader(item.path, limits)
    name = item.path or f"<decoded {item.kind}>"
    if item.kind == IMAGE:
        return _image_from_data(item.data, name, limits)
    if item.kind == VIDEO:
        clip = _video_from_data(item.data, item.fps, name, limits)
        clip.source = Path(item.path) if item.path and Path(item.path).is_file() else None
        if clip.source is not None:  # decoded frames of a file: its sound is still in the file
            _add_sound(clip, clip.source, limits)
        return clip
    rate = item.sampling_rate
    if not rate or rate <= 0:
        raise MediaError(f"{name}: decoded audio needs a sampling_rate")
    samples = np.asarray(item.data, dtype=np.float32)
    if samples.ndim == 2:  # (samples, channels)
        samples = samples.mean(axis=1)
    return _finish_audio(samples.reshape(-1), rate, samples.shape[0] / rate, limits, name)


def _image_from_data(data, name: str, limits: MediaLimits):
    from PIL import Image

    if isinstance(data, Image.Image):
        img = data.convert("RGB")
    else:
        arr = np.asarray(data)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.size == 0:
            raise MediaError(f"{name}: a decoded image must be an (H, W, 3) array, got shape {arr.shape}")
        img = Image.fromarray(arr.astype(np.uint8)[..., :3])
    if img.width * img.height > limits.max_input_pixels:
        raise MediaError(f"{name} is {img.width}x{img.height} pixels, beyond the "
                         f"{limits.max_input_pixels:,}-pixel limit")
    return _resize_image(img, limits.image_max_pixels)


def _video_from_data(data, fps: float | None, name: str, limits: MediaLimits) -> VideoClip:
    arr = np.asarray(data)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[0] == 0:
        raise MediaError(f"{name}: decoded video must be a (T, H, W, 3) array, got shape {arr.shape}")
    if not fps or fps <= 0:
        raise MediaError(f"{name}: decoded video needs its fps")
    idx = sample_indices(arr.shape[0], fps, limits.video_fps, limits.video_max_frames)
    frames = [_fit_frame(arr[i].astype(np.uint8), limits.video_frame_pixels[1]) for i in idx]
    duration = arr.shape[0] / fps
    return VideoClip(np.stack(frames), fps=len(frames) / duration, source_fps=fps, duration_s=duration)


# ----------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------

# (video codec, audio codec) by container; every one is in PyAV's own FFmpeg build.
_WRITE_CODECS = {".mp4": ("libx264", "aac"), ".mov": ("libx264", "aac"), ".mkv": ("libx264", "libmp3lame"),
                 ".webm": ("libvpx-vp9", "libopus")}


def write_video(target, frames, fps: float, audio: np.ndarray | None = None, audio_rate: int = AUDIO_SAMPLING_RATE,
                container: str = ".mp4") -> None:
    """Encode RGB frames ((T, H, W, 3) uint8, at `fps`) and an optional sound track (float32 samples, mono or
    (samples, channels), at `audio_rate`) into `target`: a path, or a binary file object in `container`'s format."""
    import av
    from fractions import Fraction

    suffix = Path(target).suffix.lower() if isinstance(target, (str, Path)) else container
    video_codec, audio_codec = _WRITE_CODECS[suffix]
    fmt = None if isinstance(target, (str, Path)) else {".mov": "mov", ".mkv": "matroska"}.get(suffix, suffix[1:])
    with av.open(target if not isinstance(target, Path) else str(target), "w", format=fmt) as out:
        stream = out.add_stream(video_codec, rate=Fraction(fps).limit_denominator(1000))
        stream.height, stream.width = (d - d % 2 for d in np.asarray(frames).shape[1:3])
        stream.pix_fmt = "yuv420p"
        sound = None
        if audio is not None:
            samples = np.asarray(audio, np.float32).reshape(len(audio), -1)
            layout = "mono" if samples.shape[1] == 1 else "stereo"
            sound = out.add_stream(audio_codec, rate=audio_rate, layout=layout)
        for frame in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(
                frame[:stream.height, :stream.width]), format="rgb24")))
        out.mux(stream.encode())
        if sound is not None:
            # "flt" is packed: the channels interleaved, sample by sample, in one plane
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples).reshape(1, -1), format="flt",
                                               layout=layout)
            frame.sample_rate = audio_rate
            out.mux(sound.encode(frame))
            out.mux(sound.encode())
