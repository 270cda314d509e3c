"""The pairwise judge as a reward for someone else's RL: one number (or None) per completion.

Modes (`JudgeReward(judge, mode=...)`):

- `reference`: each completion is judged against its row's reference answer (the `reference` column), the
  completion as A. `scoring="outcome"`: a win is +1, a tie 0, a loss -1. `scoring="margin"`: the judge's
  overall scores, (score_A - score_B) / 10, in [-1, 1].
- `group`: the completions of one prompt (TRL's `num_generations` of them) are judged against each other
  and rewarded by their win rate, in [0, 1]: a win counts 1, a tie 1/2, over the matches that gave a verdict.
  Round robin up to `pivot_above` completions; past that, each is judged against the group's first (the pivot),
  which gets 1/2.
- `pointwise`: `Judge.grade` of the completion alone, its overall score / 10, in [0, 1].

A judgment that fails or cannot be read gives None (TRL turns it into NaN and leaves it out of the means):
no number is ever made up. The swap check is on by default, so a judge that prefers a position gives ties,
not wins. All the judgments of one call go to the judge's backend in one batch (`Judge.judge_batch` with a
batch as large as the call), which may be in process or an endpoint (`Judge.from_endpoint`, e.g. `rrm serve`).

Media come from the dataset's columns, per row: `image` / `images`, `video` / `videos`, `audio` / `audios`,
each a path, a decoded array or PIL image, or a list of them (an audio array as {"array", "sampling_rate"}).
So a multimodal policy is judged on what it saw.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import RRMError
from .formats import MEDIA_COLUMNS, text_of
from .schema import SCORE_MAX, SCORE_MIN, VERDICT_A, VERDICT_B, VERDICT_TIE, Judgment, MediaItem, Sample

MODES = ("reference", "group", "pointwise")
SCORINGS = ("outcome", "margin")
OUTCOME = {VERDICT_A: 1.0, VERDICT_TIE: 0.0, VERDICT_B: -1.0}  # the completion is A
WIN_SHARE = {VERDICT_A: 1.0, VERDICT_TIE: 0.5, VERDICT_B: 0.0}
PIVOT_ABOVE = 8  # groups larger than this are judged against a pivot, not round robin


def media_of(columns: dict, i: int) -> list[MediaItem]:
    """Row i's media, from the dataset columns TRL passes to a reward function."""
    media = []
    for kind, column in ((k, c) for k, names in MEDIA_COLUMNS.items() for c in names):
        values = columns.get(column)
        value = None if values is None else values[i]
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if v is None:
                continue
            if isinstance(v, str):
                media.append(MediaItem(kind, v))
            elif isinstance(v, dict) and "array" in v:
                media.append(MediaItem(kind, data=v["array"], sampling_rate=v.get("sampling_rate")))
            else:
                media.append(MediaItem(kind, data=v))
    return media


