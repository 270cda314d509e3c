"""GRPO rewards: pure batched functions over rrm.parse, in TRL's reward-function shape.

    reward(completions, label, score_a=None, score_b=None, **columns) -> list[float]

Defaults follow the released formulas: 0.4 format + 0.4 preference + 0.2 rubric.
- format in [0, 1], a checklist: valid JSON 0.20, exact key set 0.20, valid values 0.15, then three
  format-specific checks of 0.15 each (omni-rrm: reasoning in <think>, final verdict in <answer>,
  final verdict equal to `better`; rubric-v2: every criterion has a rationale, criterion scores
  are integers 0-10, the verdict agrees with the overall scores).
- preference in [-1, 1]: -1 when unreadable or self-inconsistent; else 0.6 C_dir + 0.4 C_score, with
  C_dir = +1 for the labelled verdict, -1 otherwise, and C_score = 1 - 2 (|dA| + |dB|) / 20 against
  the teacher's scores (without teacher scores, C_dir alone).
- rubric in [0, 1]: 0.8 x the share of criteria the rationale covers + 0.2 x the share where it
  compares A with B.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence

from rrm.parse import parse_judgment
from rrm.rubric import DEFAULT_RUBRIC, Rubric
from rrm.schema import (
    KEY_BETTER, KEY_CRITERIA, KEY_FINAL_VERDICT, KEY_REASONING, KEY_SCORE_A, KEY_SCORE_B, KEY_VERDICT, RELEASED_KEYS,
    RUBRIC_V2_KEYS, SCORE_MAX, SCORE_MIN, VERDICTS,
)

DEFAULT_WEIGHTS = {"format": 0.4, "preference": 0.4, "rubric": 0.2}
_ANSWER = re.compile(r"^<answer>\[\[(A|B|equal)\]\]</answer>$")
_THINK = re.compile(r"^<think>.*</think>$", re.S)
_COMPARES = re.compile(r"\b(A|B)\b")


def completion_text(completion) -> str:
    """TRL passes plain strings, or conversational completions as lists of messages."""
    if isinstance(completion, list):
        return "".join(m.get("content", "") if isinstance(m.get("content"), str) else
                       "".join(p.get("text", "") for p in m.get("content", [])) for m in completion)
    return str(completion or "")


def _is_score(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and SCORE_MIN <= x <= SCORE_MAX


def _strict(text: str) -> dict | None:
    try:
        obj = json.loads(text.strip())
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def format_score(text: str, rubric: Rubric = DEFAULT_RUBRIC) -> float:
    obj = _strict(text)
    if obj is None:
        return 0.0
    score = 0.20
    if KEY_CRITERIA in obj or KEY_VERDICT in obj:  # rubric-v2
        if set(obj) == set(RUBRIC_V2_KEYS):
            score += 0.20
        sa, sb, verdict = obj.get(KEY_SCORE_A), obj.get(KEY_SCORE_B), obj.get(KEY_VERDICT)
        if _is_score(sa) and _is_score(sb) and verdict in VERDICTS:
            score += 0.15
        crit = obj.get(KEY_CRITERIA) if isinstance(obj.get(KEY_CRITERIA), dict) else {}
        entries = [crit.get(k) for k in rubric.keys]
        if all(isinstance(e, dict) and str(e.get("rationale") or "").strip() for e in entries):
            score += 0.15
        if all(isinstance(e, dict) and _is_score(e.get(KEY_SCORE_A)) and _is_score(e.get(KEY_SCORE_B))
               for e in entries):
            score += 0.15
        if _is_score(sa) and _is_score(sb) and verdict == ("A" if sa > sb else "B" if sb > sa else "tie"):
            score += 0.15
        return round(score, 4)
    if set(obj) == set(RELEASED_KEYS):
        score += 0.20
    better = obj.get(KEY_BETTER)
    if _is_score(obj.get(KEY_SCORE_A)) and _is_score(obj.get(KEY_SCORE_B)) and better in ("A", "B", "equal"):
        score += 0.15
    if isinstance(obj.get(KEY_REASONING), str) and _THINK.match(obj[KEY_REASONING].strip()):
        score += 0.15
    final = _ANSWER.match(str(obj.get(KEY_FINAL_VERDICT, "")).strip())
    if final:
        score += 0.15
        if final.group(1) == better:
            score += 0.15
    return round(score, 4)


def preference_score(text: str, label: str, score_a=None, score_b=None, rubric: Rubric = DEFAULT_RUBRIC) -> float:
    j = parse_judgment(text, rubric)
    if not j.ok or not j.status.consistent or j.score_a is None or j.score_b is None:
        return -1.0
    direction = 1.0 if j.verdict == label else -1.0
    if score_a is None or score_b is None:
        return direction
    closeness = 1 - 2 * (abs(j.score_a - score_a) + abs(j.score_b - score_b)) / 20
    return 0.6 * direction + 0.4 * closeness


def rubric_score(text: str, rubric: Rubric = DEFAULT_RUBRIC) -> float:
    j = parse_judgment(text, rubric)
    n = len(rubric.criteria)
    covered = [c for c in j.criteria if c.rationale.strip()]
    compared = [c for c in covered
                if (c.score_a is not None and c.score_b is not None) or set(_COMPARES.findall(c.rationale)) == {"A", "B"}]
    return 0.8 * len(covered) / n + 0.2 * len(compared) / n


def _column(values, i):
    return None if values is None else values[i]


def format_reward(completions, rubric: Rubric = DEFAULT_RUBRIC, **_) -> list[float]:
    return [format_score(completion_text(c), rubric) for c in completions]


def preference_reward(completions, label, score_a=None, score_b=None, rubric: Rubric = DEFAULT_RUBRIC,
                      **_) -> list[float]:
    return [preference_score(completion_text(c), label[i], _column(score_a, i), _column(score_b, i), rubric)
            for i, c in enumerate(completions)]


def rubric_reward(completions, rubric: Rubric = DEFAULT_RUBRIC, **_) -> list[float]:
    return [rubric_score(completion_text(c), rubric) for c in completions]


REWARDS: dict[str, Callable[..., list[float]]] = {
    "format": format_reward, "preference": preference_reward, "rubric": rubric_reward,
}


def get_rewards(weights: dict[str, float]) -> tuple[list[Callable], list[float]]:
    """Reward functions and their weights by name, for GRPOConfig(reward_weights=...)."""
    unknown = set(weights) - set(REWARDS)
    if unknown:
        raise ValueError(f"unknown reward {sorted(unknown)[0]!r}; known: {', '.join(REWARDS)}")
    return [REWARDS[name] for name in weights], list(weights.values())


def combined(completions: Sequence, label: Sequence[str], weights: dict[str, float] = DEFAULT_WEIGHTS,
             **columns) -> list[float]:
    """The weighted sum of the named rewards, per completion."""
    totals = [0.0] * len(completions)
    for fn, w in zip(*get_rewards(weights)):
        for i, r in enumerate(fn(completions, label=label, **columns)):
            totals[i] += w * r
    return totals
