"""The one contract: what a sample is, what a judgment is, and their JSON form.

Everything else (prompts, parser, rewards, evaluation, the app, the data
pipeline) imports these names instead of spelling keys or verdict letters
itself. A judgment's verdict is always relative to the caller's A and B,
whatever order the model saw (`Judgment.order` records that order).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

# Verdict letters, relative to the caller's A and B.
VERDICT_A = "A"
VERDICT_B = "B"
VERDICT_TIE = "tie"
VERDICTS = (VERDICT_A, VERDICT_B, VERDICT_TIE)

# Media kinds a sample may carry.
IMAGE, VIDEO, AUDIO = "image", "video", "audio"
MEDIA_KINDS = (IMAGE, VIDEO, AUDIO)
TEXT = "text"  # the modality of a sample without media

# Orders in which a pair can be shown to the model.
ORDER_AB, ORDER_BA = "AB", "BA"

SCORE_MIN, SCORE_MAX = 0, 10

# Keys of the released Omni-RRM output schema (what the released checkpoints emit).
KEY_SCORE_A = "score_A"
KEY_SCORE_B = "score_B"
KEY_BETTER = "better"
KEY_REASONING = "reasoning"
KEY_FINAL_VERDICT = "final_verdict"
RELEASED_KEYS = (KEY_SCORE_A, KEY_SCORE_B, KEY_BETTER, KEY_REASONING, KEY_FINAL_VERDICT)
RELEASED_EQUAL = "equal"  # the released schema's word for a tie

# Keys of the project's rubric-v2 output schema (verdict last so it streams last).
KEY_CRITERIA = "criteria"
KEY_RATIONALE = "rationale"
KEY_VERDICT = "verdict"
RUBRIC_V2_KEYS = (KEY_CRITERIA, KEY_SCORE_A, KEY_SCORE_B, KEY_VERDICT)
# Pointwise grading of a single response.
KEY_SCORE = "score"


def flip_verdict(verdict: str | None) -> str | None:
    """The same verdict seen from the other order: A <-> B, tie and None unchanged."""
    return {VERDICT_A: VERDICT_B, VERDICT_B: VERDICT_A}.get(verdict, verdict)


@dataclass
class MediaItem:
    """One image, video or audio clip: by path, or already decoded.

    `data` holds a decoded payload (a PIL image, a uint8 frame array of shape
    (T, H, W, 3), or a float32 mono waveform); `fps` and `sampling_rate` go with
    decoded video and audio.
    """

    kind: Literal["image", "video", "audio"]
    path: str | None = None
    data: Any = None
    fps: float | None = None
    sampling_rate: int | None = None

    def __post_init__(self):
        if self.kind not in MEDIA_KINDS:
            raise ValueError(f"media kind must be one of {', '.join(MEDIA_KINDS)}, got {self.kind!r}")
        if self.path is None and self.data is None:
            raise ValueError(f"a {self.kind} item needs a path or decoded data")

    def to_dict(self) -> dict:
        # Decoded arrays do not go to JSON: a judgment records where media came from.
        d = {"kind": self.kind, "path": self.path}
        if self.fps is not None:
            d["fps"] = self.fps
        if self.sampling_rate is not None:
            d["sampling_rate"] = self.sampling_rate
        return d

    @classmethod
    def from_dict(cls, d: dict) -> MediaItem:
        return cls(kind=d["kind"], path=d.get("path"), data=d.get("data"), fps=d.get("fps"),
                   sampling_rate=d.get("sampling_rate"))


@dataclass
class Sample:
    """A query (text plus optional media) and two candidate responses."""

    query: str
    response_a: str
    response_b: str
    media: list[MediaItem] = field(default_factory=list)
    reference: str | None = None
    id: str | None = None

    @property
    def modality(self) -> str:
        """'text', or the kind of the first media item."""
        return self.media[0].kind if self.media else TEXT

    def swapped(self) -> Sample:
        return dataclasses.replace(self, response_a=self.response_b, response_b=self.response_a)

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "query": self.query,
            "media": [m.to_dict() for m in self.media],
            "response_a": self.response_a,
            "response_b": self.response_b,
            "reference": self.reference,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Sample:
        return cls(
            query=d["query"],
            response_a=d["response_a"],
            response_b=d["response_b"],
            media=[MediaItem.from_dict(m) for m in d.get("media") or []],
            reference=d.get("reference"),
            id=d.get("id"),
        )


@dataclass
class CriterionResult:
    """The judge's finding on one rubric criterion."""

    key: str
    title: str
    rationale: str = ""
    score_a: float | None = None
    score_b: float | None = None
    winner: str | None = None  # one of VERDICTS, or None when the format gives none

    def swapped(self) -> CriterionResult:
        return dataclasses.replace(self, score_a=self.score_b, score_b=self.score_a, winner=flip_verdict(self.winner))