@dataclass
class JudgeReward:
    """A TRL `reward_funcs` entry (GRPOTrainer calls it with prompts, completions and the dataset's columns as
    keywords) over a Judge. TRL logs it under `__name__`: `rewards/<name>/mean`."""

    judge: object
    mode: str = "reference"
    scoring: str = "outcome"
    swap_check: bool = True
    pivot_above: int = PIVOT_ABOVE
    reference_column: str = "reference"
    name: str | None = None  # what TRL logs it as (default judge_<mode>): two judges need two names

    def __post_init__(self):
        if self.mode not in MODES:
            raise RRMError(f"reward mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.scoring not in SCORINGS:
            raise RRMError(f"reward scoring must be one of {', '.join(SCORINGS)}, got {self.scoring!r}")
        self.__name__ = self.name or f"judge_{self.mode}"

    def __call__(self, prompts: Sequence, completions: Sequence, **columns) -> list[float | None]:
        queries = [text_of(p) for p in prompts]
        answers = [text_of(c) for c in completions]
        media = [media_of(columns, i) for i in range(len(answers))]
        if self.mode == "pointwise":
            return self._pointwise(queries, answers, media)
        if self.mode == "reference":
            return self._against_reference(queries, answers, media, columns.get(self.reference_column))
        return self._group(queries, answers, media)

    def _judged(self, samples: list[Sample]) -> list[Judgment]:
        return self.judge.judge_batch(samples, batch_size=max(1, len(samples)), swap_check=self.swap_check,
                                      progress=False) if samples else []

    def _value(self, j: Judgment) -> float | None:
        if j.verdict is None:
            return None
        if self.scoring == "outcome":
            return OUTCOME[j.verdict]
        if j.score_a is None or j.score_b is None:
            return None
        return (j.score_a - j.score_b) / (SCORE_MAX - SCORE_MIN)

    def _against_reference(self, queries, answers, media, references) -> list[float | None]:
        if references is None:
            raise RRMError(f"mode reference needs a {self.reference_column!r} column in the dataset")
        rows = [i for i, r in enumerate(references) if r and str(r).strip() and answers[i].strip()]
        samples = [Sample(queries[i], answers[i], str(references[i]), media=media[i], id=f"row-{i}") for i in rows]
        rewards: list[float | None] = [None] * len(answers)
        for i, j in zip(rows, self._judged(samples)):
            rewards[i] = self._value(j)
        return rewards

    def _pointwise(self, queries, answers, media) -> list[float | None]:
        samples = [Sample(q, a, "", media=m, id=f"row-{i}") for i, (q, a, m) in enumerate(zip(queries, answers, media))]
        return [None if g.score is None else (g.score - SCORE_MIN) / (SCORE_MAX - SCORE_MIN)
                for g in self.judge.grade_batch(samples)]

    def _group(self, queries, answers, media) -> list[float | None]:
        groups: dict[str, list[int]] = {}
        for i, q in enumerate(queries):  # TRL puts a prompt's completions side by side; key on the prompt itself
            groups.setdefault(q + repr([(m.kind, m.path) for m in media[i]]), []).append(i)
        matches = [pair for members in groups.values() for pair in self._matches(members)]
        samples = [Sample(queries[a], answers[a], answers[b], media=media[a], id=f"{a}-vs-{b}") for a, b in matches]
        won: dict[int, list[float]] = {i: [] for i in range(len(answers))}
        for (a, b), j in zip(matches, self._judged(samples)):
            if j.verdict is not None:
                won[a].append(WIN_SHARE[j.verdict])
                won[b].append(1.0 - WIN_SHARE[j.verdict])
        pivots = {members[0] for members in groups.values() if len(members) > self.pivot_above}
        return [0.5 if i in pivots else (sum(w) / len(w) if w else None) for i, w in won.items()]

    def _matches(self, members: list[int]) -> list[tuple[int, int]]:
        if len(members) > self.pivot_above:
            return [(i, members[0]) for i in members[1:]]
        return [(a, b) for n, a in enumerate(members) for b in members[n + 1:]]


class AsyncJudgeReward(JudgeReward):
    """The same reward for TRL's async reward functions: the judging runs in a worker thread, so the trainer's
    event loop goes on (an endpoint judge then overlaps with the rest of the step)."""

    async def __call__(self, prompts: Sequence, completions: Sequence, **columns) -> list[float | None]:
        return await asyncio.to_thread(JudgeReward.__call__, self, prompts, completions, **columns)


# ------------------------------------------------------------------ other frameworks
# ms-swift builds its rewards with no arguments, and verl passes only what its config's reward_kwargs hold: both
# find the judge through these environment variables (or keywords of the same names, lower case, for verl).
ENV_MODEL, ENV_ENDPOINT = "RRM_JUDGE_MODEL", "RRM_JUDGE_ENDPOINT"
ENV_KEY, ENV_MODE = "RRM_JUDGE_KEY_ENV", "RRM_REWARD_MODE"
_JUDGES: dict[tuple, object] = {}


def judge_from(model: str | None = None, endpoint: str | None = None, key_env: str | None = None):
    """The judge these settings name (default: the environment's), loaded once per process: a checkpoint in
    process, or with `endpoint` a served one (`rrm serve`, vLLM) whose key is in the variable `key_env`."""
    import os

    model = model or os.environ.get(ENV_MODEL)
    endpoint = endpoint or os.environ.get(ENV_ENDPOINT)
    key_env = key_env or os.environ.get(ENV_KEY)
    if not model:
        raise RRMError(f"no judge: set {ENV_MODEL} (a checkpoint, or the served model's name with {ENV_ENDPOINT})")
    settings = (model, endpoint, key_env)
    if settings not in _JUDGES:
        from .judge import Judge

        _JUDGES[settings] = (Judge.from_endpoint(endpoint, model, api_key_env=key_env) if endpoint
                             else Judge.from_pretrained(model))
    return _JUDGES[settings]


def _floats(rewards: list[float | None]) -> list[float]:
    """For frameworks that take floats only: no verdict is NaN, never a made-up score."""
    return [float("nan") if r is None else r for r in rewards]


def swift_rewards(completions: Sequence[str], messages=None, solution=None, **columns) -> list[float]:
    """ms-swift's ORM call: completions, then the dataset's columns (`messages`: each row's conversation, whose
    last user turn is the query; `solution`: the reference). The mode is $RRM_REWARD_MODE (default reference);
    no verdict is NaN."""
    import os

    if messages is None:
        raise RRMError("ms-swift passed no messages column: the query comes from each row's last user turn")
    reward = JudgeReward(judge_from(), mode=os.environ.get(ENV_MODE, "reference"), reference_column="solution")
    return _floats(reward(list(messages), list(completions), solution=solution, **columns))


def compute_score_batch(data_sources, solution_strs, ground_truths, extra_infos=None, model: str | None = None,
                        endpoint: str | None = None, key_env: str | None = None, mode: str = "reference",
                        scoring: str = "outcome", swap_check: bool = True) -> list[float]:
    """verl's batched custom reward function: each response judged against its ground truth (the reference);
    the query and the media are the row's extra_info ("question" or "prompt"; "image", "images", ...). verl
    takes floats: a judgment with no verdict is NaN, never a made-up score."""
    infos = list(extra_infos or [{}] * len(solution_strs))
    queries = [str((i or {}).get("question") or (i or {}).get("prompt") or "") for i in infos]
    columns = {c: [(i or {}).get(c) for i in infos] for names in MEDIA_COLUMNS.values() for c in names}
    reward = JudgeReward(judge_from(model, endpoint, key_env), mode=mode, scoring=scoring, swap_check=swap_check)
    return _floats(reward(queries, list(solution_strs), reference=list(ground_truths), **columns))


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **settings) -> float:
    """verl's per-sample custom reward function (one judgment: prefer compute_score_batch for throughput)."""
    return compute_score_batch([data_source], [solution_str], [ground_truth], [extra_info], **settings)[0]
