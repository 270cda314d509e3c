"""Files of pairs: one JSON object per line, in and out.

In: {"id", "query", "response_a", "response_b", "reference",
     "image" | "video" | "audio": path, or "media": [{"kind", "path"}]}
with media paths relative to a media root. Out: one judgment per line keyed
by `sample_id`, appended a whole line at a time so that a rerun can resume.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from .errors import RRMError
from .schema import MEDIA_KINDS, MediaItem, Sample

log = logging.getLogger(__name__)


def sample_from_record(record: dict, media_root: Path, confine: bool = False) -> Sample:
    """A Sample from one JSONL record; media paths are resolved against media_root.

    With `confine`, a media path that leads outside media_root is refused (a
    server must read no file but the ones uploaded to it).
    """
    if not isinstance(record, dict):
        raise RRMError("the line is not a JSON object")
    missing = [k for k in ("query", "response_a", "response_b") if not isinstance(record.get(k), str)]
    if missing:
        raise RRMError(f"missing or non-text field(s): {', '.join(missing)}")
    named = [(kind, record[kind]) for kind in MEDIA_KINDS if record.get(kind)]
    named += [(m["kind"], m["path"]) for m in record.get("media") or []]
    media = [MediaItem(kind, _media_path(media_root, str(rel), confine)) for kind, rel in named]
    sample_id = record.get("id")
    if sample_id is None:
        sample_id = content_id(record["query"], record["response_a"], record["response_b"], media)
    return Sample(query=record["query"], response_a=record["response_a"], response_b=record["response_b"],
                  media=media, reference=record.get("reference"), id=str(sample_id))


def content_id(query: str, response_a: str, response_b: str, media: list[MediaItem]) -> str:
    """An id for a record that has none: stable across reruns and reorderings of its file."""
    key = json.dumps([query, response_a, response_b, [m.path for m in media]], ensure_ascii=False)
    return hashlib.sha1(key.encode()).hexdigest()[:16]


def _media_path(root: Path, rel: str, confine: bool) -> str:
    path = root / rel
    if confine and not path.resolve().is_relative_to(root.resolve()):
        raise RRMError(f"media path {rel!r} leads outside the uploaded files")
    return str(path)


def read_pairs(path: Path, media_root: Path, confine: bool = False,
               defaults: dict | None = None) -> tuple[list[Sample], list[str]]:
    """Samples, and a message for each line that could not be read (`defaults` fill fields a line lacks)."""
    samples, problems, seen = [], [], set()
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if defaults and isinstance(record, dict):
                    record = {**defaults, **record}
                sample = sample_from_record(record, media_root, confine)
            except json.JSONDecodeError as e:
                problems.append(f"{path} line {n}: not valid JSON ({e.msg}); skipped")
                continue
            except (RRMError, KeyError, TypeError, ValueError) as e:
                problems.append(f"{path} line {n}: {e}; skipped")
                continue
            if sample.id in seen:
                problems.append(f"{path} line {n}: duplicate id {sample.id}; skipped")
                continue
            seen.add(sample.id)
            samples.append(sample)
    return samples, problems


def done_ids(out: Path, key: str = "sample_id") -> set[str]:
    """Ids (under `key`) already written to OUT. A last line cut off by a killed run is removed."""
    if not out.exists():
        return set()
    ids, good_bytes = set(), 0
    with open(out, "rb") as f:
        for raw in f:
            try:
                if not raw.endswith(b"\n"):
                    raise ValueError("unterminated line")
                ids.add(json.loads(raw)[key])
            except (ValueError, KeyError, TypeError):
                break
            good_bytes += len(raw)
    if good_bytes < out.stat().st_size:
        log.warning("%s: dropping a partial line at its end (left by an interrupted run)", out)
        with open(out, "r+b") as f:
            f.truncate(good_bytes)
    return ids
