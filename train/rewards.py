"""GRPO rewards: pure functions of one completion, grouped in named sets, served in TRL's reward-function shape.

    fn(completions, label=[...], score_a=[...], score_b=[...], **other_columns) -> list[float]

Every reward reads the completion strictly, as it stands: never through the lenient inference parser
(`rrm.parse`), which would credit a truncated or malformed judgment with the verdict it was heading for.
Weights default to the release's 0.4 format + 0.4 preference + 0.2 rubric; the rubric of the recipe reaches
every component.

`omni-rrm-release` reproduces the release's three rewards (mm_format, mm_content and mm_rubric in
train/new_plugin.py of tmfk418/Omni-RRM) rule for rule, malformed completions included:
- format in [0, 1], a checklist on the object read with a leading or trailing markdown fence tolerated (and a
  one-element list unwrapped): valid JSON 0.20; exactly the five keys 0.20; integer scores 0-10 and `better` one of
  A / B / equal 0.15; `reasoning` a string that starts with <think>...</think> 0.15; `final_verdict` a string that
  starts with <answer>[[A|B|equal]]</answer> 0.15; that letter equal to `better` 0.15.
- preference in [-1, 1]: -1 when the object or a score cannot be read (a score must convert to an integer; it is
  then clipped to 0-10), when the teacher's scores are missing, or when the judgment contradicts itself
  (better A needs score_A > score_B, B the reverse, equal equal scores); else 0.6 C_dir + 0.4 C_score, with
  C_dir = +1 for the labelled verdict and -1 otherwise, C_score = 1 - 2 (|dA| + |dB|) / 20 against the teacher's
  scores (truncated to integers, clipped to 0-10).
- rubric in [-1, 1]: -1 when the completion is not a JSON object as it stands (this reward tolerates no fence) or
  its `reasoning` is not a string; else, with <think> tags stripped, each criterion's passage runs from the first
  word that marks it (`Criterion.cues`: the release's word lists for the five default criteria) to the first word
  of another criterion after it, and the reward is 0.8 x the share of criteria marked + 0.2 x the share whose
  passage compares A with B (both letters named, or a collective word with a comparative one).

`rubric-v2` scores the rubric-v2 schema with the same shapes, strictly:
- format in [0, 1]: valid JSON 0.20; exactly the keys criteria, score_A, score_B, verdict 0.20; integer overall
  scores 0-10 and a verdict A / B / tie 0.15; a rationale for every criterion 0.15; integer criterion scores 0-10
  for every criterion 0.15; the verdict agreeing with the overall scores 0.15.
- preference in [-1, 1]: -1 unless the completion is one well-formed judgment (the exact keys, valid overall
  scores and verdict, a criteria object) whose verdict agrees with its scores; else 0.6 C_dir + 0.4 C_score as
  above, or C_dir alone where the row has no teacher scores.
- rubric in [-1, 1]: -1 when not a JSON object (as the release penalises it), 0 when not a well-formed judgment;
  else 0.8 x the share of criteria with a rationale + 0.2 x the share whose rationale compares A with B (per-criterion
  scores for both count as a comparison).
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rrm.rubric import DEFAULT_RUBRIC, Rubric
from rrm.schema import (
    KEY_BETTER, KEY_CRITERIA, KEY_FINAL_VERDICT, KEY_RATIONALE, KEY_REASONING, KEY_SCORE_A, KEY_SCORE_B,
    KEY_VERDICT, RELEASED_EQUAL, RELEASED_KEYS, RUBRIC_V2_KEYS, SCORE_MAX, SCORE_MIN, VERDICT_A, VERDICT_B,
    VERDICT_TIE, VERDICTS,
)

RELEASE_SET, RUBRIC_V2_SET = "omni-rrm-release", "rubric-v2"
# The rewards a recipe names (`reward_funcs`), and the release's weights for them (TRL's `reward_weights`).
DEFAULT_WEIGHTS = {"format": 0.4, "preference": 0.4, "rubric": 0.2}
# The reward set that scores each output schema (PromptFormat.schema).
SET_FOR_SCHEMA = {"omni-rrm": RELEASE_SET, "rubric-v2": RUBRIC_V2_SET}

_RELEASED_LETTERS = (VERDICT_A, VERDICT_B, RELEASED_EQUAL)
_FENCE_EDGES = re.compile(r"^```(?:json)?\s*|\s*```$")
_THINK_AT_START = re.compile(r"<think>[\s\S]*?</think>")
_ANSWER_AT_START = re.compile(r"<answer>\[\[(A|B|equal)\]\]</answer>")
_THINK_EDGES = re.compile(r"^<think>\s*|\s*</think>$", re.I)
# A passage compares the answers when it names both (a letter on its own, maybe after "answer", "model"...), or
# speaks of them together with a comparative word.
_NAMED = r"(?<![A-Za-z])(?:candidate|answer|response|model|option)?\s*{}(?![A-Za-z])"
_NAMES_A, _NAMES_B = (re.compile(_NAMED.format(letter), re.I) for letter in "AB")
_TOGETHER = re.compile(r"\b(both|two|each|either|neither|all|responses?|candidates?|answers?)\b", re.I)
_COMPARATIVE = re.compile(r"\b(better|worse|superior|inferior|preferable|outperform\w*|more\s+\w+|less\s+\w+)\b",
                          re.I)


@dataclass(frozen=True)
class Truth:
    """What a row knows about its pair: the preferred answer (A, B or tie) and the teacher's scores, if any."""

    label: str | None = None
    score_a: float | None = None
    score_b: float | None = None


