"""Other projects' preference rows, read into this project's own labelled line (rrm.pairs reads that).

- `trl`: TRL's preference datasets: {"prompt", "chosen", "rejected"} as text, or as conversations (lists of
  {"role", "content"}, content a string or a list of parts); without "prompt", the conversations' shared
  beginning is the prompt. Media: "images" (or "image").
- `swift`: ms-swift's RM/DPO rows: {"messages": [..., user turn, the chosen assistant turn],
  "rejected_response", "images", "videos", "audios"}; <image>, <video> and <audio> tags mark the media.
- `llamafactory`: LLaMA-Factory's sharegpt preference rows: {"conversations": [{"from": "human", "value"}],
  "chosen": {"from": "gpt", "value"}, "rejected": {...}, "images", "videos", "audios"}.

The chosen response becomes A or B by a seeded coin per row (a judge learns no position), the label says
which. Media paths are relative to the media root, as in our own files. These rows carry no rationale: they
are labels for GRPO, judging or evaluation, not SFT targets.
"""

from __future__ import annotations

import random
import re

from .errors import RRMError
from .schema import VERDICT_A, VERDICT_B

FOREIGN_FORMATS = ("trl", "swift", "llamafactory")
PAIRS_FORMATS = ("preference", *FOREIGN_FORMATS)
MEDIA_TAG = re.compile(r"<(?:image|video|audio)>")  # where a chat row's text places each medium
# The dataset columns that hold each kind of media, in these projects and in TRL's reward calls.
MEDIA_COLUMNS = {"image": ("images", "image"), "video": ("videos", "video"), "audio": ("audios", "audio")}


def turn_text(message: dict) -> str:
    """The text of one chat turn: its content, a string or a list of OpenAI-style parts (the text parts)."""
    content = message.get("content")
    if isinstance(content, list):
        content = "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    if not isinstance(content, str):
        raise RRMError("a message has no text content")
    return content


def text_of(value) -> str:
    """The text of a prompt or a response: a string, or a conversation (its last user turn, else its last turn)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        return turn_text(([m for m in value if m.get("role") == "user"] or value)[-1])
    raise RRMError(f"a prompt or response must be text or a list of chat messages, got {type(value).__name__}")


def _media(row: dict) -> dict[str, list[str]]:
    out = {}
    for kind, columns in MEDIA_COLUMNS.items():
        value = next((row[c] for c in columns if row.get(c)), None)
        values = [value] if isinstance(value, (str, dict)) else list(value or [])
        paths = [v.get("path") if isinstance(v, dict) else v for v in values]
        if not all(isinstance(p, str) and p for p in paths):
            raise RRMError(f'"{columns[0]}" must hold file paths (decoded media cannot go in a pairs file)')
        if paths:
            out[kind] = paths
    return out


def _trl(row: dict) -> tuple[str, str, str]:
    chosen, rejected, prompt = row["chosen"], row["rejected"], row.get("prompt")
    if prompt is None:  # implicit prompt: the two conversations share it
        if not (isinstance(chosen, list) and isinstance(rejected, list)):
            raise RRMError('a TRL row without "prompt" needs "chosen" and "rejected" as conversations')
        shared = next((i for i, (c, r) in enumerate(zip(chosen, rejected)) if c != r), min(len(chosen), len(rejected)))
        prompt, chosen, rejected = chosen[:shared], chosen[shared:], rejected[shared:]
    return text_of(prompt), text_of(chosen), text_of(rejected)


def _swift(row: dict) -> tuple[str, str, str]:
    messages = row["messages"]
    if not (isinstance(messages, list) and messages and messages[-1].get("role") == "assistant"):
        raise RRMError('an ms-swift row\'s "messages" must end with the chosen assistant turn')
    return text_of(messages[:-1]), text_of(messages[-1]), text_of(row["rejected_response"])


def _llamafactory(row: dict) -> tuple[str, str, str]:
    turns = [{"role": "user" if t.get("from") in ("human", "user") else t.get("from"), "content": t.get("value", "")}
             for t in row["conversations"]]

    def answer(value) -> str:
        return str(value.get("value", "")) if isinstance(value, dict) else text_of(value)

    return text_of(turns), answer(row["chosen"]), answer(row["rejected"])


READERS = {"trl": _trl, "swift": _swift, "llamafactory": _llamafactory}


def foreign_record(row, fmt: str, n: int, seed: int = 0) -> dict:
    """Row `n` of a `fmt` file as our labelled line (id, query, A, B, label, media), the chosen response in a
    seeded slot. Split "rl": a label without a rationale."""
    if fmt not in READERS:
        raise RRMError(f"unknown pairs format {fmt!r}; known: {', '.join(PAIRS_FORMATS)}")
    if not isinstance(row, dict):
        raise RRMError(f"a {fmt} row must be a JSON object")
    try:
        query, chosen, rejected = (MEDIA_TAG.sub("", t).strip() for t in READERS[fmt](row))
    except KeyError as e:
        raise RRMError(f"a {fmt} row needs {e}") from None
    rid = str(row.get("id", f"{fmt}-{n}"))
    chosen_first = random.Random(f"{seed}:{rid}").random() < 0.5
    a, b = (chosen, rejected) if chosen_first else (rejected, chosen)
    return {"id": rid, "query": query, "response_a": a, "response_b": b, "split": "rl",
            "label": VERDICT_A if chosen_first else VERDICT_B, **_media(row)}
