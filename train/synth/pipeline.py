"""The three stages over files in OUT: generate -> annotate -> filter.

    OUT/generations.jsonl  one answer per (prompt, generator role), keyed "<prompt id>:strong|weak"
    OUT/judgments.jsonl    one two-order judgment per (pair, teacher), keyed "<prompt id>::<teacher>"
    OUT/data.jsonl         the kept pairs, in the format train/ reads (media paths relative to the media root)
    OUT/dropped.jsonl      every other pair, with the reason
    OUT/report.json, OUT/report.md

generate and annotate append and resume (a rerun asks only for what is
missing); filter is pure and rewrites its outputs, each in one step.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from rrm.endpoint import CallFailed
from rrm.errors import RRMError
from rrm.media import MediaLimits
from rrm.pairs import read_pairs, read_records
from rrm.redact import redact
from rrm.rubric import DEFAULT_RUBRIC, Rubric
from rrm.schema import ORDER_AB, Judgment, Sample

from ..data import order_for
from . import rules
from .backends import Backend, ModelSpec
from .report import build_report, report_markdown
from .store import Store, write_atomic

log = logging.getLogger(__name__)

ROLES = ("strong", "weak")
GENERATIONS, JUDGMENTS = "generations.jsonl", "judgments.jsonl"
DATA, DROPPED, REPORT_JSON, REPORT_MD = "data.jsonl", "dropped.jsonl", "report.json", "report.md"


@dataclass
class Prompt:
    sample: Sample  # the query and its media (resolved against the media root); no responses
    media_rel: list[str]  # the media paths as the prompt file gives them (relative to the media root)

    @property
    def id(self) -> str:
        return self.sample.id


@dataclass
class Pair:
    prompt: Prompt
    sample: Sample | None  # the responses in their seeded A/B order; None until both are generated
    sources: dict  # {"A": role, "B": role}: hidden from the teachers


@dataclass
class StageCounts:
    done: int = 0
    failed: int = 0  # left undone: a rerun retries them
    errors: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.done} written, {self.failed} left for a rerun"

    def write(self, store: Store, record: dict, result, fields) -> None:
        """Store an item's result (or the error it met for good); a failed call is left for a rerun."""
        if isinstance(result, CallFailed):
            self.failed += 1
            self.errors.append(redact(result))
            return
        record.update({"error": redact(result)} if isinstance(result, Exception) else fields(result))
        store.append(record)
        self.done += 1


def read_prompts(path: str | Path, media_root: str | Path | None = None) -> tuple[list[Prompt], list[str]]:
    """Prompts (query plus media), and one message per line that cannot be used."""
    path = Path(path)
    root = Path(media_root) if media_root else path.parent
    samples, problems = read_pairs(path, root, defaults={"response_a": "", "response_b": ""}, what="prompt file")
    prompts = []
    for s in samples:
        missing = next((m.path for m in s.media if not Path(m.path).is_file()), None)
        if missing:
            problems.append(f"{path}: prompt {s.id}: media file {missing} not found; skipped")
        else:
            prompts.append(Prompt(s, [os.path.relpath(m.path, root) for m in s.media]))
    return prompts, problems


def generate(prompts: Sequence[Prompt], specs: dict[str, ModelSpec], out: Path, seed: int = 0,
             limits: MediaLimits = MediaLimits()) -> StageCounts:
    """Each prompt answered by the strong and the weak generator."""
    store, counts = Store(out / GENERATIONS), StageCounts()
    for n, role in enumerate(ROLES):
        spec = specs[role]
        pending = [p for p in prompts if f"{p.id}:{role}" not in store.done]
        if not pending:
            continue
        # Each role samples with its own seed: one model in both roles still gives two answers.
        backend = Backend(spec, "generator", seed + n, limits)
        results = backend.answer_all([p.sample for p in pending])
        for sample, result in tqdm(results, total=len(pending), desc=f"generate ({role})", unit="answer"):
            record = {"id": f"{sample.id}:{role}", "prompt_id": sample.id, "role": role, "model": spec.name}
            counts.write(store, record, result, lambda a: {"text": a.text, "prompt_tokens": a.prompt_tokens,
                                                           "completion_tokens": a.completion_tokens})
    return counts


