"""Preference data for training: one JSONL record per pair.

    {"id": "...", "modality": "image", "query": "...", "image": "pics/1.png",   # or "media": [{"kind", "path"}]
     "response_a": "...", "response_b": "...", "label": "A",                    # A, B or tie
     "score_a": 8, "score_b": 3,                                                # optional teacher scores
     "criteria": {"relevance": {"rationale": "...", "score_A": 8, "score_B": 4}, # optional teacher rationale,
                  "accuracy_completeness": "..."},                              # an object or plain text
     "split": "sft"}                                                            # sft or rl

Media paths are relative to `media_root`. The benchmark formats that `rrm.eval`
reads load too (label only), and so do the released Omni-Preference rows
(`omni-preference`, see `omni_preference_pair`). Rows with missing media or a bad label are
skipped and counted; they never stop a run. Every row gets a seeded A/B order,
so that neither slot is the better one more often.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rrm.errors import RRMError
from rrm.formats import FOREIGN_FORMATS, MEDIA_COLUMNS, MEDIA_TAG, foreign_record, turn_text
from rrm.eval.loaders import LOADERS, load_benchmark
from rrm.pairs import content_id, table_rows, labelled_judgment, read_criteria, read_label, sample_from_record
from rrm.parse import parse_judgment
from rrm.release import MEDIA_FOLDERS
from rrm.rubric import DEFAULT_RUBRIC, Rubric
from rrm.schema import (
    KEY_BETTER, KEY_SCORE_A, KEY_SCORE_B, ORDER_AB, ORDER_BA, CriterionResult, Judgment,
    MediaItem, Sample, flip_verdict,
)

log = logging.getLogger(__name__)

SPLITS = ("sft", "rl")
OMNI_PREFERENCE = "omni-preference"
FORMATS = (OMNI_PREFERENCE, *FOREIGN_FORMATS, *LOADERS)  # LOADERS has "preference"


@dataclass
class PreferencePair:
    sample: Sample
    label: str  # relative to sample's A and B
    split: str = "sft"
    score_a: float | None = None
    score_b: float | None = None
    criteria: list[CriterionResult] = field(default_factory=list)  # the teacher's, relative to A and B
    record: dict = field(default_factory=dict, repr=False)  # the line it came from (preference format)

    def swapped(self) -> PreferencePair:
        return PreferencePair(self.sample.swapped(), flip_verdict(self.label), self.split, self.score_b,
                              self.score_a, [c.swapped() for c in self.criteria])

    def target(self, rubric: Rubric) -> Judgment | None:
        """The teacher's judgment as an SFT target, or None without a rationale for every criterion."""
        return labelled_judgment(self.label, self.score_a, self.score_b, self.criteria, rubric)


@dataclass
class LoadReport:
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> count

    def __str__(self) -> str:
        parts = ", ".join(f"{n} {reason}" for reason, n in self.skipped.most_common())
        return f"{self.kept} pairs kept" + (f"; skipped: {parts}" if parts else "")


def _missing_media(sample: Sample) -> str | None:
    return next((m.path for m in sample.media if m.data is None and not Path(m.path).is_file()), None)


def _preference_pair(r: dict, root: Path) -> PreferencePair:
    return PreferencePair(sample_from_record(r, root), read_label(r.get("label")), str(r.get("split") or "sft"),
                          r.get("score_a"), r.get("score_b"), read_criteria(r.get("criteria")), record=r)