@dataclass
class ParseStatus:
    """How the raw output was read.

    ok: a verdict was read from the model's own output. consistent: the output
    agrees with itself (verdict fields agree, scores order as the verdict says).
    format: which output variant was recognised. errors: what was wrong or missing.
    """

    ok: bool
    format: str
    errors: list[str] = field(default_factory=list)
    consistent: bool = True


@dataclass
class Timing:
    ttft_s: float | None = None  # time to first generated token
    total_s: float | None = None
    generated_tokens: int | None = None
    tokens_per_s: float | None = None  # decode rate, after the first token
    prompt_tokens: int | None = None  # the prompt, media included, as the backend counted it


@dataclass
class SwapCheck:
    """The same pair judged in the other order, mapped back to the caller's A and B."""

    agree: bool | None  # None when one of the two orders gave no verdict
    verdict_ab: str | None
    verdict_ba: str | None
    other: Judgment | None = None


@dataclass
class Judgment:
    verdict: str | None  # one of VERDICTS, None when the output could not be read
    score_a: float | None
    score_b: float | None
    criteria: list[CriterionResult]
    raw: str
    status: ParseStatus
    order: str = ORDER_AB  # the order the model saw the pair in
    swap: SwapCheck | None = None
    timing: Timing | None = None
    model: str | None = None
    sample_id: str | None = None
    # Per video of the sample, what the judge heard: {"video": file name, "audio_s": seconds or None, "note"}.
    heard: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status.ok

    def criterion(self, key: str) -> CriterionResult | None:
        return next((c for c in self.criteria if c.key == key), None)

    def swapped(self) -> Judgment:
        """Verdict, scores and criteria re-expressed with A and B exchanged (`order` is kept)."""
        return dataclasses.replace(
            self,
            verdict=flip_verdict(self.verdict),
            score_a=self.score_b,
            score_b=self.score_a,
            criteria=[c.swapped() for c in self.criteria],
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Judgment:
        swap = d.get("swap")
        if swap is not None:
            other = swap.get("other")
            swap = SwapCheck(
                agree=swap.get("agree"),
                verdict_ab=swap.get("verdict_ab"),
                verdict_ba=swap.get("verdict_ba"),
                other=cls.from_dict(other) if other else None,
            )
        timing = d.get("timing")
        return cls(
            verdict=d.get("verdict"),
            score_a=d.get("score_a"),
            score_b=d.get("score_b"),
            criteria=[CriterionResult(**c) for c in d.get("criteria") or []],
            raw=d.get("raw", ""),
            status=ParseStatus(**d["status"]),
            order=d.get("order", ORDER_AB),
            swap=swap,
            timing=Timing(**timing) if timing else None,
            model=d.get("model"),
            sample_id=d.get("sample_id"),
            heard=list(d.get("heard") or []),
        )


@dataclass
class Grade:
    """Pointwise grading of a single response: an overall score and one per criterion."""

    score: float | None
    criteria: list[CriterionResult]  # the criterion score is in score_a
    raw: str
    status: ParseStatus
    timing: Timing | None = None
    model: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Grade:
        timing = d.get("timing")
        return cls(
            score=d.get("score"),
            criteria=[CriterionResult(**c) for c in d.get("criteria") or []],
            raw=d.get("raw", ""),
            status=ParseStatus(**d["status"]),
            timing=Timing(**timing) if timing else None,
            model=d.get("model"),
        )
