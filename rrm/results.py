"""Summaries and tables of many judgments (the app's batch tab, the command line)."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

from .rubric import Rubric
from .schema import VERDICT_A, VERDICT_B, VERDICT_TIE, Judgment, Sample


def summarize(judgments: Sequence[Judgment]) -> dict:
    """Win rates of A, B and ties, swap agreement, parse failures and mean timing."""
    n = len(judgments)
    count = {v: sum(j.verdict == v for j in judgments) for v in (VERDICT_A, VERDICT_B, VERDICT_TIE)}
    checked = [j.swap.agree for j in judgments if j.swap is not None and j.swap.agree is not None]
    timed = [j.timing for j in judgments if j.timing is not None and j.timing.total_s is not None]

    def rate(k: int, total: int) -> float | None:
        return k / total if total else None

    def mean(values):
        values = [v for v in values if v is not None]
        return sum(values) / len(values) if values else None

    return {
        "pairs": n,
        "win_rate_a": rate(count[VERDICT_A], n),
        "win_rate_b": rate(count[VERDICT_B], n),
        "tie_rate": rate(count[VERDICT_TIE], n),
        "parse_failures": sum(not j.ok for j in judgments),
        "parse_failure_rate": rate(sum(not j.ok for j in judgments), n),
        "swap_checked": len(checked),
        "swap_agreement": rate(sum(checked), len(checked)),
        "inconsistent": sum(j.ok and not j.status.consistent for j in judgments),
        "mean_seconds": mean(t.total_s for t in timed),
        "mean_generated_tokens": mean(t.generated_tokens for t in timed),
    }


VERDICT_WORDS = {VERDICT_A: "A is better", VERDICT_B: "B is better", VERDICT_TIE: "a tie"}


def score_text(x: float | None) -> str:
    """A score as people read it (8, 7.5); a dash when there is none."""
    return "–" if x is None else f"{x:g}"


def percent(x: float | None, digits: int = 0) -> str:
    """A rate as a percentage; a dash when there is none."""
    return "–" if x is None else f"{100 * x:.{digits}f} %"


def summary_text(summary: dict) -> str:
    """One line of `summarize`'s figures, for people."""
    swap = (f"swap agreement {percent(summary['swap_agreement'])} of {summary['swap_checked']} checked"
            if summary["swap_checked"] else "swap check off")
    return (f"{summary['pairs']} pairs: A better {percent(summary['win_rate_a'])}, B better "
            f"{percent(summary['win_rate_b'])}, tie {percent(summary['tie_rate'])}; {swap}; "
            f"{summary['parse_failures']} without a verdict")


def judgment_text(j: Judgment) -> str:
    """A judgment for people: the verdict line, a table of the criteria, the swap check and the timing."""
    verdict = VERDICT_WORDS.get(j.verdict)
    lines = [f"Verdict: {verdict} (A {score_text(j.score_a)} · B {score_text(j.score_b)})" if verdict
             else "No verdict: " + ("; ".join(j.status.errors) or "the output could not be read")]
    if j.criteria:
        width = max(len(c.title) for c in j.criteria)
        lines += ["", f"{'criterion':<{width}}  {'A':>3}  {'B':>3}  rationale"]
        lines += [f"{c.title:<{width}}  {score_text(c.score_a):>3}  {score_text(c.score_b):>3}  {c.rationale}"
                  for c in j.criteria]
    lines.append("")
    if j.swap is None:
        lines.append("Swap check: off")
    elif j.swap.agree is None:
        lines.append(f"Swap check: incomplete (A/B order: {j.swap.verdict_ab or 'none'}, B/A order: "
                     f"{j.swap.verdict_ba or 'none'})")
    else:
        lines.append("Swap check: both orders agree" if j.swap.agree else
                     f"Swap check: the orders disagree ({j.swap.verdict_ab} then {j.swap.verdict_ba}): a tie")
    lines += [heard_text(h) for h in j.heard]
    t = j.timing
    if t is not None and t.total_s is not None:
        rate = f", {t.tokens_per_s:.0f} tokens/s" if t.tokens_per_s else ""
        lines.append(f"Timing: {t.generated_tokens} tokens in {t.total_s:.1f} s{rate}; prompt {t.prompt_tokens} tokens")
    return "\n".join(lines)


def heard_text(heard: dict) -> str:
    """One video of a judgment's `heard` record, for people: "Heard: clip.mp4: 3.0 s of sound"."""
    return f"Heard: {heard.get('video')}: {heard.get('note')}"


def _media_names(sample: Sample) -> str:
    return "; ".join(f"{m.kind} {Path(m.path).name}" for m in sample.media if m.path)


def short(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def overview(samples: Sequence[Sample], judgments: Sequence[Judgment]) -> tuple[list[str], list[list]]:
    """(header, rows) to read on a page: one row per pair, its texts cut short, its verdict, scores, swap check
    and status (ok, or the first reason it has no verdict)."""
    header = ["id", "query", "response A", "response B", "verdict", "A", "B", "swap", "status"]
    rows = []
    for s, j in zip(samples, judgments):
        swap = "off" if j.swap is None else {True: "agree", False: "disagree", None: "incomplete"}[j.swap.agree]
        rows.append([s.id, short(s.query), short(s.response_a), short(s.response_b), j.verdict or "none",
                     j.score_a, j.score_b, swap, "ok" if j.ok else short("; ".join(j.status.errors) or "unread", 80)])
    return header, rows


def table(judgments: Sequence[Judgment], rubric: Rubric,
          samples: Sequence[Sample] | None = None) -> tuple[list[str], list[list]]:
    """(header, rows): one row per judgment, one column per criterion (plus its scores when given); with
    `samples`, each row carries its pair (query, responses, media) after the id."""
    scored = {c.key for j in judgments for c in j.criteria if c.score_a is not None or c.score_b is not None}
    pair = ["query", "response_a", "response_b", "media"] if samples is not None else []
    header = ["id", *pair, "verdict", "score_a", "score_b", "ok", "consistent", "swap_agree", "errors"]
    for c in rubric.criteria:
        header.append(c.key)
        if c.key in scored:
            header += [f"{c.key}_score_a", f"{c.key}_score_b"]
    rows = []
    for n, j in enumerate(judgments):
        by_key = {c.key: c for c in j.criteria}
        s = samples[n] if samples is not None else None
        row = [j.sample_id, *([s.query, s.response_a, s.response_b, _media_names(s)] if s else []), j.verdict,
               j.score_a, j.score_b, j.ok, j.status.consistent, j.swap.agree if j.swap else None,
               "; ".join(j.status.errors)]
        for c in rubric.criteria:
            found = by_key.get(c.key)
            row.append(found.rationale if found else "")
            if c.key in scored:
                row += [found.score_a if found else None, found.score_b if found else None]
        rows.append(row)
    return header, rows


def write_jsonl(judgments: Sequence[Judgment], path: Path) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for j in judgments:
            f.write(json.dumps(j.to_dict(), ensure_ascii=False) + "\n")
    return path


def write_csv(judgments: Sequence[Judgment], rubric: Rubric, path: Path,
              samples: Sequence[Sample] | None = None) -> Path:
    header, rows = table(judgments, rubric, samples)
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path
