"""The filter rules of the synthesis pipeline: pure functions over pairs and teacher judgments.

A pair is kept only when every teacher is readable and agrees with itself
across the two orders, all teachers give the same non-tie verdict, and the
pair passes the rule filters. Each dropped pair gets the first reason that
applies, in the order of `REASONS`.
"""

from __future__ import annotations

import difflib
import random
import re
from dataclasses import dataclass, field

from rrm.rubric import Rubric
from rrm.schema import VERDICT_A, VERDICT_B, VERDICT_TIE, Judgment

# Why a pair is dropped, in the order the rules are applied.
GENERATION_FAILED = "generation failed"
EMPTY = "empty response"
REFUSAL = "refused response"
NEAR_DUPLICATE = "near-duplicate responses"
DUPLICATE = "duplicate pair"
NOT_ANNOTATED = "not annotated by every teacher"
TEACHER_FAILED = "teacher call failed"
UNREADABLE = "unreadable teacher output"
ORDERS_DISAGREE = "a teacher's two orders disagree"
INCONSISTENT = "scores contradict the verdict"
MALFORMED = "malformed rationale"
TIE = "tie"
TEACHERS_DISAGREE = "teachers disagree"
BELOW_FLOOR = "both responses below the quality floor"
LENGTH_REBALANCE = "length rebalance"
REASONS = (GENERATION_FAILED, EMPTY, REFUSAL, NEAR_DUPLICATE, DUPLICATE, NOT_ANNOTATED, TEACHER_FAILED, UNREADABLE,
           ORDERS_DISAGREE, INCONSISTENT, MALFORMED, TIE, TEACHERS_DISAGREE, BELOW_FLOOR, LENGTH_REBALANCE)

_REFUSAL = re.compile(
    r"^\W*(i'?m sorry|i am sorry|sorry,? (but )?i|i cannot|i can'?t|i'?m (not able|unable)|i am (not able|unable)"
    r"|as an ai\b|i won'?t be able)", re.IGNORECASE)


@dataclass
class FilterRules:
    quality_floor: float = 4.0  # drop when both responses' mean teacher score is below this
    hard_gap: float = 2.0  # rl split: teacher score gap at most this
    near_duplicate: float = 0.9  # similarity of the two responses at or above which they are too alike
    max_longer_wins: float | None = None  # rebalance: at most this share of kept pairs won by the longer response
    seed: int = 0


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, normalise(a), normalise(b), autojunk=False).ratio()


def is_refusal(text: str) -> bool:
    return bool(_REFUSAL.match(text.strip()))


def response_problem(response_a: str | None, response_b: str | None, rules: FilterRules) -> str | None:
    """A reason to drop the pair before any teacher sees it, or None."""
    if response_a is None or response_b is None:
        return GENERATION_FAILED
    if not response_a.strip() or not response_b.strip():
        return EMPTY
    if is_refusal(response_a) or is_refusal(response_b):
        return REFUSAL
    if similarity(response_a, response_b) >= rules.near_duplicate:
        return NEAR_DUPLICATE
    return None


def pair_key(query: str, media: list[str], response_a: str, response_b: str) -> tuple:
    """Equal for pairs that differ only in case, spacing, punctuation or A/B order."""
    return normalise(query), tuple(media), frozenset((normalise(response_a), normalise(response_b)))


def teacher_problem(judgment: Judgment, rubric: Rubric) -> str | None:
    """Why a teacher's two-order judgment does not count, or None when it does."""
    swap = judgment.swap
    if swap is None or swap.verdict_ab is None or swap.verdict_ba is None:
        return UNREADABLE
    if swap.agree is False:
        return ORDERS_DISAGREE
    orders = [judgment, swap.other] if swap.other else [judgment]
    if not all(j.status.consistent for j in orders) or judgment.score_a is None or judgment.score_b is None:
        return INCONSISTENT
    for j in orders:
        if any(not (j.criterion(c.key) and j.criterion(c.key).rationale.strip()) for c in rubric.criteria):
            return MALFORMED
    return None


def consensus(judgments: dict[str, Judgment | None], rubric: Rubric) -> tuple[str | None, str | None]:
    """(label, None) when every teacher counts and all give the same non-tie verdict; else (None, reason)."""
    if any(j is None for j in judgments.values()):
        return None, NOT_ANNOTATED
    for j in judgments.values():
        problem = teacher_problem(j, rubric)
        if problem:
            return None, problem
    verdicts = {j.verdict for j in judgments.values()}
    if VERDICT_TIE in verdicts:
        return None, TIE
    if len(verdicts) > 1:
        return None, TEACHERS_DISAGREE
    return verdicts.pop(), None


def mean_scores(judgments: list[Judgment]) -> tuple[float, float]:
    """Each response's teacher score, averaged over teachers (each already averaged over both orders)."""
    return (sum(j.score_a for j in judgments) / len(judgments), sum(j.score_b for j in judgments) / len(judgments))


def longer_won(label: str, response_a: str, response_b: str) -> bool | None:
    """Whether the longer response (in words) is the better one; None when they are as long."""
    la, lb = len(response_a.split()), len(response_b.split())
    if la == lb or label not in (VERDICT_A, VERDICT_B):
        return None
    return (label == VERDICT_A) == (la > lb)


def longer_wins_share(records: list[dict]) -> float | None:
    flags = [f for f in (longer_won(r["label"], r["response_a"], r["response_b"]) for r in records) if f is not None]
    return sum(flags) / len(flags) if flags else None


def rebalance(records: list[dict], max_share: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(kept, dropped): drop seeded-random pairs won by the longer response until its share is at most max_share."""
    wins = [i for i, r in enumerate(records) if longer_won(r["label"], r["response_a"], r["response_b"]) is True]
    losses = sum(longer_won(r["label"], r["response_a"], r["response_b"]) is False for r in records)
    # Keep k longer-wins pairs with k / (k + losses) <= max_share.
    keep = len(wins) if max_share >= 1 else int(max_share * losses / (1 - max_share) + 1e-9)
    if keep >= len(wins):
        return records, []
    drop = set(random.Random(seed).sample(wins, len(wins) - keep))
    return ([r for i, r in enumerate(records) if i not in drop], [r for i, r in enumerate(records) if i in drop])


@dataclass
class Tally:
    """Kept and dropped counts per modality and reason."""

    kept: dict = field(default_factory=dict)  # modality -> n
    dropped: dict = field(default_factory=dict)  # reason -> modality -> n
    longer_wins_before: float | None = None  # the length-bias figure before any rebalancing

    def keep(self, modality: str) -> None:
        self.kept[modality] = self.kept.get(modality, 0) + 1

    def drop(self, reason: str, modality: str) -> None:
        per = self.dropped.setdefault(reason, {})
        per[modality] = per.get(modality, 0) + 1