def completion_text(completion) -> str:
    """TRL passes plain strings, or conversational completions as lists of messages."""
    if isinstance(completion, list):
        return "".join(m.get("content", "") if isinstance(m.get("content"), str) else
                       "".join(p.get("text", "") for p in m.get("content", [])) for m in completion)
    return str(completion or "")


def json_object(text: str) -> dict | None:
    """The completion as one JSON object, a leading or trailing markdown fence tolerated; None otherwise."""
    try:
        obj = json.loads(_FENCE_EDGES.sub("", str(text).strip()))
    except (ValueError, RecursionError):
        return None
    if isinstance(obj, list) and obj and isinstance(obj[0], dict):
        obj = obj[0]
    return obj if isinstance(obj, dict) else None


def _is_score(x, allow_bool: bool = False) -> bool:
    # The release checks isinstance(x, int), which a JSON true or false passes (bool is an int in Python).
    return isinstance(x, int) and (allow_bool or not isinstance(x, bool)) and SCORE_MIN <= x <= SCORE_MAX


def _clipped_int(x) -> int:
    """A score as the release reads it: int() of the value (raises on what it cannot convert), clipped to 0-10."""
    return max(SCORE_MIN, min(SCORE_MAX, int(x)))


def _checklist(checks) -> float:
    """The weights of the checks passed, summed in order (the order the release adds them in)."""
    score = 0.0
    for weight, passed in checks:
        if passed:
            score += weight
    return score


def compares(passage: str) -> bool:
    """Whether a passage compares A with B: both named, or both spoken of together with a comparative word."""
    return bool((_NAMES_A.search(passage) and _NAMES_B.search(passage))
                or (_TOGETHER.search(passage) and _COMPARATIVE.search(passage)))


def _released_letter(label: str | None) -> str | None:
    return RELEASED_EQUAL if label == VERDICT_TIE else label


def _preference(verdict: str, label: str, closeness: float | None) -> float:
    direction = 1.0 if verdict == label else -1.0
    return direction if closeness is None else 0.6 * direction + 0.4 * closeness


def _closeness(pred_a, pred_b, teacher_a, teacher_b) -> float:
    return 1.0 - 2.0 * ((abs(pred_a - teacher_a) + abs(pred_b - teacher_b)) / 20.0)