# ---------------------------------------------------------------- Omni-Preference rows
# The release trains with ms-swift, one chat row per pair. The user turn holds the prompt; its pair is either in
# a `### Context` block ("<Modality> file: <name>" lines, then "Question:", "Candidate A:", "Candidate B:"; the
# layout of the release's preference-construction prompts) or in "[Question]: q [Answer A]: a [Answer B]: b"
# (the layout of its evaluation prompts). Media are listed under images / videos / audios (with <image>-style
# tags in the text). An SFT row's assistant turn is the teacher's judgment in the released JSON; an RL row has no
# assistant turn but the labels (better, score_A, score_B) as columns or in a `solution` JSON. Paths are the
# authors' absolute paths; the release's own scripts rewrite them under one folder holding rlaif-v-dataset/,
# video-dataset/ and audio_files/ (see `_released_path`).
_LABELS = r"(?:Candidate|Answer|Response)"
_BRACKETED = re.compile(
    rf"\[Question\]:?\s*(?P<query>.*?)\s*\[{_LABELS} A\]:?\s*(?P<a>.*?)\s*\[{_LABELS} B\]:?\s*(?P<b>.*?)\s*$", re.S)
_CONTEXT = re.compile(
    rf"###\s*Context\s*\n(?P<files>(?:[ \t]*(?:Image|Video|Audio) [Ff]ile:[^\n]*\n)*)\s*Question:\s*(?P<query>.*?)"
    rf"\s*\n\s*{_LABELS} A:\s*(?P<a>.*?)\s*\n\s*{_LABELS} B:\s*(?P<b>.*?)\s*$", re.S)
_FILE_LINE = re.compile(r"(Image|Video|Audio) [Ff]ile:\s*(\S.*?)\s*$", re.M)
_MEDIA_KEYS = {column: kind for kind, columns in MEDIA_COLUMNS.items() for column in columns}
# The release's scripts replace these in audio file names when they rewrite the paths of the SFT rows.
_UNSAFE_IN_NAMES = re.compile(r"[ ,()]")


def _released_path(raw, root: Path) -> str:
    """A released media path found under `root`: as it is, else by its longest tail that exists under the root
    or under one of the release's media folders there (videos keep their tail from academic_source/ under
    video-dataset/, audio is found by its file name, also as the release renames it)."""
    rel = raw.get("path") if isinstance(raw, dict) else raw
    if not isinstance(rel, str) or not rel.strip():
        raise RRMError(f"bad media entry {raw!r}")
    path = Path(rel.strip())
    if path.is_absolute() and path.is_file():
        return str(path)
    parts = path.parts[1:] if path.is_absolute() else path.parts
    tails = [Path(*parts[i:]) for i in range(len(parts))]  # longest first
    tails.append(Path(_UNSAFE_IN_NAMES.sub("_", path.name)))
    bases = [root] + [root / d for d in MEDIA_FOLDERS if (root / d).is_dir()]
    for tail in tails:
        for base in bases:
            if (base / tail).is_file():
                return str(base / tail)
    return str(root / (path.name if path.is_absolute() else path))


def _solution(row: dict) -> dict:
    """An RL row's labels: its better / score_A / score_B columns, else its `solution` (JSON or object)."""
    if KEY_BETTER in row:
        return {k: row.get(k) for k in (KEY_BETTER, KEY_SCORE_A, KEY_SCORE_B)}
    if "solution" not in row:
        raise RRMError("bad label: neither an assistant turn nor a solution")
    value = row["solution"]
    if isinstance(value, list) and value:  # some loaders wrap it
        value = value[0]
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise RRMError(f"bad label: solution is not JSON ({e.msg})") from None
    if not isinstance(value, dict):
        raise RRMError("bad label: solution is not a JSON object")
    return value


def _released_pair_text(text: str) -> tuple[str, str, str, list[tuple[str, str]]]:
    """(query, answer A, answer B, [(kind, file named in the context)]) from a released user turn."""
    text = MEDIA_TAG.sub("", text)
    found = _CONTEXT.search(text)
    if found:
        files = [(kind.lower(), name) for kind, name in _FILE_LINE.findall(found.group("files"))]
        return found.group("query"), found.group("a"), found.group("b"), files
    found = _BRACKETED.search(text)
    if found:
        return found.group("query"), found.group("a"), found.group("b"), []
    raise RRMError("the user turn has neither a ### Context block (Question / Candidate A / Candidate B) nor "
                   "a [Question] / [Answer A] / [Answer B] block")


