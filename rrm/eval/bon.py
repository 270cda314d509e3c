"""Best-of-N selection over sampled answers to multiple-choice questions.

Formats (as released): MMMU (`qwen_all_runs` holds the sampled letters),
Video-MME and AVQA (their files carry no samples: add a `candidates` list of
sampled letters to each record). For every N from 1 to the number of
candidates, the judge selects one of the first N by `knockout` (the paper's:
the current best meets each next candidate) or `round-robin` (every distinct
pair; most wins), and the majority vote is the baseline.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RRMError
from .loaders import read_json_list, read_jsonl
from ..schema import AUDIO, IMAGE, VERDICT_A, VERDICT_B, VIDEO, MediaItem, Sample, flip_verdict

STRATEGIES = ("knockout", "round-robin")
_LETTERS = "ABCDEFGHIJ"


@dataclass
class BonItem:
    id: str
    question: str
    options: list[str]  # option texts, without their letters
    answer: str  # the correct letter
    candidates: list[str]  # sampled letters, in sampling order
    media: list[MediaItem] = field(default_factory=list)


def _strip_letter(option: str) -> str:
    return re.sub(r"^\s*\(?[A-J][.)]\s*", "", str(option)).strip()


def _find(root: Path, name: str, item_id: str) -> Path:
    """A released image name ('image_1') as a file under root, trying common layouts."""
    for base in (root / name, root / item_id / name, root / f"{item_id}_{name}"):
        if base.suffix and base.exists():
            return base
        for ext in (".png", ".jpg", ".jpeg", ".webp"):
            if base.with_name(base.name + ext).exists():
                return base.with_name(base.name + ext)
    return root / name  # missing: the judge reports it per item


def _under(root: Path, path: str) -> Path:
    p = Path(path)
    return p if p.exists() else root / str(path).lstrip("/")


def _candidates(r: dict, n: int) -> list[str]:
    cands = r.get("candidates") or r.get("qwen_all_runs")
    if not cands:
        raise RRMError(f"record {n} has no sampled answers: add a 'candidates' list of letters "
                       f"(your policy's samples) to each record")
    return [str(c).strip().upper()[:1] for c in cands]


def detect_format(row: dict) -> str:
    if "qwen_all_runs" in row or "images" in row:
        return "mmmu"
    if "video_path" in row:
        return "videomme"
    if "problem" in row and "solution" in row:
        return "avqa"
    raise RRMError("unknown best-of-N format: expected MMMU, Video-MME or AVQA records")


def _read_rows(path: Path) -> list:
    """The records of a JSON list or a JSONL file."""
    with open(path, "rb") as f:
        head = f.read(64).removeprefix(b"\xef\xbb\xbf").lstrip()
    return read_json_list(path) if head.startswith(b"[") else read_jsonl(path)


def load_bon(path: str | Path, media_root: str | Path | None = None) -> list[BonItem]:
    path = Path(path)
    if not path.exists():
        raise RRMError(f"data file {path} does not exist")
    root = Path(media_root) if media_root else path.parent
    rows = _read_rows(path)
    if not rows:
        return []
    fmt = detect_format(rows[0])
    items = []
    for n, r in enumerate(rows):
        try:
            items.append(_item(fmt, r, n, root))
        except (KeyError, ValueError, SyntaxError) as e:
            raise RRMError(f"{path} record {n} is not in the {fmt} format ({type(e).__name__}: {e})") from None
    return items


def _item(fmt: str, r: dict, n: int, root: Path) -> BonItem:
    if fmt == "mmmu":
        media = [MediaItem(IMAGE, str(_find(root, img, str(r["id"])))) for img in r.get("images") or []]
        return BonItem(str(r["id"]), r["question"], [_strip_letter(o) for o in r["options"]], r["answer"].strip(),
                       _candidates(r, n), media)
    if fmt == "videomme":
        return BonItem(str(r.get("id", f"videomme-{n}")), r["question"], [_strip_letter(o) for o in r["options"]],
                       r["answer"].strip(), _candidates(r, n), [MediaItem(VIDEO, str(_under(root, r["video_path"])))])
    options = r["options"] if isinstance(r["options"], list) else ast.literal_eval(r["options"])
    paths = r["path"] if isinstance(r["path"], dict) else ast.literal_eval(r["path"])
    answer = re.search(r"<answer>\s*([A-J])", r["solution"]).group(1)
    media = [MediaItem(kind, str(_under(root, paths[kind]))) for kind in (IMAGE, AUDIO) if paths.get(kind)]
    return BonItem(str(r.get("problem_id", n)), r["problem"], [_strip_letter(o) for o in options], answer,
                   _candidates(r, n), media)


def _query(item: BonItem) -> str:
    options = "\n".join(f"{_LETTERS[i]}. {o}" for i, o in enumerate(item.options))
    return f"{item.question}\n\nOptions:\n{options}\n\nAnswer with the letter of the correct option."


def _response(item: BonItem, letter: str) -> str:
    i = _LETTERS.find(letter)
    text = item.options[i] if 0 <= i < len(item.options) else ""
    return f"The answer is {letter}. {text}".strip()


def majority(candidates: list[str]) -> str:
    """The most frequent answer; ties go to the one sampled first."""
    counts = Counter(candidates)
    return max(candidates, key=lambda c: (counts[c], -candidates.index(c)))


class _Matches:
    """Pairwise verdicts between candidate letters, judged once each (swap-checked, so symmetric)."""

    def __init__(self, judge, item: BonItem):
        self.judge, self.item, self.verdicts, self.failures = judge, item, {}, []

    def __call__(self, a: str, b: str) -> str | None:
        if (b, a) in self.verdicts:
            return flip_verdict(self.verdicts[(b, a)])
        if (a, b) not in self.verdicts:
            sample = Sample(_query(self.item), _response(self.item, a), _response(self.item, b),
                            media=list(self.item.media), id=f"{self.item.id}:{a}-{b}")
            j = self.judge.judge_batch([sample], batch_size=1, swap_check=True, progress=False)[0]
            if not j.ok:
                self.failures.append(j.status.errors[-1] if j.status.errors else "no verdict")
            self.verdicts[(a, b)] = j.verdict
        return self.verdicts[(a, b)]


def knockout(candidates: list[str], match) -> str:
    best = candidates[0]
    for challenger in candidates[1:]:
        if challenger != best and match(best, challenger) == VERDICT_B:
            best = challenger
    return best


def round_robin(candidates: list[str], match) -> str:
    distinct = list(dict.fromkeys(candidates))
    wins = Counter()
    for i, a in enumerate(distinct):
        for b in distinct[i + 1:]:
            v = match(a, b)
            if v == VERDICT_A:
                wins[a] += 1
            elif v == VERDICT_B:
                wins[b] += 1
    return max(distinct, key=lambda c: (wins[c], -distinct.index(c)))


SELECT = {"knockout": knockout, "round-robin": round_robin}


def select_item(judge, item: BonItem, strategies=STRATEGIES) -> dict:
    """Selections for every N and strategy, and the majority vote, for one item."""
    match = _Matches(judge, item)
    by_n = {}
    for n in range(1, len(item.candidates) + 1):
        cands = item.candidates[:n]
        by_n[str(n)] = {"majority": majority(cands), **{s: SELECT[s](cands, match) for s in strategies}}
    return {"id": item.id, "answer": item.answer, "candidates": item.candidates, "selected": by_n,
            "pairs_judged": len(match.verdicts), "failures": match.failures}


def summarize_bon(records: list[dict]) -> dict:
    """Accuracy against N for each strategy and for the majority vote."""
    table: dict[int, dict[str, float]] = {}
    max_n = max((len(r["candidates"]) for r in records), default=0)
    for n in range(1, max_n + 1):
        rows = [r for r in records if str(n) in r["selected"]]
        if not rows:
            continue
        picks = [r["selected"][str(n)] for r in rows]
        methods = picks[0].keys()
        table[n] = {m: sum(p[m] == r["answer"] for p, r in zip(picks, rows)) / len(rows) for m in methods}
        table[n]["items"] = len(rows)
    return {"items": len(records), "accuracy_by_n": table,
            "judge_failures": sum(len(r["failures"]) for r in records)}


def bon_markdown(summary: dict) -> str:
    table = summary["accuracy_by_n"]
    if not table:
        return "No items.\n"
    methods = [m for m in next(iter(table.values())) if m != "items"]
    lines = ["| N | items | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    for n, row in table.items():
        lines.append(f"| {n} | {row['items']} | " + " | ".join(f"{100 * row[m]:.1f}" for m in methods) + " |")
    return "\n".join(lines) + "\n"