# ---------------------------------------------------------------- omni-rrm-release

def release_format(text: str, truth: Truth = Truth(), rubric: Rubric = DEFAULT_RUBRIC) -> float:
    obj = json_object(text)
    if obj is None:
        return 0.0
    final = obj.get(KEY_FINAL_VERDICT, "")
    reasoning = obj.get(KEY_REASONING, "")
    letter = _ANSWER_AT_START.match(final.strip()) if isinstance(final, str) else None
    better = obj.get(KEY_BETTER)
    checks = (
        (0.20, True),
        (0.20, set(obj) == set(RELEASED_KEYS)),
        (0.15, _is_score(obj.get(KEY_SCORE_A), True) and _is_score(obj.get(KEY_SCORE_B), True)
         and isinstance(better, str) and better in _RELEASED_LETTERS),
        (0.15, isinstance(reasoning, str) and _THINK_AT_START.match(reasoning.strip()) is not None),
        (0.15, letter is not None),
        (0.15, letter is not None and letter.group(1) == better),
    )
    return _checklist(checks)


def release_preference(text: str, truth: Truth, rubric: Rubric = DEFAULT_RUBRIC) -> float:
    obj = json_object(text)
    if obj is None:
        return -1.0
    try:
        pred_a, pred_b = _clipped_int(obj[KEY_SCORE_A]), _clipped_int(obj[KEY_SCORE_B])
        better = str(obj[KEY_BETTER])
        teacher_a, teacher_b = _clipped_int(truth.score_a), _clipped_int(truth.score_b)
    except (KeyError, TypeError, ValueError, OverflowError):
        return -1.0
    consistent = {VERDICT_A: pred_a > pred_b, VERDICT_B: pred_b > pred_a, RELEASED_EQUAL: pred_a == pred_b}
    if not consistent.get(better, False):
        return -1.0
    reward = _preference(better, _released_letter(truth.label), _closeness(pred_a, pred_b, teacher_a, teacher_b))
    return max(-1.0, min(1.0, reward))


def criterion_passages(text: str, rubric: Rubric) -> dict[str, str]:
    """Per criterion marked in the text, its passage: from its first cue to the first cue of another after it."""
    patterns = [c.cue_pattern for c in rubric.criteria]
    out = {}
    for i, (criterion, pattern) in enumerate(zip(rubric.criteria, patterns)):
        found = pattern.search(text)
        if found is None:
            continue
        later = [m.start() for j, other in enumerate(patterns)
                 if j != i and (m := other.search(text, found.start() + 1)) is not None]
        # To the nearest later cue of another criterion; with none, to the end of the text.
        out[criterion.key] = text[found.start(): min(later) if later else len(text)]
    return out


def release_rubric(text: str, truth: Truth = Truth(), rubric: Rubric = DEFAULT_RUBRIC) -> float:
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        return -1.0
    reasoning = obj.get(KEY_REASONING, "") if isinstance(obj, dict) else None
    if not isinstance(reasoning, str):
        return -1.0
    passages = criterion_passages(_THINK_EDGES.sub("", reasoning.strip()), rubric)
    n = len(rubric.criteria)
    return 0.8 * (len(passages) / n) + 0.2 * (sum(map(compares, passages.values())) / n)


def release_verdict(text: str, rubric: Rubric = DEFAULT_RUBRIC) -> str | None:
    obj = json_object(text)
    better = obj.get(KEY_BETTER) if obj else None
    if not (isinstance(better, str) and better in _RELEASED_LETTERS):
        return None
    return VERDICT_TIE if better == RELEASED_EQUAL else better


# ---------------------------------------------------------------- rubric-v2

def _v2_entries(obj: dict, rubric: Rubric) -> list:
    crit = obj.get(KEY_CRITERIA)
    return [crit.get(k) if isinstance(crit, dict) else None for k in rubric.keys]


