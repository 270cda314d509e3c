"""Any OpenAI-compatible chat-completions server as a backend: `vllm serve`, `python -m rrm serve`, hosted APIs.

    judge = Judge.from_endpoint("http://gpu-box:8000/v1", "Omni-RRM/Omni-RRM-7B", api_key_env="RRM_KEY")

Media go as parts. `media="omni"` (the default) sends what vLLM's Qwen2.5-Omni
chat API accepts: an image as a lossless PNG `image_url`, a video as its own
file in a `video_url` (the server samples its frames, so the model sees a
video, not stills), audio as a float WAV `input_audio`, all as data URLs.
`media="frames"` is for hosted chat APIs without video or Omni support: JPEG
images, a video as its frames at about 1 fps (at most 35, longest side
512 px) and a 16-bit WAV.

Retries with exponential backoff on 429, 5xx, timeouts and malformed replies;
a bad key, an unknown model or an endpoint that cannot be reached stops the
work with one line (every other call would fail the same way). The key is
read from an environment variable and appears in no output, log or error.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import logging
import os
import queue
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .errors import RRMError
from .generation import BackendUnavailable, GenerationSettings, Output, Progress
from .inputs import Row, has_sound
from .media import AudioClip, MediaLimits, VideoClip, write_video
from .redact import redact, register_secret
from .schema import AUDIO, IMAGE, VIDEO, Timing

log = logging.getLogger(__name__)

MEDIA_MODES = ("omni", "frames")
FRAME_MAX_SIDE = 512
JPEG_QUALITY = 90
_RETRY_STATUS = {408, 409, 429} | set(range(500, 600))
UNREACHABLE_RETRIES = 2  # a refused connection or unknown host: a blip, or no server at all
_VIDEO_MIME = {".mp4": "video/mp4", ".webm": "video/webm", ".mkv": "video/x-matroska", ".mov": "video/quicktime",
               ".avi": "video/x-msvideo"}


class EndpointError(BackendUnavailable):
    """The endpoint cannot serve at all (bad key, unknown model, unreachable): stop."""


class CallFailed(RRMError):
    """One call failed after every retry; the item stays undone and a rerun tries it again."""


@dataclass
class Endpoint:
    """One model behind an OpenAI-compatible /chat/completions URL."""

    model: str
    base_url: str
    api_key_env: str | None = "OPENAI_API_KEY"  # may be unset for a local server that wants no key
    timeout_s: float = 120.0
    max_retries: int = 5
    backoff_s: float = 2.0  # first wait; doubles per retry (a Retry-After header wins, up to 60 s)
    concurrency: int = 4
    price_in: float = 0.0  # per million prompt tokens, for the cost report
    price_out: float = 0.0  # per million completion tokens

    @property
    def url(self) -> str:
        base = self.base_url.rstrip("/")
        return base if base.endswith("/chat/completions") else base + "/chat/completions"

    @property
    def models_url(self) -> str:
        return self.url[:-len("/chat/completions")] + "/models"


@dataclass
class Reply:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


def request_body(model: str, messages: list[dict], settings: GenerationSettings, stream: bool = False,
                 sound: bool = False) -> dict:
    """GenerationSettings as a chat-completions request (vLLM's extensions only where they are set). `sound`: a
    video of the request is to be heard with its sound track (vLLM's and rrm serve's `use_audio_in_video`)."""
    body = {"model": model, "messages": messages, "max_tokens": settings.max_new_tokens,
            "temperature": settings.temperature, "seed": settings.seed}
    if sound:
        body["mm_processor_kwargs"] = {"use_audio_in_video": True}
    if settings.sampling:
        body["top_p"] = settings.top_p
        if settings.top_k:
            body["top_k"] = settings.top_k
        if settings.min_p:
            body["min_p"] = settings.min_p
    if settings.min_new_tokens:
        body["min_tokens"] = settings.min_new_tokens
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    return body


class ChatClient:
    def __init__(self, endpoint: Endpoint, sleep=time.sleep):
        self.endpoint = endpoint
        self._key = os.environ.get(endpoint.api_key_env) if endpoint.api_key_env else None
        register_secret(self._key)  # whatever a server echoes back, the key is never shown
        self._sleep = sleep

    def __repr__(self) -> str:  # never show the key
        return f"ChatClient({self.endpoint.model} at {self.endpoint.url})"

    def complete(self, messages: list[dict], settings: GenerationSettings, sound: bool = False) -> Reply:
        data = json.dumps(request_body(self.endpoint.model, messages, settings, sound=sound)).encode("utf-8")
        return self._with_retries(lambda: _reply(self._open(data).read()))

    def stream(self, messages: list[dict], settings: GenerationSettings,
               cancel: threading.Event | None = None, sound: bool = False) -> Iterator[str | Reply]:
        """The reply's text pieces as the server sends them, then the whole Reply (a retry only before the first)."""
        data = json.dumps(request_body(self.endpoint.model, messages, settings, stream=True, sound=sound)
                          ).encode("utf-8")
        response = self._with_retries(lambda: self._open(data))
        pieces, usage = [], {}
        with response:
            for event in _sse_events(response):
                if cancel is not None and cancel.is_set():
                    break
                piece, usage = _delta(event), event.get("usage") or usage
                if piece:
                    pieces.append(piece)
                    yield piece
        yield Reply("".join(pieces), int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))

    def models(self) -> list[dict]:
        """The server's model cards (GET /models); [] when it lists none."""
        request = urllib.request.Request(self.endpoint.models_url, headers=self._headers())
        try:
            with urllib.request.urlopen(request, timeout=min(self.endpoint.timeout_s, 10.0)) as response:
                cards = json.loads(response.read()).get("data")
        except (OSError, ValueError, AttributeError, http.client.HTTPException):
            return []
        return cards if isinstance(cards, list) else []

    def _with_retries(self, call):
        problem, tries = _Retry("not tried"), 0
        for attempt in range(self.endpoint.max_retries + 1):
            if attempt:
                if problem.unreachable and attempt > UNREACHABLE_RETRIES:
                    break  # nothing listens there: say so in seconds, not after the whole backoff
                wait = self.endpoint.backoff_s * 2 ** (attempt - 1)
                self._sleep(min(problem.after, 60.0) if problem.after is not None else wait)
            tries += 1
            try:
                return call()
            except _Retry as e:
                problem = e
                log.info("%s: %s (attempt %d)", self.endpoint.model, e, attempt + 1)
        tries = f"after {tries} tries"
        if problem.unreachable:
            raise EndpointError(f"{problem} {tries}")
        raise CallFailed(f"{self.endpoint.model}: {problem} {tries}")

    def _headers(self) -> dict:
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        return headers

    def _open(self, data: bytes):
        request = urllib.request.Request(self.endpoint.url, data=data, headers=self._headers(), method="POST")
        try:
            return urllib.request.urlopen(request, timeout=self.endpoint.timeout_s)
        except urllib.error.HTTPError as e:
            raise self._http_error(e) from None
        except (TimeoutError, socket.timeout):
            raise _Retry(f"no reply within {self.endpoint.timeout_s:g} s") from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, (TimeoutError, socket.timeout)):
                raise _Retry(f"no reply within {self.endpoint.timeout_s:g} s") from None
            raise _Retry(f"cannot reach {self.endpoint.url} ({e.reason})", unreachable=True) from None
        except (ConnectionError, http.client.HTTPException) as e:
            raise _Retry(f"the connection broke ({type(e).__name__})") from None

    def _http_error(self, e: urllib.error.HTTPError) -> Exception:
        detail = _error_detail(e)
        if e.code in (401, 403):
            where = f"${self.endpoint.api_key_env}" if self.endpoint.api_key_env else "no key"
            return EndpointError(f"{self.endpoint.url} refused the API key ({where}): HTTP {e.code} {detail}".strip())
        if e.code == 404 or (e.code == 400 and "model" in detail.lower()):
            return EndpointError(f"{self.endpoint.url} does not serve model {self.endpoint.model!r}: "
                                 f"HTTP {e.code} {detail}".strip())
        if e.code in _RETRY_STATUS:
            return _Retry(f"HTTP {e.code}", after=_seconds(e.headers.get("Retry-After") if e.headers else None))
        return CallFailed(f"{self.endpoint.model}: HTTP {e.code} {detail}".strip())