def _generation_index(out: Path) -> dict[str, dict]:
    return {r["id"]: r for r in read_records(out / GENERATIONS)}


def make_pairs(prompts: Sequence[Prompt], generations: dict[str, dict], seed: int) -> dict[str, Pair]:
    """Per prompt: its pair, strong and weak in a seeded A/B order (no sample until both answers exist)."""
    out: dict[str, Pair] = {}
    for p in prompts:
        texts = {role: generations.get(f"{p.id}:{role}", {}).get("text") for role in ROLES}
        a, b = ROLES if order_for(p.id, seed) == ORDER_AB else ROLES[::-1]
        sample = None
        if all(t is not None for t in texts.values()):
            sample = Sample(p.sample.query, texts[a], texts[b], list(p.sample.media), p.sample.reference, p.id)
        out[p.id] = Pair(p, sample, {"A": a, "B": b})
    return out


def _pre_teacher_problems(pairs: dict[str, Pair], filter_rules: rules.FilterRules) -> dict[str, str]:
    """Reasons known before any teacher is asked (failed generation, empty, refused or duplicate answers)."""
    problems, seen = {}, set()
    for pid, pair in pairs.items():
        if pair.sample is None:
            problems[pid] = rules.GENERATION_FAILED
            continue
        s = pair.sample
        problem = rules.response_problem(s.response_a, s.response_b, filter_rules)
        key = rules.pair_key(s.query, pair.prompt.media_rel, s.response_a, s.response_b)
        if problem is None and key in seen:
            problem = rules.DUPLICATE
        seen.add(key)
        if problem:
            problems[pid] = problem
    return problems


def annotate(prompts: Sequence[Prompt], teachers: Sequence[ModelSpec], out: Path, seed: int = 0,
             prompt_format: str = "rubric-v2", rubric: Rubric = DEFAULT_RUBRIC,
             filter_rules: rules.FilterRules = rules.FilterRules(),
             limits: MediaLimits = MediaLimits()) -> StageCounts:
    """Each pair judged by each teacher in both orders. Pairs the rules already drop are not sent."""
    _check_names(teachers)
    pairs = make_pairs(prompts, _generation_index(out), seed)
    skip = _pre_teacher_problems(pairs, filter_rules)
    todo = [p for pid, p in pairs.items() if pid not in skip]
    store, counts = Store(out / JUDGMENTS), StageCounts()
    for spec in teachers:
        pending = [p for p in todo if f"{p.prompt.id}::{spec.name}" not in store.done]
        if not pending:
            continue
        backend = Backend(spec, "teacher", seed, limits, prompt_format, rubric)
        results = backend.judge_all([p.sample for p in pending])
        for sample, result in tqdm(results, total=len(pending), desc=f"annotate ({spec.name})", unit="pair"):
            record = {"id": f"{sample.id}::{spec.name}", "pair_id": sample.id, "teacher": spec.name}
            counts.write(store, record, result, lambda v: {"judgment": v.judgment.to_dict(),
                                                           "prompt_tokens": v.prompt_tokens,
                                                           "completion_tokens": v.completion_tokens})
    return counts


def _check_names(teachers: Sequence[ModelSpec]) -> None:
    names = [t.name for t in teachers]
    if len(names) < 2:
        raise RRMError("annotation needs at least two teachers")
    if len(set(names)) < len(names):
        raise RRMError(f"teacher names must differ ({', '.join(names)}): give each a name in the recipe")