def _has_rationale(entry) -> bool:
    return isinstance(entry, dict) and isinstance(entry.get(KEY_RATIONALE), str) and bool(entry[KEY_RATIONALE].strip())


def _by_scores(score_a, score_b) -> str:
    return VERDICT_A if score_a > score_b else VERDICT_B if score_b > score_a else VERDICT_TIE


def _well_formed_v2(obj: dict | None) -> bool:
    return (obj is not None and set(obj) == set(RUBRIC_V2_KEYS) and _is_score(obj[KEY_SCORE_A])
            and _is_score(obj[KEY_SCORE_B]) and obj[KEY_VERDICT] in VERDICTS and isinstance(obj[KEY_CRITERIA], dict))


def v2_format(text: str, truth: Truth = Truth(), rubric: Rubric = DEFAULT_RUBRIC) -> float:
    obj = json_object(text)
    if obj is None:
        return 0.0
    sa, sb, verdict = obj.get(KEY_SCORE_A), obj.get(KEY_SCORE_B), obj.get(KEY_VERDICT)
    entries = _v2_entries(obj, rubric)
    scores_ok = _is_score(sa) and _is_score(sb)
    checks = (
        (0.20, True),
        (0.20, set(obj) == set(RUBRIC_V2_KEYS)),
        (0.15, scores_ok and isinstance(verdict, str) and verdict in VERDICTS),
        (0.15, all(map(_has_rationale, entries))),
        (0.15, all(isinstance(e, dict) and _is_score(e.get(KEY_SCORE_A)) and _is_score(e.get(KEY_SCORE_B))
                   for e in entries)),
        (0.15, scores_ok and verdict == _by_scores(sa, sb)),
    )
    return _checklist(checks)


def v2_preference(text: str, truth: Truth, rubric: Rubric = DEFAULT_RUBRIC) -> float:
    obj = json_object(text)
    if not _well_formed_v2(obj):
        return -1.0
    sa, sb, verdict = obj[KEY_SCORE_A], obj[KEY_SCORE_B], obj[KEY_VERDICT]
    if verdict != _by_scores(sa, sb):
        return -1.0
    teacher = (truth.score_a, truth.score_b)
    known = all(isinstance(t, (int, float)) and math.isfinite(t) for t in teacher)
    return _preference(verdict, truth.label, _closeness(sa, sb, *teacher) if known else None)


def v2_rubric(text: str, truth: Truth = Truth(), rubric: Rubric = DEFAULT_RUBRIC) -> float:
    obj = json_object(text)
    if obj is None:
        return -1.0
    if not _well_formed_v2(obj):
        return 0.0
    covered = [e for e in _v2_entries(obj, rubric) if _has_rationale(e)]
    compared = [e for e in covered if (_is_score(e.get(KEY_SCORE_A)) and _is_score(e.get(KEY_SCORE_B)))
                or compares(e[KEY_RATIONALE])]
    n = len(rubric.criteria)
    return 0.8 * (len(covered) / n) + 0.2 * (len(compared) / n)


def v2_verdict(text: str, rubric: Rubric = DEFAULT_RUBRIC) -> str | None:
    obj = json_object(text)
    return obj[KEY_VERDICT] if _well_formed_v2(obj) else None


# ---------------------------------------------------------------- sets, in TRL's shape

Component = Callable[[str, Truth, Rubric], float]


@dataclass(frozen=True)
class RewardSet:
    name: str
    components: dict[str, Component]  # format, preference, rubric
    verdict: Callable[[str, Rubric], str | None]  # the verdict as this set reads it (logged accuracy)


REWARD_SETS = {
    RELEASE_SET: RewardSet(RELEASE_SET, {"format": release_format, "preference": release_preference,
                                         "rubric": release_rubric}, release_verdict),
    RUBRIC_V2_SET: RewardSet(RUBRIC_V2_SET, {"format": v2_format, "preference": v2_preference,
                                             "rubric": v2_rubric}, v2_verdict),
}