class _Retry(Exception):
    """A transient failure: wait (`after` seconds when the server said so) and try again."""

    def __init__(self, message: str, after: float | None = None, unreachable: bool = False):
        super().__init__(message)
        self.after, self.unreachable = after, unreachable


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:  # an HTTP date: fall back to our own backoff
        return None


def _error_detail(e: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(e.read() or b"{}")
        message = body.get("error", {}).get("message") if isinstance(body.get("error"), dict) else body.get("error")
        return redact(message or "")[:200]
    except (ValueError, AttributeError, OSError):
        return ""


def _reply(raw: bytes) -> Reply:
    try:
        body = json.loads(raw)
        text = body["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise _Retry("malformed reply (not a chat completion)") from None
    if not isinstance(text, str):
        raise _Retry("malformed reply (no text content)")
    usage = body.get("usage") or {}
    return Reply(text, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))


def _sse_events(response) -> Iterator[dict]:
    """The JSON events of a server-sent-events chat stream, up to `data: [DONE]`."""
    for raw in response:
        line = raw.decode("utf-8", "replace").strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            event = json.loads(data)
        except ValueError:
            raise CallFailed(f"malformed stream event: {data[:80]!r}") from None
        if isinstance(event, dict) and event.get("error"):
            raise CallFailed(f"the server stopped the stream: {redact(str(event['error']))[:200]}")
        if isinstance(event, dict):
            yield event


def _delta(event: dict) -> str:
    choices = event.get("choices") or []
    delta = (choices[0].get("delta") or {}) if choices and isinstance(choices[0], dict) else {}
    piece = delta.get("content")
    return piece if isinstance(piece, str) else ""


# ------------------------------------------------------------------ media

def openai_messages(messages: list[dict], media: Sequence[tuple[str, object]], mode: str = "omni") -> list[dict]:
    """rrm chat messages (media placeholders) with decoded media, as OpenAI chat messages."""
    if mode not in MEDIA_MODES:
        raise RRMError(f"unknown media mode {mode!r}; known: {', '.join(MEDIA_MODES)}")
    pending = iter(media)
    out = []
    for message in messages:
        parts = []
        for part in message["content"]:
            if part["type"] == "text":
                parts.append({"type": "text", "text": part["text"]})
            else:
                kind, obj = next(pending)
                parts += _media_parts(kind, obj, mode)
        if message["role"] == "system":  # some servers take a system turn as a string only
            out.append({"role": "system", "content": "\n".join(p["text"] for p in parts)})
        else:
            out.append({"role": message["role"], "content": parts})
    return out


def _media_parts(kind: str, obj, mode: str) -> list[dict]:
    if kind == IMAGE:
        return [_image_part(obj, lossless=mode == "omni")]
    if kind == VIDEO and mode == "omni":
        return [_video_part(obj)]
    if kind == VIDEO:
        clip: VideoClip = obj
        from PIL import Image

        sound = " Its sound track follows them." if clip.audio is not None else ""
        note = {"type": "text", "text": f"(A video of {clip.duration_s:.1f} s: {len(clip.frames)} frames "
                                        f"in order, about {clip.fps:.2g} per second.{sound})"}
        frames = [_image_part(Image.fromarray(f), max_side=FRAME_MAX_SIDE) for f in clip.frames]
        return [note, *frames, *([_audio_part(clip.audio)] if clip.audio is not None else [])]
    if kind == AUDIO:
        return [_audio_part(obj, exact=mode == "omni")]
    raise RRMError(f"unknown media kind {kind!r}")


def _data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def _image_part(img, max_side: int | None = None, lossless: bool = False) -> dict:
    img = img.convert("RGB")
    if max_side and max(img.size) > max_side:
        img = img.copy()
        img.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    if lossless:
        img.save(buf, format="PNG")
    else:
        img.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return {"type": "image_url", "image_url": {"url": _data_url("image/png" if lossless else "image/jpeg",
                                                                buf.getvalue())}}


def _video_part(clip: VideoClip) -> dict:
    if clip.source is not None:
        mime = _VIDEO_MIME.get(clip.source.suffix.lower(), "video/mp4")
        data = clip.source.read_bytes()
    else:  # decoded frames only: encode them (H.264 in MP4, at their own rate)
        buf = io.BytesIO()
        write_video(buf, clip.frames, max(1, round(clip.fps)))
        mime, data = "video/mp4", buf.getvalue()
    return {"type": "video_url", "video_url": {"url": _data_url(mime, data)}}


def _audio_part(clip: AudioClip, exact: bool = False) -> dict:
    import soundfile

    buf = io.BytesIO()
    soundfile.write(buf, clip.samples, clip.sampling_rate, format="WAV", subtype="FLOAT" if exact else "PCM_16")
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(buf.getvalue()).decode("ascii"),
                                                   "format": "wav"}}


