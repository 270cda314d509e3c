"""Judged pairs out as training data: DPO / reward-model rows for TRL, ms-swift or LLaMA-Factory, or this
project's own labelled lines with the judge's rationales (SFT targets for `train.sft`).

    python -m rrm export --judged OUT.jsonl --pairs IN.jsonl --format trl|swift|llamafactory|preference --out DIR
        [--pairs-format trl|swift|llamafactory] [--media-root R]
        [--require-swap-agree] [--min-score-gap G] [--drop-ties] [--agree-with-label]

OUT.jsonl is what `rrm judge --pairs IN.jsonl --out OUT.jsonl` wrote; lines are matched by id. The judge's
verdict decides which response is chosen. A tie verdict goes to the higher overall score (a tie with equal
scores is left out) unless --drop-ties leaves every tie out; `preference` keeps ties as ties. Filters:
--require-swap-agree keeps pairs whose two orders agreed (judge with --swap-check); --min-score-gap keeps pairs
whose overall scores differ by at least G; --agree-with-label keeps pairs whose verdict is the input's label.

DIR gets `train.jsonl` (and for LLaMA-Factory its `dataset_info.json`), and the media the rows use under
`media/`, named by their paths relative to the media root: rows name them relative to DIR, so the folder is
whole on its own. Each format writes one layout for the whole file (so `datasets.load_dataset` reads it):
- trl: {"prompt", "chosen", "rejected"} as text; with media, as conversations with an "images" column
  (TRL's trainers read only images; "videos" / "audios" columns carry the rest);
- swift: {"messages": [user, chosen assistant], "rejected_response", "images" / "videos" / "audios"}, the
  user turn led by one <image> / <video> / <audio> tag per file;
- llamafactory: sharegpt ranking rows {"conversations", "chosen", "rejected", "images" / "videos" / "audios"};
- preference: {"id", "query", "response_a", "response_b", "label", "score_a", "score_b", "criteria", "split":
  "sft", "image" / "video" / "audio"}, the judge's criteria as the rationale.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .cli import read_pairs_arg
from .errors import RRMError
from .formats import MEDIA_COLUMNS, PAIRS_FORMATS
from .pairs import read_label, scan_records
from .schema import MEDIA_KINDS, VERDICT_A, VERDICT_B, VERDICT_TIE, Judgment, Sample

EXPORT_FORMATS = ("trl", "swift", "llamafactory", "preference")
COLUMNS = {kind: names[0] for kind, names in MEDIA_COLUMNS.items()}  # image -> images, ...


@dataclass(frozen=True)
class Filters:
    require_swap_agree: bool = False
    min_score_gap: float | None = None
    drop_ties: bool = False
    agree_with_label: bool = False

    def reason_to_drop(self, j: Judgment, label) -> str | None:
        """Why a judged pair is left out, or None to keep it (`label`: the input line's, as written)."""
        if j.verdict is None:
            return "no verdict"
        if self.require_swap_agree and not (j.swap and j.swap.agree):
            return "not swap-consistent" if j.swap else "not swap-checked"
        if self.min_score_gap is not None:
            if j.score_a is None or j.score_b is None or abs(j.score_a - j.score_b) < self.min_score_gap:
                return f"score gap under {self.min_score_gap:g}"
        if self.drop_ties and j.verdict == VERDICT_TIE:
            return "ties"
        if self.agree_with_label and label is not None:
            try:
                if j.verdict != read_label(label):
                    return "verdict differs from the label"
            except RRMError:
                return "unreadable label"
        return None


def chosen_slot(j: Judgment) -> str | None:
    """A or B, the response to train towards: the verdict, or for a tie the higher overall score (None if even)."""
    if j.verdict != VERDICT_TIE:
        return j.verdict
    if j.score_a is None or j.score_b is None or j.score_a == j.score_b:
        return None
    return VERDICT_A if j.score_a > j.score_b else VERDICT_B


class MediaCopier:
    """Copies (or hard-links) each media file once under out/media, and names it relative to out."""

    def __init__(self, out: Path, root: Path):
        self.out, self.root = out, root.resolve()

    def __call__(self, path: str) -> str:
        src = Path(path).resolve()
        if src.is_relative_to(self.root):
            rel = src.relative_to(self.root)
        else:  # outside the media root: a folder per source folder keeps same-named files apart
            rel = Path("outside", hashlib.sha1(str(src.parent).encode()).hexdigest()[:8], src.name)
        dest = self.out / "media" / rel
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src, dest)
            except OSError:  # another file system, or no hard links there
                shutil.copy2(src, dest)
        return (Path("media") / rel).as_posix()