def omni_preference_pair(row: dict, root: Path, rubric: Rubric = DEFAULT_RUBRIC) -> PreferencePair:
    """One released Omni-Preference row (ms-swift chat layout) as a pair; raises RRMError naming the problem."""
    if not isinstance(row, dict) or not isinstance(row.get("messages"), list):
        raise RRMError("no messages list")
    turns = [m for m in row["messages"] if isinstance(m, dict)]
    user = [m for m in turns if m.get("role") == "user"]
    assistant = [m for m in turns if m.get("role") == "assistant"]
    if not user:
        raise RRMError("no user turn")
    query, a, b, named = _released_pair_text(turn_text(user[-1]))
    media = []
    for key, kind in _MEDIA_KEYS.items():
        entries = row.get(key) or []
        for entry in entries if isinstance(entries, list) else [entries]:
            media.append(MediaItem(kind, _released_path(entry, root)))
    if not media:  # no media lists: the files the context names
        media = [MediaItem(kind, _released_path(name, root)) for kind, name in named]
    sample_id = row.get("id")
    sample_id = content_id(query, a, b, media) if sample_id is None else sample_id
    sample = Sample(query, a, b, media=media, id=str(sample_id))
    if assistant:  # SFT row: the teacher's judgment
        judgment = parse_judgment(turn_text(assistant[-1]), rubric)
        if judgment.verdict is None:
            raise RRMError(f"bad label: the assistant turn is not a judgment ({judgment.status.errors[-1]})")
        # The rationales alone, as a labelled line without per-criterion scores holds them.
        criteria = [CriterionResult(c.key, c.title, c.rationale) for c in judgment.criteria if c.rationale]
        return PreferencePair(sample, judgment.verdict, str(row.get("split") or "sft"),
                              judgment.score_a, judgment.score_b, criteria)
    solution = _solution(row)
    return PreferencePair(sample, read_label(solution.get(KEY_BETTER)), str(row.get("split") or "rl"),
                          solution.get(KEY_SCORE_A), solution.get(KEY_SCORE_B))


def load_pairs(source, media_root: str | Path | None = None, fmt: str = "preference",
               splits: tuple[str, ...] = SPLITS) -> tuple[list[PreferencePair], LoadReport]:
    """Pairs from a preference file, released Omni-Preference rows, another project's preference rows, or a
    benchmark file, with a report of skips. `source`: a path (JSON Lines, a JSON array or parquet), or rows in
    memory (a `datasets.Dataset`, a list of dicts) whose media paths are relative to `media_root` (default: the
    file's folder, or the working directory)."""
    in_memory = not isinstance(source, (str, Path))
    path = Path("." if in_memory else source)
    root = Path(media_root) if media_root else (path if in_memory else path.parent)
    report = LoadReport()
    if fmt not in FORMATS:
        raise RRMError(f"unknown data format {fmt!r}; known: {', '.join(FORMATS)}")
    if fmt not in ("preference", OMNI_PREFERENCE, *FOREIGN_FORMATS):
        if in_memory:
            raise RRMError(f"format {fmt!r} is read from its files: pass the path, not rows in memory")
        candidates = [PreferencePair(i.sample, i.label) for i in load_benchmark(fmt, str(path), str(root))]
    else:
        candidates = []
        for n, row, problem in table_rows(source):
            if problem:
                report.skipped["unreadable lines"] += 1
                log.debug("%s line %d: %s", path, n, problem)
                continue
            try:
                if fmt == OMNI_PREFERENCE:
                    candidates.append(omni_preference_pair(row, root))
                else:
                    candidates.append(_preference_pair(row if fmt == "preference" else foreign_record(row, fmt, n),
                                                       root))
            except (RRMError, KeyError, TypeError, ValueError) as e:
                reason = "bad labels" if "label" in str(e) else "malformed records"
                report.skipped[reason] += 1
                log.debug("%s line %d: %s", path, n, e)
    pairs: list[PreferencePair] = []
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
