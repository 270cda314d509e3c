"""OpenRLHF's remote reward model protocol on `rrm serve`: `POST /get_reward`.

OpenRLHF (`--remote_rm_url http://127.0.0.1:8000/get_reward`) sends
    {"query": [prompt + response, ...], "prompts": [prompt, ...], "labels": [label, ...]}
and reads "rewards" from the answer:
    {"rewards": [r, ...], "scores": [r, ...], "extra_logs": {"judge_unread": [0 or 1, ...]}}

Each row's response is its query after its prompt (without "prompts", after the last assistant header of a
ChatML or Llama-3 chat template); the question is the prompt's last user turn (the whole prompt if it has no
chat template); end-of-turn tokens are cut off the response. A label is the reference answer as text, or a
JSON object {"reference": "...", "images": [...], "videos": [...], "audios": [...]}: OpenRLHF sends text
only, so a multimodal row's media travel there as paths, read under the folder `rrm serve
--reward-media-root DIR` names and nowhere else (a path leading out of it is refused; without the flag, a label
naming media is refused). With a reference, the response is judged against it (`rrm.reward`, mode reference:
win 1, tie 0, loss -1, or with --reward-scoring margin the score margin / 10); without one, it is graded alone
(its score / 10). A judgment with no verdict is null, never a made-up number, unless --reward-if-unread gives
the number to send instead (OpenRLHF takes numbers only); "judge_unread" marks those rows either way.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from .api_inputs import BadRequest
from .errors import RRMError
from .formats import MEDIA_COLUMNS, MEDIA_TAG
from .pairs import sample_from_record
from .reward import JudgeReward

_HEADERS = ("<|im_start|>assistant\n", "<|start_header_id|>assistant<|end_header_id|>\n\n")
_USER_TURNS = (re.compile(r"<\|im_start\|>user\n(.*?)(?:<\|im_end\|>|$)", re.S),
               re.compile(r"<\|start_header_id\|>user<\|end_header_id\|>\n\n(.*?)(?:<\|eot_id\|>|$)", re.S))
_END_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "</s>")
_TAGS = re.compile(rf"{MEDIA_TAG.pattern}|<\|vision_start\|>.*?<\|vision_end\|>", re.S)


@dataclass(frozen=True)
class RewardSettings:
    media_root: Path | None = None
    scoring: str = "outcome"
    if_unread: float | None = None
    swap_check: bool = True


def question_of(prompt: str) -> str:
    """The prompt's last user turn under a ChatML or Llama-3 template, else the prompt itself."""
    for pattern in _USER_TURNS:
        turns = pattern.findall(prompt)
        if turns:
            return _TAGS.sub("", turns[-1]).strip()
    return _TAGS.sub("", prompt).strip()


def split_query(query: str, prompt: str | None, row: int) -> tuple[str, str]:
    """(question, response) of one row."""
    if prompt is None:
        cut = max((query.rfind(h) + len(h) for h in _HEADERS if h in query), default=-1)
        if cut < 0:
            raise BadRequest(f'row {row}: send "prompts": the query has no chat template to split it at')
        prompt = query[:cut]
    elif not query.startswith(prompt):
        raise BadRequest(f"row {row}: the query does not begin with its prompt")
    response = query[len(prompt):].strip()
    while response.endswith(_END_TOKENS):
        response = response[:-len(next(t for t in _END_TOKENS if response.endswith(t)))].rstrip()
    return question_of(prompt), response


def read_reward_label(label, settings: RewardSettings, row: int) -> tuple[str | None, dict[str, list[str]]]:
    """(reference or None, media paths by kind) from one row's label."""
    if label is None or label == "":
        return None, {}
    if not isinstance(label, str):
        raise BadRequest(f"row {row}: a label must be a string (text, or a JSON object)")
    try:
        value = json.loads(label) if label.lstrip().startswith("{") else None
    except ValueError:
        value = None  # text that happens to start with a brace is a reference like any other
    if not isinstance(value, dict):
        return label, {}
    named = {kind: value.get(c) for kind, names in MEDIA_COLUMNS.items() for c in names if value.get(c)}
    if named and settings.media_root is None:
        raise BadRequest(f"row {row}: the label names media files, and this server reads none: start it with "
                         f"--reward-media-root DIR")
    try:
        sample = sample_from_record({"query": "", "response_a": "", "response_b": "", **named},
                                    settings.media_root or Path("."), confine=True)
    except RRMError as e:
        raise BadRequest(f"row {row}: {e}") from None
    media: dict[str, list[str]] = {}
    for m in sample.media:
        media.setdefault(m.kind, []).append(m.path)
    reference = value.get("reference")
    return (str(reference) if reference else None), media


def get_reward(judge, body, settings: RewardSettings, max_rows: int) -> dict:
    """OpenRLHF's answer to one /get_reward body."""
    if not isinstance(body, dict) or not isinstance(body.get("query"), list):
        raise BadRequest('the body must be an object with "query": a list of strings')
    queries = body["query"]
    prompts, labels = body.get("prompts"), body.get("labels")
    for name, values in (("prompts", prompts), ("labels", labels)):
        if values is not None and (not isinstance(values, list) or len(values) != len(queries)):
            raise BadRequest(f'"{name}" must be a list as long as "query" ({len(queries)})')
    if len(queries) > max_rows:
        raise BadRequest(f"the request holds {len(queries):,} rows; the limit is {max_rows} (--max-pairs)")
    if not all(isinstance(q, str) for q in queries) or not all(isinstance(p, str) for p in prompts or []):
        raise BadRequest('"query" and "prompts" must hold strings')
    rows = [split_query(q, prompts[i] if prompts else None, i) for i, q in enumerate(queries)]
    read = [read_reward_label(labels[i] if labels else None, settings, i) for i in range(len(rows))]
    rewards: list[float | None] = [None] * len(rows)
    for mode, members in (("reference", [i for i, (ref, _) in enumerate(read) if ref is not None]),
                          ("pointwise", [i for i, (ref, _) in enumerate(read) if ref is None])):
        if not members:
            continue
        columns = {MEDIA_COLUMNS[kind][0]: [read[i][1].get(kind, []) for i in members] for kind in MEDIA_COLUMNS}
        reward = JudgeReward(judge, mode=mode, scoring=settings.scoring, swap_check=settings.swap_check)
        got = reward([rows[i][0] for i in members], [rows[i][1] for i in members],
                     reference=[read[i][0] for i in members], **columns)
        for i, r in zip(members, got):
            rewards[i] = r
    unread = [int(r is None) for r in rewards]
    sent = [settings.if_unread if r is None else r for r in rewards]
    return {"rewards": sent, "scores": sent, "extra_logs": {"judge_unread": unread}}