def _tags(media: dict[str, list[str]]) -> str:
    return "".join(f"<{kind}>" * len(media.get(kind, [])) for kind in MEDIA_KINDS)


def _columns(media: dict[str, list[str]], kinds: list[str], names: dict[str, str]) -> dict[str, list[str]]:
    return {names[kind]: media.get(kind, []) for kind in kinds}


def trl_row(s: Sample, chosen: str, rejected: str, media: dict, kinds: list[str]) -> dict:
    if not kinds:
        return {"id": s.id, "prompt": s.query, "chosen": chosen, "rejected": rejected}
    parts = [{"type": kind} for kind in MEDIA_KINDS for _ in media.get(kind, [])]
    return {"id": s.id, "prompt": [{"role": "user", "content": [*parts, {"type": "text", "text": s.query}]}],
            "chosen": [{"role": "assistant", "content": [{"type": "text", "text": chosen}]}],
            "rejected": [{"role": "assistant", "content": [{"type": "text", "text": rejected}]}],
            **_columns(media, kinds, COLUMNS)}


def swift_row(s: Sample, chosen: str, rejected: str, media: dict, kinds: list[str]) -> dict:
    return {"id": s.id, "messages": [{"role": "user", "content": _tags(media) + s.query},
                                     {"role": "assistant", "content": chosen}],
            "rejected_response": rejected, **_columns(media, kinds, COLUMNS)}


def llamafactory_row(s: Sample, chosen: str, rejected: str, media: dict, kinds: list[str]) -> dict:
    return {"id": s.id, "conversations": [{"from": "human", "value": _tags(media) + s.query}],
            "chosen": {"from": "gpt", "value": chosen}, "rejected": {"from": "gpt", "value": rejected},
            **_columns(media, kinds, COLUMNS)}


def preference_row(s: Sample, j: Judgment, media: dict, kinds: list[str]) -> dict:
    criteria = {c.key: {"rationale": c.rationale, "score_A": c.score_a, "score_B": c.score_b} for c in j.criteria}
    row = {"id": s.id, "query": s.query, "response_a": s.response_a, "response_b": s.response_b,
           "label": j.verdict, "score_a": j.score_a, "score_b": j.score_b, "criteria": criteria, "split": "sft",
           **_columns(media, kinds, {k: k for k in MEDIA_KINDS})}
    return {**row, "reference": s.reference} if s.reference else row


ROWS = {"trl": trl_row, "swift": swift_row, "llamafactory": llamafactory_row}


def llamafactory_info(kinds: list[str], name: str = "rrm_export") -> dict:
    """The dataset_info.json entry that makes LLaMA-Factory read train.jsonl as a ranking (DPO / RM) set."""
    columns = {"messages": "conversations", "chosen": "chosen", "rejected": "rejected",
               **{COLUMNS[k]: COLUMNS[k] for k in kinds}}
    return {name: {"file_name": "train.jsonl", "formatting": "sharegpt", "ranking": True, "columns": columns,
                   "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human",
                            "assistant_tag": "gpt"}}}


@dataclass
class Kept:
    sample: Sample
    judgment: Judgment
    chosen: str  # A or B (preference: the verdict, a tie kept)


def select(pairs: list[tuple[Sample, dict]], judged: dict[str, Judgment], filters: Filters,
           fmt: str) -> tuple[list[Kept], Counter]:
    """The judged pairs that pass the filters, and a count of each reason the others were left out."""
    kept, dropped = [], Counter()
    for sample, record in pairs:
        j = judged.get(sample.id)
        reason = "not judged" if j is None else filters.reason_to_drop(j, record.get("label"))
        slot = None if reason else (j.verdict if fmt == "preference" else chosen_slot(j))
        if reason is None and slot is None:
            reason = "ties with equal scores"
        if reason:
            dropped[reason] += 1
        else:
            kept.append(Kept(sample, j, slot))
    return kept, dropped


