"""Human votes on the judge's judgments: the app's votes file, and how far the judge agrees with its users.

A vote is Chatbot Arena's four buttons: A better, B better, tie, both bad. Each
vote is one line of `<data dir>/votes.jsonl`, appended in one write, and the line
is a labelled pair in `train/`'s pairs format, so `python -m train.sft --data
<data dir>/votes.jsonl` trains on the file as it is:

- "label": A, B or tie (both bad is a tie: neither response is preferred);
- "split": "sft" with the judge's own rationale as "criteria" where its verdict
  matches the vote, else "rl" with no rationale (a rationale that argues for
  the other answer is no target; `train.grpo --data` learns from the label);
- the pair (query, responses, reference) and its media, copied by content hash
  into `<data dir>/media/`, never referenced by a temporary upload path;
- "vote", and "judgment" (the judge's full judgment), "model", "quantization",
  "format", "seed" and "rubric": what was voted on.

An undone vote is taken out of the file (rewritten whole, then swapped in).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .errors import RRMError
from .pairs import read_records
from .schema import TEXT, VERDICT_A, VERDICT_B, VERDICT_TIE, VERDICTS, Judgment, Sample

VOTE_A, VOTE_B, VOTE_TIE, VOTE_BOTH_BAD = "A", "B", "tie", "both_bad"
VOTES = (VOTE_A, VOTE_B, VOTE_TIE, VOTE_BOTH_BAD)
VOTE_NAMES = {VOTE_A: "A is better", VOTE_B: "B is better", VOTE_TIE: "Tie", VOTE_BOTH_BAD: "Both are bad"}
LABEL_OF_VOTE = {VOTE_A: VERDICT_A, VOTE_B: VERDICT_B, VOTE_TIE: VERDICT_TIE, VOTE_BOTH_BAD: VERDICT_TIE}
VOTES_FILE = "votes.jsonl"
NO_VERDICT = "none"  # the judge's column in the confusion table when it gave no verdict


def modality_of(sample: Sample) -> str:
    """'text', or the kinds of the sample's media in order, joined ("image+audio")."""
    return "+".join(dict.fromkeys(m.kind for m in sample.media)) or TEXT


class VoteBook:
    """The votes file under a data folder. Casting and undoing are safe from several threads at once."""

    def __init__(self, data_dir: str | Path):
        self.dir = Path(data_dir)
        self.path = self.dir / VOTES_FILE
        self._lock = threading.Lock()
        self._count: int | None = None  # the votes in the file, read once, then kept by cast and undo

    def cast(self, sample: Sample, judgment: Judgment, vote: str, about: dict) -> dict:
        """Append one vote; `about` holds the model, quantization, format, seed and rubric keys voted under."""
        if vote not in VOTES:
            raise RRMError(f"unknown vote {vote!r}; one of {', '.join(VOTES)}")
        media = [{"kind": m.kind, "path": self._keep(m.path)} for m in sample.media]
        label = LABEL_OF_VOTE[vote]
        agrees = judgment.verdict == label
        record = {"id": uuid.uuid4().hex[:16], "query": sample.query, "response_a": sample.response_a,
                  "response_b": sample.response_b, "reference": sample.reference, "media": media,
                  "modality": modality_of(sample), "label": label, "vote": vote,
                  "split": "sft" if agrees else "rl", "score_a": judgment.score_a if agrees else None,
                  "score_b": judgment.score_b if agrees else None,
                  "criteria": {c.key: {"rationale": c.rationale, "score_A": c.score_a, "score_B": c.score_b}
                               for c in judgment.criteria} if agrees else {},
                  "judgment": judgment.to_dict(), **about, "voted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
        with self._lock:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._count = self.count() + 1
            with open(self.path, "ab") as f:
                f.write(line)  # one write per line: a crash leaves whole lines, at worst one cut-off last line
        return record

    def undo(self, vote_id: str) -> bool:
        """Take the vote with this id out of the file; False when it is not there."""
        with self._lock:
            if not self.path.exists():
                return False
            lines = self.path.read_bytes().splitlines(keepends=True)
            kept = [x for x in lines if not _has_id(x, vote_id)]
            if len(kept) == len(lines):
                return False
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".votes-")  # then swapped in whole
            with os.fdopen(fd, "wb") as f:
                f.writelines(kept)
            os.replace(tmp, self.path)
            self._count = None  # read again when next asked
        return True

    def records(self) -> list[dict]:
        return read_records(self.path)

    def count(self) -> int:
        """How many votes the file holds, without reading it at every vote."""
        if self._count is None:
            self._count = sum("vote" in r for r in self.records())
        return self._count

    def _keep(self, path: str | None) -> str:
        """The media file copied into the data folder under its content hash; its path relative to the file."""
        if not path or not Path(path).is_file():
            raise RRMError("a vote keeps its media by file, and this media item has none")
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        rel = Path("media") / (digest.hexdigest()[:32] + Path(path).suffix.lower())
        if not (self.dir / rel).exists():
            (self.dir / "media").mkdir(parents=True, exist_ok=True)
            fd, part = tempfile.mkstemp(dir=self.dir / "media", prefix=".part-")  # two votes may copy at once
            os.close(fd)
            shutil.copyfile(path, part)
            os.replace(part, self.dir / rel)
        return rel.as_posix()


def _has_id(line: bytes, vote_id: str) -> bool:
    try:
        return json.loads(line).get("id") == vote_id
    except (ValueError, AttributeError):  # a line that is not a JSON object is kept as it is
        return False


@dataclass
class Agreement:
    """How often the judge's verdict matched the vote, among the votes where it gave one."""

    agree: int = 0
    judged: int = 0  # votes whose judgment has a verdict
    votes: int = 0

    @property
    def rate(self) -> float | None:
        return self.agree / self.judged if self.judged else None

    def add(self, judge_verdict: str | None, label: str) -> None:
        self.votes += 1
        if judge_verdict in VERDICTS:
            self.judged += 1
            self.agree += judge_verdict == label


def _swap_group(judgment: dict) -> str:
    swap = judgment.get("swap")
    if not swap:
        return "one order only"
    return {True: "both orders agree", False: "orders disagree"}.get(swap.get("agree"), "an order gave no verdict")


def vote_stats(records: list[dict]) -> dict:
    """Counts, agreement overall / per modality / per swap outcome, and the confusion of votes × judge verdicts.
    Records that are not votes (no "vote" and "judgment") are counted apart."""
    overall, by_modality, by_swap = Agreement(), {}, {}
    confusion: Counter = Counter()
    skipped = 0
    for r in records:
        if r.get("vote") not in VOTES or not isinstance(r.get("judgment"), dict):
            skipped += 1
            continue
        judged = r["judgment"].get("verdict")
        label = LABEL_OF_VOTE[r["vote"]]
        for group in (overall, by_modality.setdefault(str(r.get("modality") or TEXT), Agreement()),
                      by_swap.setdefault(_swap_group(r["judgment"]), Agreement())):
            group.add(judged, label)
        confusion[r["vote"], judged if judged in VERDICTS else NO_VERDICT] += 1
    return {"overall": overall, "by_modality": dict(sorted(by_modality.items())), "by_swap": by_swap,
            "confusion": confusion, "not_votes": skipped}
