"""A client for OpenAI-compatible chat-completions endpoints (vLLM, hosted APIs), with the real media.

Media reach the endpoint as the teachers of the paper got them, and the audio
too (the research release never sent it): images as JPEG `image_url` parts,
video as frames at about 1 fps (at most 35, longest side 512 px), audio as a
WAV `input_audio` part.

Retries with exponential backoff on 429, 5xx, timeouts and malformed replies;
a bad key, an unknown model or an endpoint that cannot be reached stops the
stage with one line (every other call would fail the same way). The key is
read from an environment variable and appears in no output, log or error.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import logging
import os
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from rrm.errors import RRMError
from rrm.media import AudioClip, MediaLimits, VideoClip
from rrm.redact import redact, register_secret
from rrm.schema import AUDIO, IMAGE, VIDEO

log = logging.getLogger(__name__)

# What the paper's teachers were sent for video; frames also bound the request size.
TEACHER_LIMITS = MediaLimits(video_fps=1.0, video_max_frames=35, video_max_pixels=512 * 512)
FRAME_MAX_SIDE = 512
JPEG_QUALITY = 90
_RETRY_STATUS = {408, 409, 429} | set(range(500, 600))
UNREACHABLE_RETRIES = 2  # a refused connection or unknown host: a blip, or no server at all


class EndpointError(RRMError):
    """The endpoint cannot serve this stage at all (bad key, unknown model, unreachable): stop."""


class CallFailed(RRMError):
    """One call failed after every retry; the item stays undone and a rerun tries it again."""


@dataclass
class Endpoint:
    """One model behind an OpenAI-compatible /chat/completions URL."""

    model: str
    base_url: str
    api_key_env: str = "OPENAI_API_KEY"  # may be unset for a local server that wants no key
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


@dataclass
class Reply:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


class ChatClient:
    def __init__(self, endpoint: Endpoint, sleep=time.sleep):
        self.endpoint = endpoint
        self._key = os.environ.get(endpoint.api_key_env) if endpoint.api_key_env else None
        register_secret(self._key)  # whatever a server echoes back, the key is never shown
        self._sleep = sleep

    def __repr__(self) -> str:  # never show the key
        return f"ChatClient({self.endpoint.model} at {self.endpoint.url})"

    def complete(self, messages: list[dict], max_tokens: int, temperature: float = 0.0,
                 seed: int | None = None) -> Reply:
        body = {"model": self.endpoint.model, "messages": messages, "max_tokens": max_tokens,
                "temperature": temperature}
        if seed is not None:
            body["seed"] = seed
        data = json.dumps(body).encode("utf-8")
        problem, tries = _Retry("not tried"), 0
        for attempt in range(self.endpoint.max_retries + 1):
            if attempt:
                if problem.unreachable and attempt > UNREACHABLE_RETRIES:
                    break  # nothing listens there: say so in seconds, not after the whole backoff
                wait = self.endpoint.backoff_s * 2 ** (attempt - 1)
                self._sleep(min(problem.after, 60.0) if problem.after is not None else wait)
            tries += 1
            try:
                return _reply(self._post(data))
            except _Retry as e:
                problem = e
                log.info("%s: %s (attempt %d)", self.endpoint.model, e, attempt + 1)
        tries = f"after {tries} tries"
        if problem.unreachable:
            raise EndpointError(f"{problem} {tries}")
        raise CallFailed(f"{self.endpoint.model}: {problem} {tries}")

    def _post(self, data: bytes) -> bytes:
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        request = urllib.request.Request(self.endpoint.url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.endpoint.timeout_s) as response:
                return response.read()
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


# ------------------------------------------------------------------ media

def openai_messages(messages: list[dict], media: list[tuple[str, object]]) -> list[dict]:
    """rrm chat messages (media placeholders) with decoded media, as OpenAI chat messages."""
    pending = iter(media)
    out = []
    for message in messages:
        parts = []
        for part in message["content"]:
            if part["type"] == "text":
                parts.append({"type": "text", "text": part["text"]})
            else:
                kind, obj = next(pending)
                parts += _media_parts(kind, obj)
        if message["role"] == "system":  # some servers take a system turn as a string only
            out.append({"role": "system", "content": "\n".join(p["text"] for p in parts)})
        else:
            out.append({"role": message["role"], "content": parts})
    return out


def _media_parts(kind: str, obj) -> list[dict]:
    if kind == IMAGE:
        return [_image_part(obj)]
    if kind == VIDEO:
        clip: VideoClip = obj
        from PIL import Image

        note = {"type": "text", "text": f"(A video of {clip.duration_s:.1f} s: {len(clip.frames)} frames "
                                        f"in order, about {clip.fps:.2g} per second.)"}
        return [note] + [_image_part(Image.fromarray(f), FRAME_MAX_SIDE) for f in clip.frames]
    if kind == AUDIO:
        return [_audio_part(obj)]
    raise RRMError(f"unknown media kind {kind!r}")


def _image_part(img, max_side: int | None = None) -> dict:
    img = img.convert("RGB")
    if max_side and max(img.size) > max_side:
        img = img.copy()
        img.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY)
    url = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    return {"type": "image_url", "image_url": {"url": url}}


def _audio_part(clip: AudioClip) -> dict:
    import soundfile

    buf = io.BytesIO()
    soundfile.write(buf, clip.samples, clip.sampling_rate, format="WAV", subtype="PCM_16")
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(buf.getvalue()).decode("ascii"),
                                                   "format": "wav"}}