def select(pairs: dict[str, Pair], judgments: dict[str, dict[str, dict]], teachers: Sequence[str],
           rubric: Rubric, filter_rules: rules.FilterRules) -> tuple[list[dict], list[dict], rules.Tally]:
    """(kept records, dropped records, tally) from pairs and their teacher records."""
    pre = _pre_teacher_problems(pairs, filter_rules)
    kept, dropped, tally = [], [], rules.Tally()
    for pid, pair in pairs.items():
        modality = pair.prompt.sample.modality
        reason = pre.get(pid)
        readings: dict[str, Judgment | None] = {}
        if reason is None:
            records = {t: judgments.get(pid, {}).get(t) for t in teachers}
            if any(r is not None and "error" in r for r in records.values()):
                reason = rules.TEACHER_FAILED
            else:
                readings = {t: Judgment.from_dict(r["judgment"]) if r else None for t, r in records.items()}
                label, reason = rules.consensus(readings, rubric)
        if reason is None:
            score_a, score_b = rules.mean_scores(list(readings.values()))
            if max(score_a, score_b) < filter_rules.quality_floor:
                reason = rules.BELOW_FLOOR
        if reason:
            dropped.append({"id": pid, "modality": modality, "reason": reason})
            tally.drop(reason, modality)
            continue
        kept.append(_output_record(pair, label, score_a, score_b, readings, teachers, filter_rules))
    tally.longer_wins_before = rules.longer_wins_share(kept)
    if filter_rules.max_longer_wins is not None:
        kept, rebalanced = rules.rebalance(kept, filter_rules.max_longer_wins, filter_rules.seed)
        for r in rebalanced:
            dropped.append({"id": r["id"], "modality": r["modality"], "reason": rules.LENGTH_REBALANCE})
            tally.drop(rules.LENGTH_REBALANCE, r["modality"])
    for r in kept:
        tally.keep(r["modality"])
    return kept, dropped, tally


def _output_record(pair: Pair, label: str, score_a: float, score_b: float, readings: dict[str, Judgment],
                   teachers: Sequence[str], filter_rules: rules.FilterRules) -> dict:
    s, first = pair.sample, readings[teachers[0]]
    gap = abs(score_a - score_b)
    criteria = {c.key: {"rationale": c.rationale, "score_A": c.score_a, "score_B": c.score_b}
                for c in first.criteria}  # the first teacher's, in the order it saw the pair (A, B)
    record = {"id": pair.prompt.id, "modality": s.modality, "query": s.query,
              "media": [{"kind": m.kind, "path": rel} for m, rel in zip(s.media, pair.prompt.media_rel)],
              "response_a": s.response_a, "response_b": s.response_b, "label": label,
              "score_a": round(score_a, 2), "score_b": round(score_b, 2), "gap": round(gap, 2),
              "split": "rl" if gap <= filter_rules.hard_gap else "sft", "criteria": criteria,
              "sources": pair.sources,
              "teachers": {t: {"verdict": j.verdict, "score_a": j.score_a, "score_b": j.score_b}
                           for t, j in readings.items()}}
    if s.reference:
        record["reference"] = s.reference
    return record


def filter_stage(prompts: Sequence[Prompt], teachers: Sequence[ModelSpec], out: Path,
                 generators: dict[str, ModelSpec] | None = None, seed: int = 0,
                 rubric: Rubric = DEFAULT_RUBRIC, filter_rules: rules.FilterRules = rules.FilterRules(),
                 problems: Sequence[str] = ()) -> dict:
    """Consensus and rule filters; writes data, dropped pairs and the report. Returns the report."""
    _check_names(teachers)
    generations = _generation_index(out)
    pairs = make_pairs(prompts, generations, seed)
    judgment_records = read_records(out / JUDGMENTS)
    judgments: dict[str, dict[str, dict]] = {}
    for r in judgment_records:
        judgments.setdefault(r["pair_id"], {})[r["teacher"]] = r
    names = [t.name for t in teachers]
    kept, dropped, tally = select(pairs, judgments, names, rubric, filter_rules)
    write_atomic(out / DATA, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))
    write_atomic(out / DROPPED, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in dropped))
    report = build_report(kept, tally, pairs, judgment_records, teachers, generations, generators or {},
                          filter_rules, rubric, list(problems))
    write_atomic(out / REPORT_JSON, json.dumps(report, indent=2) + "\n")
    write_atomic(out / REPORT_MD, report_markdown(report))
    return report