def write_export(kept: list[Kept], fmt: str, out: Path, media_root: Path) -> Path:
    """Write train.jsonl (and dataset_info.json for LLaMA-Factory) under out, the media beside them."""
    out.mkdir(parents=True, exist_ok=True)
    copy = MediaCopier(out, media_root)
    kinds = [k for k in MEDIA_KINDS if any(m.kind == k for x in kept for m in x.sample.media)]
    rows = []
    for x in kept:
        media = {}
        for m in x.sample.media:
            media.setdefault(m.kind, []).append(copy(m.path))
        s = x.sample
        if fmt == "preference":
            rows.append(preference_row(s, x.judgment, media, kinds))
            continue
        chosen, rejected = (s.response_a, s.response_b) if x.chosen == VERDICT_A else (s.response_b, s.response_a)
        rows.append(ROWS[fmt](s, chosen, rejected, media, kinds))
    path = out / "train.jsonl"
    partial = path.with_suffix(".jsonl.partial")  # a killed export leaves the last whole file in place
    partial.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    os.replace(partial, path)
    if fmt == "llamafactory":
        (out / "dataset_info.json").write_text(json.dumps(llamafactory_info(kinds), indent=2) + "\n")
    return path


def read_judged(path: Path) -> tuple[dict[str, Judgment], int]:
    """The judgments of a `rrm judge --pairs` output by sample id (a later line for an id wins), and how many
    lines held no judgment (passed over)."""
    if not path.is_file():
        raise RRMError(f"judged file {path} does not exist")
    scan = scan_records(path)
    judged, bad = {}, len(scan.unreadable) + (scan.cut_at is not None)
    for record in scan.records:
        try:
            judged[str(record["sample_id"])] = Judgment.from_dict(record)
        except (KeyError, TypeError, ValueError):
            bad += 1
    return judged, bad


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--judged", required=True, metavar="OUT.jsonl", help="what rrm judge --pairs wrote")
    parser.add_argument("--pairs", required=True, metavar="IN", help="the pairs it judged (JSONL, JSON, parquet)")
    parser.add_argument("--pairs-format", choices=PAIRS_FORMATS, default="preference")
    parser.add_argument("--media-root", help="media paths of IN are relative to this (default: the folder of IN)")
    parser.add_argument("--format", required=True, choices=EXPORT_FORMATS, help="the layout to write")
    parser.add_argument("--out", required=True, metavar="DIR")
    parser.add_argument("--require-swap-agree", action="store_true", help="keep pairs whose two orders agreed")
    parser.add_argument("--min-score-gap", type=float, metavar="G", help="keep pairs whose scores differ by >= G")
    parser.add_argument("--drop-ties", action="store_true", help="leave out every tie verdict")
    parser.add_argument("--agree-with-label", action="store_true",
                        help="keep pairs whose verdict is the input's label (where it has one)")


def export_command(args) -> int:
    pairs, problems, media_root = read_pairs_arg(args)
    filters = Filters(args.require_swap_agree, args.min_score_gap, args.drop_ties, args.agree_with_label)
    judged, bad = read_judged(Path(args.judged))
    if bad:
        print(f"warning: {args.judged}: {bad} lines hold no judgment; passed over", file=sys.stderr)
    kept, dropped = select(pairs, judged, filters, args.format)
    left_out = ", ".join(f"{n} {reason}" for reason, n in dropped.most_common()) or "none"
    if not kept:
        raise RRMError(f"no pair of {args.pairs} is left to export (left out: {left_out})")
    path = write_export(kept, args.format, Path(args.out), media_root)
    print(f"exported {len(kept)} of {len(pairs)} pairs to {path} ({args.format}); left out: {left_out}; "
          f"{len(problems)} input lines skipped", file=sys.stderr)
    return 1 if problems else 0
