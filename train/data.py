"""Preference data for training: one JSONL record per pair.

    {"id": "...", "modality": "image", "query": "...", "image": "pics/1.png",   # or "media": [{"kind", "path"}]
     "response_a": "...", "response_b": "...", "label": "A",                    # A, B or tie
     "score_a": 8, "score_b": 3,                                                # optional teacher scores
     "criteria": {"relevance": {"rationale": "...", "score_A": 8, "score_B": 4}, # optional teacher rationale,
                  "accuracy_completeness": "..."},                              # an object or plain text
     "split": "sft"}                                                            # sft or rl

Media paths are relative to `media_root`. The benchmark formats that `rrm.eval`
reads load too (label only). Rows with missing media or a bad label are
skipped and counted; they never stop a run. Every row gets a seeded A/B order,
so that neither slot is the better one more often.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rrm.errors import RRMError
from rrm.eval.loaders import LOADERS, load_benchmark
from rrm.pairs import sample_from_record
from rrm.rubric import Rubric
from rrm.schema import (
    ORDER_AB, ORDER_BA, VERDICT_A, VERDICT_B, VERDICT_TIE, VERDICTS, CriterionResult, Judgment, ParseStatus, Sample,
)

log = logging.getLogger(__name__)

SPLITS = ("sft", "rl")


@dataclass
class PreferencePair:
    sample: Sample
    label: str  # relative to sample's A and B
    split: str = "sft"
    score_a: float | None = None
    score_b: float | None = None
    criteria: dict = field(default_factory=dict)  # key -> {"rationale", "score_A", "score_B"}

    def swapped(self) -> PreferencePair:
        criteria = {k: {"rationale": v.get("rationale", ""), "score_A": v.get("score_B"), "score_B": v.get("score_A")}
                    for k, v in self.criteria.items()}
        label = {VERDICT_A: VERDICT_B, VERDICT_B: VERDICT_A}.get(self.label, self.label)
        return PreferencePair(self.sample.swapped(), label, self.split, self.score_b, self.score_a, criteria)

    def target(self, rubric: Rubric) -> Judgment | None:
        """The teacher's judgment as an SFT target, or None without a rationale for every criterion."""
        if any(not self.criteria.get(c.key, {}).get("rationale") for c in rubric.criteria):
            return None
        criteria = [CriterionResult(c.key, c.title, self.criteria[c.key]["rationale"],
                                    self.criteria[c.key].get("score_A"), self.criteria[c.key].get("score_B"))
                    for c in rubric.criteria]
        return Judgment(self.label, self.score_a, self.score_b, criteria, "", ParseStatus(True, "teacher"))


@dataclass
class LoadReport:
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> count

    def __str__(self) -> str:
        parts = ", ".join(f"{n} {reason}" for reason, n in self.skipped.most_common())
        return f"{self.kept} pairs kept" + (f"; skipped: {parts}" if parts else "")


def _criteria(raw) -> dict:
    out = {}
    for key, value in (raw or {}).items():
        if isinstance(value, dict):
            out[key] = {"rationale": str(value.get("rationale") or ""), "score_A": value.get("score_A"),
                        "score_B": value.get("score_B")}
        else:
            out[key] = {"rationale": str(value or "")}
    return out


def _label(value) -> str:
    s = str(value).strip()
    s = VERDICT_TIE if s.lower() in ("tie", "equal") else s.upper()
    if s not in VERDICTS:
        raise RRMError(f"bad label {value!r} (A, B or tie)")
    return s


def _missing_media(sample: Sample) -> str | None:
    return next((m.path for m in sample.media if m.data is None and not Path(m.path).is_file()), None)


def load_pairs(path: str | Path, media_root: str | Path | None = None, fmt: str = "preference",
               splits: tuple[str, ...] = SPLITS) -> tuple[list[PreferencePair], LoadReport]:
    """Pairs from a preference JSONL (or a benchmark file when `fmt` names one), with a report of skips."""
    path = Path(path)
    root = Path(media_root) if media_root else path.parent
    report = LoadReport()
    pairs: list[PreferencePair] = []
    if fmt != "preference":
        if fmt not in LOADERS:
            raise RRMError(f"unknown data format {fmt!r}; known: {', '.join(LOADERS)}")
        candidates = [PreferencePair(i.sample, i.label) for i in load_benchmark(fmt, str(path), str(root))]
    else:
        candidates = []
        if not path.is_file():
            raise RRMError(f"data file {path} does not exist")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                candidates.append(PreferencePair(
                    sample_from_record(r, root), _label(r.get("label")), str(r.get("split") or "sft"),
                    r.get("score_a"), r.get("score_b"), _criteria(r.get("criteria"))))
            except json.JSONDecodeError:
                report.skipped["unreadable lines"] += 1
            except (RRMError, KeyError, TypeError, ValueError) as e:
                reason = "bad labels" if "label" in str(e) else "malformed records"
                report.skipped[reason] += 1
                log.debug("%s line %d: %s", path, n, e)
    for pair in candidates:
        if pair.split not in splits:
            continue
        if _missing_media(pair.sample):
            report.skipped["missing media"] += 1
            continue
        pairs.append(pair)
    report.kept = len(pairs)
    return pairs, report


def order_for(pair_id: str, seed: int) -> str:
    """A seeded coin per pair, independent of the other rows and of their order."""
    return ORDER_BA if random.Random(f"{seed}:{pair_id}").random() < 0.5 else ORDER_AB


def randomise_order(pairs: list[PreferencePair], seed: int) -> list[PreferencePair]:
    """Each pair as is or swapped, by its own seeded coin."""
    return [p.swapped() if order_for(p.sample.id, seed) == ORDER_BA else p for p in pairs]