def get_set(name: str) -> RewardSet:
    try:
        return REWARD_SETS[name]
    except KeyError:
        raise ValueError(f"unknown reward set {name!r}; known: {', '.join(REWARD_SETS)}") from None


def _column(values, i):
    return None if values is None else values[i]


def _scores(score: Component, completions, rubric: Rubric, label, score_a, score_b) -> list[float]:
    """`score` of each completion (every reward function's time is spent in here: train.grpo_profile)."""
    return [float(score(completion_text(c), Truth(_column(label, i), _column(score_a, i), _column(score_b, i)),
                        rubric)) for i, c in enumerate(completions)]


# TRL's reward_funcs: one score per completion, from the dataset columns TRL passes as keywords (label, score_a,
# score_b). Each is bound to its set and rubric by `bind`; TRL logs it under the function's own name.
def format_reward(reward_set: str, rubric: Rubric, completions, label=None, score_a=None, score_b=None, **_):
    """The set's format reward: is the completion a well-formed judgment of every criterion?"""
    return _scores(get_set(reward_set).components["format"], completions, rubric, label, score_a, score_b)


def preference_reward(reward_set: str, rubric: Rubric, completions, label=None, score_a=None, score_b=None, **_):
    """The set's preference reward: the verdict against the label, and the scores against the teacher's."""
    return _scores(get_set(reward_set).components["preference"], completions, rubric, label, score_a, score_b)


def rubric_reward(reward_set: str, rubric: Rubric, completions, label=None, score_a=None, score_b=None, **_):
    """The set's rubric reward: does the rationale cover the rubric's criteria?"""
    return _scores(get_set(reward_set).components["rubric"], completions, rubric, label, score_a, score_b)


def verdict_accuracy(reward_set: str, rubric: Rubric, completions, label=None, **_):
    """Logged at weight 0: 1 where the verdict, as the set reads it, is the label."""
    verdict = get_set(reward_set).verdict
    return _scores(lambda text, truth, r: float(verdict(text, r) == truth.label), completions, rubric, label, None,
                   None)


def format_valid(reward_set: str, rubric: Rubric, completions, label=None, score_a=None, score_b=None, **_):
    """Logged at weight 0: 1 where the format reward is full."""
    return [float(r > 1 - 1e-9) for r in format_reward(reward_set, rubric, completions, label, score_a, score_b)]


REWARD_FUNCS = {"format": format_reward, "preference": preference_reward, "rubric": rubric_reward}


def bind(fn: Callable, reward_set: str = RELEASE_SET, rubric: Rubric = DEFAULT_RUBRIC) -> functools.partial:
    """`fn` bound to a set and a rubric: a partial (TRL logs it under the wrapped function's name) carrying the
    function's name and docs for anything else that reads them. Bound by position, so that no dataset column
    can stand in for the set or the rubric."""
    get_set(reward_set)
    return functools.update_wrapper(functools.partial(fn, reward_set, rubric), fn)


def get_rewards(names: Sequence[str], reward_set: str = RELEASE_SET, rubric: Rubric = DEFAULT_RUBRIC) -> list:
    """The reward functions of these names (format, preference, rubric), bound to the set and the rubric."""
    unknown = [n for n in names if n not in REWARD_FUNCS]
    if unknown:
        raise ValueError(f"unknown reward {unknown[0]!r}; known: {', '.join(REWARD_FUNCS)}")
    return [bind(REWARD_FUNCS[name], reward_set, rubric) for name in names]


def logged_metrics(reward_set: str = RELEASE_SET, rubric: Rubric = DEFAULT_RUBRIC) -> list:
    """Logged beside the rewards with weight 0: verdict accuracy and the share of fully valid formats."""
    return [bind(verdict_accuracy, reward_set, rubric), bind(format_valid, reward_set, rubric)]
