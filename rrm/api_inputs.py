"""What HTTP clients send `rrm serve`, read into samples and chat rows: media only from the request itself.

A pair is a pairs-file record (rrm.pairs): query, response_a, response_b,
optional reference and id, and media. A media entry is one of
    {"kind": "image", "data": "<base64>"}            the bytes in the body
    {"kind": "image", "data": "data:image/png;base64,..."}
    {"kind": "image", "file": "cat.png"}             a multipart upload, by field name or file name
    "image": "cat.png"                               the pairs-file shorthand, resolved against the uploads
Every payload is written into the request's own folder and decoded under the
judge's media bounds. Nothing names a file on the server's disk or a URL to
fetch: a path that is not an upload, or an http(s) URL, is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import RRMError
from .generation import GenerationSettings
from .media import EXTENSIONS, MediaLimits, load_media
from .pairs import sample_from_record
from .schema import AUDIO, IMAGE, MEDIA_KINDS, VIDEO, MediaItem, Sample

_DEFAULT_SUFFIX = {IMAGE: ".png", VIDEO: ".mp4", AUDIO: ".wav"}
_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?(;[\w=.+-]+)*;base64,", re.I)
_AUDIO_FORMATS = {"wav", "mp3", "flac", "ogg", "m4a", "aac", "opus"}
_GENERATION_FIELDS = {"max_new_tokens": int, "temperature": float, "top_p": float, "top_k": int, "min_p": float,
                      "seed": int, "min_new_tokens": int}


class BadRequest(RRMError):
    """A request the server cannot take; the message is the one line the client gets back."""


@dataclass
class Uploads:
    """The media of one request: multipart files by field and file name, written under `folder` as they are used."""

    folder: Path
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # name -> (file name, bytes)

    def write(self, kind: str, data: bytes, name: str | None = None) -> str:
        """Store a payload under a name made of its content; returns the name (relative to the folder)."""
        if not data:
            raise BadRequest(f"the {kind} payload is empty")
        suffix = Path(name or "").suffix.lower()
        suffix = suffix if suffix in EXTENSIONS[kind] else _DEFAULT_SUFFIX[kind]
        stored = hashlib.sha256(data).hexdigest()[:24] + suffix
        (self.folder / stored).write_bytes(data)
        return stored

    def upload(self, kind: str, ref: str) -> str:
        if ref not in self.files:
            for upload_name, (filename, _) in self.files.items():
                if filename == ref:
                    ref = upload_name
                    break
            else:
                raise BadRequest(f"{kind} {ref!r} is not among the uploaded files: the server reads no path of its "
                                 f"own; upload the file (multipart) or send it as base64 \"data\"")
        filename, data = self.files[ref]
        return self.write(kind, data, filename)


def decode_base64(text: str, what: str) -> bytes:
    if not isinstance(text, str):
        raise BadRequest(f"{what} must be a base64 string")
    match = _DATA_URL.match(text)
    if match is None and text.lower().startswith(("http://", "https://", "file:", "ftp:")):
        raise BadRequest(f"{what} is a URL; the server fetches no URL: send the bytes as base64 or a data: URL")
    try:
        return base64.b64decode(text[match.end():] if match else text, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{what} is not valid base64") from None


def _media_entry(entry, index: int, uploads: Uploads) -> dict:
    where = f"media entry {index}"
    if not isinstance(entry, dict) or entry.get("kind") not in MEDIA_KINDS:
        raise BadRequest(f'{where} must be an object with "kind" ({", ".join(MEDIA_KINDS)}) and "data" or "file"')
    kind = entry["kind"]
    if "data" in entry:
        return {"kind": kind, "path": uploads.write(kind, decode_base64(entry["data"], f"{where} data"),
                                                     entry.get("name"))}
    ref = entry.get("file", entry.get("path"))
    if not isinstance(ref, str) or not ref:
        raise BadRequest(f'{where} needs "data" (base64) or "file" (the name of an upload)')
    return {"kind": kind, "path": uploads.upload(kind, ref)}


def pair_sample(record, uploads: Uploads) -> Sample:
    """A Sample from one pair record of a request."""
    if not isinstance(record, dict):
        raise BadRequest("a pair must be a JSON object with query, response_a and response_b")
    if not isinstance(record.get("media") or [], list):
        raise BadRequest('"media" must be a list of media entries')
    entries = list(record.get("media") or [])
    for kind in MEDIA_KINDS:  # the pairs-file shorthand: "image": "cat.png" or a list of names
        value = record.get(kind)
        if value is None:
            continue
        for ref in value if isinstance(value, list) else [value]:
            if isinstance(ref, str):
                entries.append({"kind": kind, "file": ref})
            else:  # {"data": ...} or {"file": ...}; anything else is refused below
                entries.append({"kind": kind, **ref} if isinstance(ref, dict) else ref)
    media = [_media_entry(e, i, uploads) for i, e in enumerate(entries)]
    for name in ("query", "response_a", "response_b", "reference", "id"):
        if record.get(name) is not None and not isinstance(record[name], (str, int)):
            raise BadRequest(f'"{name}" must be a string')
    clean = {k: record[k] for k in ("query", "response_a", "response_b", "reference", "id") if k in record}
    for name in ("query", "response_a", "response_b"):
        clean.setdefault(name, "")
    return sample_from_record({**clean, "media": media}, uploads.folder, confine=True)


def settings_from(body: dict, base: GenerationSettings) -> GenerationSettings:
    """The generation settings a request asks for, on top of the server's."""
    changes = {}
    for name, kind in _GENERATION_FIELDS.items():
        if body.get(name) is None:
            continue
        value = body[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
            raise BadRequest(f'"{name}" must be a number' + (" (a whole one)" if kind is int else ""))
        changes[name] = kind(value)
    settings = GenerationSettings(**{**base.__dict__, **changes})
    if settings.max_new_tokens < 1 or settings.temperature < 0 or not 0 < settings.top_p <= 1:
        raise BadRequest("max_new_tokens must be at least 1, temperature at least 0 and top_p in (0, 1]")
    if settings.min_p is not None and not 0 <= settings.min_p <= 1:
        raise BadRequest("min_p must be in [0, 1]")
    if settings.min_new_tokens is not None and settings.min_new_tokens < 1:
        raise BadRequest("min_new_tokens (min_tokens) must be at least 1")
    return settings


def flag(body: dict, name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise BadRequest(f'"{name}" must be true or false')
    return value


# ------------------------------------------------------------------ chat completions

def chat_row(messages, uploads: Uploads, limits: MediaLimits) -> tuple[list[dict], list[tuple[str, object]]]:
    """OpenAI chat messages as an rrm row: text parts kept, media parts decoded in order."""
    if not isinstance(messages, list) or not messages:
        raise BadRequest('"messages" must be a non-empty list')
    out, media = [], []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant"):
            raise BadRequest(f"message {i} must be an object with a role (system, user or assistant)")
        content = message.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(parts, list):
            raise BadRequest(f"message {i}: content must be a string or a list of parts")
        row_parts = []
        for j, part in enumerate(parts):
            kind, stored = _chat_part(part, f"message {i} part {j}", uploads)
            if kind == "text":
                row_parts.append({"type": "text", "text": stored})
            else:
                row_parts.append({"type": kind})
                media.append((kind, load_media(MediaItem(kind, str(uploads.folder / stored)), limits)))
        out.append({"role": message["role"], "content": row_parts})
    return out, media


def _chat_part(part, where: str, uploads: Uploads) -> tuple[str, str]:
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        raise BadRequest(f"{where} must be an object with a type")
    kind = part["type"]
    if kind == "text":
        if not isinstance(part.get("text"), str):
            raise BadRequest(f"{where}: text must be a string")
        return "text", part["text"]
    if kind in ("image_url", "video_url", "audio_url"):
        media_kind = {"image_url": IMAGE, "video_url": VIDEO, "audio_url": AUDIO}[kind]
        url = (part.get(kind) or {}).get("url") if isinstance(part.get(kind), dict) else part.get(kind)
        if not isinstance(url, str) or not _DATA_URL.match(url):
            raise BadRequest(f"{where}: the server fetches no URL; send {kind} as a data: URL (base64)")
        return media_kind, uploads.write(media_kind, decode_base64(url, f"{where} {kind}"))
    if kind == "input_audio":
        audio = part.get("input_audio") if isinstance(part.get("input_audio"), dict) else {}
        fmt = str(audio.get("format") or "wav").lower()
        if fmt not in _AUDIO_FORMATS:
            raise BadRequest(f"{where}: input_audio format {fmt!r} is not one of {', '.join(sorted(_AUDIO_FORMATS))}")
        return AUDIO, uploads.write(AUDIO, decode_base64(audio.get("data"), f"{where} input_audio"), f"a.{fmt}")
    raise BadRequest(f"{where}: unknown part type {kind!r} (text, image_url, video_url, input_audio, audio_url)")