# ------------------------------------------------------------------ the backend

class EndpointBackend:
    """Rows sent as chat completions, `concurrency` at a time; a stream uses the endpoint's own stream."""

    name = "endpoint"

    def __init__(self, endpoint: Endpoint, media: str = "omni", sleep=time.sleep):
        if media not in MEDIA_MODES:
            raise RRMError(f"unknown media mode {media!r}; known: {', '.join(MEDIA_MODES)}")
        self.endpoint, self.media = endpoint, media
        self.client = ChatClient(endpoint, sleep)
        self.judge_config = self._served_judge_config()

    def _served_judge_config(self) -> dict:
        """What `rrm serve` says of its checkpoint (its prompt format, rubric, bounds); {} from other servers."""
        for card in self.client.models():
            if isinstance(card, dict) and card.get("id") == self.endpoint.model:
                recorded = (card.get("rrm") or {}).get("judge_config")
                return recorded if isinstance(recorded, dict) else {}
        return {}

    @property
    def description(self) -> str:
        return f"{self.endpoint.model} · endpoint {self.endpoint.url}"

    def info(self) -> dict:
        return {"backend": self.name, "model": self.endpoint.model, "adapter": None, "endpoint": self.endpoint.url,
                "media": self.media}

    def _messages(self, row: Row) -> list[dict]:
        messages, media = row
        return openai_messages(messages, media, self.media)

    def _sound(self, row: Row) -> bool:
        """Whether the server is to hear a video's own sound (in frames mode the track goes as an audio part)."""
        return self.media == "omni" and has_sound(row[1])

    def _call(self, row: Row, settings: GenerationSettings, cancel: threading.Event | None) -> Output:
        if cancel is not None and cancel.is_set():
            raise RRMError("generation was cancelled")
        started = time.perf_counter()
        reply = self.client.complete(self._messages(row), settings, self._sound(row))
        return Output(reply.text, _timing(reply, started))

    def generate(self, rows: Sequence[Row], settings: GenerationSettings, limits: MediaLimits,
                 cancel: threading.Event | None = None) -> list[Output]:
        if len(rows) == 1:
            return [self._call(rows[0], settings, cancel)]
        with ThreadPoolExecutor(max_workers=max(1, min(self.endpoint.concurrency, len(rows)))) as pool:
            futures = [pool.submit(self._call, row, settings, cancel) for row in rows]
            try:
                return [f.result() for f in futures]
            finally:
                for f in futures:
                    f.cancel()

    def stream(self, rows: Sequence[Row], settings: GenerationSettings, limits: MediaLimits,
               cancel: threading.Event | None = None) -> Iterator[Progress]:
        cancel = cancel or threading.Event()
        texts, outputs = [""] * len(rows), [None] * len(rows)
        events: queue.Queue = queue.Queue()

        def work(i: int, row: Row):
            started, first = time.perf_counter(), None
            try:
                for piece in self.client.stream(self._messages(row), settings, cancel, self._sound(row)):
                    if isinstance(piece, Reply):
                        outputs[i] = Output(piece.text, _timing(piece, started, first))
                    else:
                        first = first or time.perf_counter()
                        events.put((i, piece))
                events.put((i, None))
            except BaseException as e:  # handed to the consumer below
                events.put((i, e))

        workers = [threading.Thread(target=work, args=(i, row), daemon=True) for i, row in enumerate(rows)]
        for w in workers:
            w.start()
        try:
            yield from _merged(events, texts, len(rows))
            yield Progress([o.text for o in outputs], outputs)
        finally:
            cancel.set()


def _merged(events: queue.Queue, texts: list[str], rows: int) -> Iterator[Progress]:
    """Each row's pieces as they come, until every row has ended; the first failure is raised."""
    ended = 0
    while ended < rows:
        i, piece = events.get()
        if isinstance(piece, BaseException):
            raise piece
        if piece is None:
            ended += 1
            continue
        texts[i] += piece
        yield Progress(list(texts))


def _timing(reply: Reply, started: float, first_at: float | None = None) -> Timing:
    """A call's timing; with the time of its first streamed piece, also time to first token and decode rate."""
    total = time.perf_counter() - started
    ttft = first_at - started if first_at is not None else None
    tokens = reply.completion_tokens or None
    rate = (tokens - 1) / (total - ttft) if ttft is not None and tokens and tokens > 1 and total > ttft else None
    return Timing(ttft_s=ttft, total_s=total, generated_tokens=tokens, tokens_per_s=rate,
                  prompt_tokens=reply.prompt_tokens or None)


__all__ = ["Endpoint", "EndpointBackend", "ChatClient", "EndpointError", "CallFailed", "Reply", "openai_messages",
           "request_body", "MEDIA_MODES"]
