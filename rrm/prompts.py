"""Chat messages for a sample, per prompt format, in either A/B order.

Formats (a registry; `get_format` fails listing the known names):
- `omni-rrm-release`: the layout of the released Omni-Preference training rows
  (the instruction, then a `### Context` block with a `<Modality> file: <name>`
  line, `Question:`, `Candidate A:`, `Candidate B:`) and ms-swift's default system
  turn, asking for the released output schema: what a released checkpoint gets.
- `omni-rrm`: this project's layout (`[Question]`, `[Answer A]`, `[Answer B]`)
  asking for the same schema (score_A, score_B, better, reasoning as
  <think>Part 1..N</think>, final_verdict as <answer>[[X]]</answer>).
- `rubric-v2`: per-criterion rationale and scores for A and B, modality facets,
  ties allowed, the verdict last so that it streams last.
A user template (`TemplateFormat`, `--prompt-template FILE`) replaces the user
text of a format; it uses ${question}, ${answer_a}, ${answer_b} (required) and
${criteria}, ${facets}, ${media} (the kind), ${media_file} (the file's name),
${reference} (optional). A user system text (`--system-prompt FILE`) replaces
the system turn of any format.

Media parts come before the text in the user turn. Each part is a
placeholder ({"type": "image"}): the decoded media go to the processor beside
the rendered text, in the same order.
"""

from __future__ import annotations

import copy
import json
import string
from pathlib import Path

from .errors import RRMError
from .limits import MAX_TEMPLATE_CHARS, over
from .release import RELEASE_PROFILE, RELEASE_SYSTEM, is_release
from .rubric import DEFAULT_RUBRIC, Rubric
from .schema import (
    AUDIO, IMAGE, KEY_BETTER, KEY_CRITERIA, KEY_FINAL_VERDICT, KEY_RATIONALE, KEY_REASONING, KEY_SCORE,
    KEY_SCORE_A, KEY_SCORE_B, KEY_VERDICT, ORDER_AB, ORDER_BA, RELEASED_EQUAL, VERDICT_TIE, VIDEO,
    Judgment, Sample,
)

SYSTEM_PROMPT = (
    "You are a meticulous evaluator with broad experience in multimodal reasoning over text, "
    "images, videos and audio. You judge answers fairly, whatever their order or length."
)

_MEDIA_NOUN = {IMAGE: "an image", VIDEO: "a video", AUDIO: "an audio clip"}
_MEDIA_SHORT = {IMAGE: "image", VIDEO: "video", AUDIO: "audio clip"}
_MEDIA_LABEL = {IMAGE: "Image", VIDEO: "Video", AUDIO: "Audio"}  # the release's "<Modality> file:" line

_SCORE_BANDS = (
    "Score bands (integers from 0 to 10):\n"
    "- 9-10: excellent on every criterion.\n"
    "- 6-8: good, with minor problems on one or two criteria.\n"
    "- 3-5: clear problems on two or three criteria.\n"
    "- 0-2: poor on four or more criteria."
)


def answer_tag(verdict: str | None) -> str:
    """The released final_verdict string for a verdict (tie is written 'equal')."""
    letter = RELEASED_EQUAL if verdict == VERDICT_TIE else verdict
    return f"<answer>[[{letter}]]</answer>"


def _responses(sample: Sample, order: str) -> tuple[str, str]:
    if order == ORDER_AB:
        return sample.response_a, sample.response_b
    if order == ORDER_BA:
        return sample.response_b, sample.response_a
    raise RRMError(f"order must be {ORDER_AB!r} or {ORDER_BA!r}, got {order!r}")


def _context(sample: Sample, order: str) -> str:
    first, second = _responses(sample, order)
    parts = [f"[Question]\n{sample.query}"]
    if sample.reference:
        parts.append(f"[Reference answer]\n{sample.reference}")
    parts += [f"[Answer A]\n{first}", f"[Answer B]\n{second}"]
    return "\n\n".join(parts)


def _media_name(item) -> str:
    """The file name of a media item (never its folder: prompts do not carry server paths)."""
    return Path(item.path).name if item.path else item.kind


def _task_line(sample: Sample, names: tuple[str, str] = ("Answer A", "Answer B")) -> str:
    about = f" about {_MEDIA_NOUN[sample.modality]}" if sample.media else ""
    return f"You will see a question{about} and two candidate answers, {names[0]} and {names[1]}."


def _criteria_list(rubric: Rubric, modality: str, with_facets: bool) -> str:
    lines = []
    for i, c in enumerate(rubric.criteria, 1):
        title = c.title
        if c.key == "relevance" and modality in _MEDIA_SHORT:
            title = f"{c.title} to the question and to the {_MEDIA_SHORT[modality]}"
        lines.append(f"{i}. {title} ({c.key}): {c.description}")
    facets = rubric.facets_for(modality) if with_facets else ()
    if facets:
        lines.append(f"For this {_MEDIA_SHORT[modality]}, also check:")
        lines += [f"- {f}" for f in facets]
    return "\n".join(lines)


class PromptFormat:
    """A way of asking for a judgment. Subclasses give the instructions and render targets."""

    name = ""
    schema = ""  # the output it asks for: "omni-rrm" (the released keys) or "rubric-v2"
    default_system = SYSTEM_PROMPT
    system_override: str | None = None

    @property
    def system(self) -> str:
        """The system turn: the format's own, unless replaced (`with_system`)."""
        return self.default_system if self.system_override is None else self.system_override

    def with_system(self, text: str) -> PromptFormat:
        if len(text) > MAX_TEMPLATE_CHARS:
            raise RRMError(over("the system prompt", len(text), MAX_TEMPLATE_CHARS))
        other = copy.copy(self)
        other.system_override = text
        return other

    def instructions(self, sample: Sample, rubric: Rubric) -> str:
        raise NotImplementedError

    def render(self, judgment: Judgment, rubric: Rubric = DEFAULT_RUBRIC) -> str:
        """The output text a model should produce for this judgment (an SFT target)."""
        raise NotImplementedError

    def user_text(self, sample: Sample, rubric: Rubric, order: str) -> str:
        return f"{self.instructions(sample, rubric)}\n\n{_context(sample, order)}"


class OmniRRMFormat(PromptFormat):
    name = "omni-rrm"
    schema = "omni-rrm"
    answer_names = ("Answer A", "Answer B")

    def instructions(self, sample: Sample, rubric: Rubric) -> str:
        n = len(rubric.criteria)
        parts = " ".join(f"Part {i}: ..." for i in range(1, n + 1))
        return "\n\n".join([
            f"{_task_line(sample, self.answer_names)} Compare them on the {n} criteria below.",
            "Criteria:\n" + _criteria_list(rubric, sample.modality, with_facets=False),
            _SCORE_BANDS,
            "How to work:\n"
            "1. First imagine the ideal answer to the question.\n"
            f"2. Evaluate both answers against it on all {n} criteria.\n"
            "3. Give each answer an overall integer score from 0 to 10.\n"
            '4. Decide which answer is better: "A", "B" or "equal".\n'
            "5. Explain the comparison, one part per criterion, in the order listed.",
            "Output rules:\n"
            "- Reply with one valid JSON object and nothing else: no markdown fences, no text before or after.\n"
            "- Use double quotes for every key and string.\n"
            f'- "{KEY_REASONING}" is one string: <think>{parts}</think>, with line breaks written as \\n.\n'
            f'- "{KEY_BETTER}" must agree with the scores and with "{KEY_FINAL_VERDICT}".',
            f'Required keys: "{KEY_SCORE_A}" (integer), "{KEY_SCORE_B}" (integer), "{KEY_BETTER}" '
            f'("A", "B" or "equal"), "{KEY_REASONING}", "{KEY_FINAL_VERDICT}" ({answer_tag("A")}, '
            f'{answer_tag("B")} or {answer_tag(VERDICT_TIE)}).',
        ])

    def render(self, judgment: Judgment, rubric: Rubric = DEFAULT_RUBRIC) -> str:
        by_key = {c.key: c.rationale for c in judgment.criteria}
        parts = "\n".join(f"Part {i}: {by_key.get(c.key, '')}" for i, c in enumerate(rubric.criteria, 1))
        better = RELEASED_EQUAL if judgment.verdict == VERDICT_TIE else judgment.verdict
        return json.dumps({
            KEY_SCORE_A: _int_or_none(judgment.score_a),
            KEY_SCORE_B: _int_or_none(judgment.score_b),
            KEY_BETTER: better,
            KEY_REASONING: f"<think>{parts}</think>",
            KEY_FINAL_VERDICT: answer_tag(judgment.verdict),
        }, ensure_ascii=False)


class ReleaseFormat(OmniRRMFormat):
    """The released checkpoints' prompt: their training rows' layout and system turn, in this project's wording.

    The user turn holds the media, then the instruction (the five criteria by name, the 0-10 bands, the steps,
    the output rules and keys), then a `### Context` block labelled as in the released rows.
    """

    name = RELEASE_PROFILE
    default_system = RELEASE_SYSTEM
    answer_names = ("Candidate A", "Candidate B")

    def instructions(self, sample: Sample, rubric: Rubric) -> str:
        role = "You are a careful, fair evaluator with experience in reasoning over text, images, videos and audio."
        return f"{role}\n\n{super().instructions(sample, rubric)}"

    def user_text(self, sample: Sample, rubric: Rubric, order: str) -> str:
        first, second = _responses(sample, order)
        lines = [f"{_MEDIA_LABEL[m.kind]} file: {_media_name(m)}" for m in sample.media]
        lines.append(f"Question: {sample.query}")
        if sample.reference:
            lines.append(f"Reference answer: {sample.reference}")
        lines += [f"Candidate A: {first}", f"Candidate B: {second}"]
        return f"{self.instructions(sample, rubric)}\n\n### Context\n" + "\n".join(lines)


class RubricV2Format(PromptFormat):
    name = "rubric-v2"
    schema = "rubric-v2"

    def instructions(self, sample: Sample, rubric: Rubric) -> str:
        keys = ", ".join(f'"{k}"' for k in rubric.keys)
        example = {
            KEY_CRITERIA: {rubric.keys[0]: {KEY_RATIONALE: "...", KEY_SCORE_A: 0, KEY_SCORE_B: 0}, "...": {}},
            KEY_SCORE_A: 0, KEY_SCORE_B: 0, KEY_VERDICT: "A | B | tie",
        }
        return "\n\n".join([
            f"{_task_line(sample)} Compare them criterion by criterion.",
            "Criteria:\n" + _criteria_list(rubric, sample.modality, with_facets=True),
            _SCORE_BANDS,
            "How to work:\n"
            "1. First imagine the ideal answer to the question.\n"
            "2. For each criterion in the order listed, compare A with B, citing what each answer says, "
            "and score both from 0 to 10.\n"
            "3. Give each answer an overall score from 0 to 10.\n"
            '4. Last, give the verdict: "A", "B", or "tie" when neither is better.',
            "Output rules:\n"
            "- Reply with one valid JSON object and nothing else: no markdown fences, no text before or after.\n"
            f'- "{KEY_CRITERIA}" has exactly these keys, in this order: {keys}.\n'
            f'- Write "{KEY_VERDICT}" last; it must agree with the overall scores.\n'
            "Shape:\n" + json.dumps(example),
        ])

    def render(self, judgment: Judgment, rubric: Rubric = DEFAULT_RUBRIC) -> str:
        by_key = {c.key: c for c in judgment.criteria}
        criteria = {}
        for c in rubric.criteria:
            found = by_key.get(c.key)
            criteria[c.key] = {
                KEY_RATIONALE: found.rationale if found else "",
                KEY_SCORE_A: _int_or_none(found.score_a) if found else None,
                KEY_SCORE_B: _int_or_none(found.score_b) if found else None,
            }
        return json.dumps({
            KEY_CRITERIA: criteria,
            KEY_SCORE_A: _int_or_none(judgment.score_a),
            KEY_SCORE_B: _int_or_none(judgment.score_b),
            KEY_VERDICT: judgment.verdict,
        }, ensure_ascii=False)


class TemplateFormat(PromptFormat):
    """A user-written template for the user text; the output schema stays that of `base`."""

    REQUIRED = ("question", "answer_a", "answer_b")

    def __init__(self, text: str, base: PromptFormat | None = None, source: str = "template"):
        if len(text) > MAX_TEMPLATE_CHARS:
            raise RRMError(over(f"prompt template {source}", len(text), MAX_TEMPLATE_CHARS))
        self.text = text
        self.template = string.Template(text)
        names = set(self.template.get_identifiers())
        missing = [n for n in self.REQUIRED if n not in names]
        if missing:
            raise RRMError(f"prompt template {source} lacks ${{{missing[0]}}}; it needs "
                           + ", ".join(f"${{{n}}}" for n in self.REQUIRED))
        self.base = base or OmniRRMFormat()
        self.name = f"template:{Path(source).name}"
        self.schema = self.base.schema
        self.default_system = self.base.system

    @classmethod
    def from_file(cls, path: str | Path, base: PromptFormat | None = None) -> TemplateFormat:
        return cls(read_text_file(path, "prompt template"), base, str(path))

    def user_text(self, sample: Sample, rubric: Rubric, order: str) -> str:
        first, second = _responses(sample, order)
        return self.template.safe_substitute(
            question=sample.query,
            answer_a=first,
            answer_b=second,
            reference=sample.reference or "",
            media=_MEDIA_SHORT.get(sample.modality, "text"),
            media_file=", ".join(_media_name(m) for m in sample.media),
            criteria=_criteria_list(rubric, sample.modality, with_facets=False),
            facets="\n".join(f"- {f}" for f in rubric.facets_for(sample.modality)),
        )

    def render(self, judgment: Judgment, rubric: Rubric = DEFAULT_RUBRIC) -> str:
        return self.base.render(judgment, rubric)


PROMPT_FORMATS: dict[str, type[PromptFormat]] = {f.name: f for f in (ReleaseFormat, OmniRRMFormat, RubricV2Format)}
DEFAULT_FORMAT = OmniRRMFormat.name  # for a checkpoint whose record names no format and no profile


def get_format(name: str | PromptFormat) -> PromptFormat:
    if isinstance(name, PromptFormat):
        return name
    try:
        return PROMPT_FORMATS[name]()
    except KeyError:
        raise RRMError(f"unknown prompt format {name!r}; known: {', '.join(PROMPT_FORMATS)}") from None


def read_text_file(path: str | Path, what: str) -> str:
    """A small text file (a template, a system prompt): refused with one line when it is missing or too big."""
    try:
        if Path(path).stat().st_size > 4 * MAX_TEMPLATE_CHARS:  # before reading it: it could be any size
            raise RRMError(over(f"{what} {path}", Path(path).stat().st_size, 4 * MAX_TEMPLATE_CHARS, "bytes"))
        return Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise RRMError(f"cannot read {what} {path}: {e}") from None


def resolve_format(recorded: dict, prompt_format: str | PromptFormat | None = None, template: str | None = None,
                   system: str | None = None, template_source: str = "template") -> PromptFormat:
    """The prompt a judge speaks: as asked, else as its checkpoint records (`rrm_judge.json`), else its profile's.

    `template` and `system` are texts (a user template for the user turn, a system turn); what the checkpoint
    records of either applies only when no prompt format is asked for.
    """
    if isinstance(prompt_format, PromptFormat):
        fmt = prompt_format
    else:
        fallback = ReleaseFormat.name if is_release(recorded) else DEFAULT_FORMAT
        fmt = get_format(prompt_format or recorded.get("prompt_format") or fallback)
        if template is None and prompt_format is None and recorded.get("prompt_template"):
            template, template_source = recorded["prompt_template"], "recorded"
        if template is not None:
            fmt = TemplateFormat(template, fmt, template_source)
    if system is None and prompt_format is None:
        system = recorded.get("system_prompt")
    return fmt if system is None else fmt.with_system(system)


# Said first in the user text when a video is heard with its sound track (nothing is said of silent videos: the
# released checkpoints were trained on silent frames and prompts without it).
SOUND_NOTE = "The video comes with its sound: judge the answers on what is heard in it as well as what is seen."


def _media_parts(sample: Sample) -> list[dict]:
    return [{"type": m.kind} for m in sample.media]


def _user_content(sample: Sample, text: str, sound: bool) -> list[dict]:
    return [*_media_parts(sample), {"type": "text", "text": f"{SOUND_NOTE}\n\n{text}" if sound else text}]


def build_messages(sample: Sample, fmt: str | PromptFormat = DEFAULT_FORMAT,
                   rubric: Rubric = DEFAULT_RUBRIC, order: str = ORDER_AB, sound: bool = False) -> list[dict]:
    """System and user turns for one order of the pair; media parts before the text. `sound`: a video of the
    sample is heard with its sound track (rrm.inputs.has_sound), and the prompt says so."""
    fmt = get_format(fmt)
    text = fmt.user_text(sample, rubric, order)
    return [
        {"role": "system", "content": [{"type": "text", "text": fmt.system}]},
        {"role": "user", "content": _user_content(sample, text, sound)},
    ]


def build_question_messages(sample: Sample) -> list[dict]:
    """The query alone, media parts first: asks a model for an answer, not a judgment."""
    return [{"role": "user", "content": [*_media_parts(sample), {"type": "text", "text": sample.query}]}]


def build_grade_messages(sample: Sample, rubric: Rubric = DEFAULT_RUBRIC, sound: bool = False) -> list[dict]:
    """Pointwise grading of `sample.response_a` alone (`sound` as for build_messages)."""
    keys = ", ".join(f'"{k}"' for k in rubric.keys)
    example = {KEY_CRITERIA: {rubric.keys[0]: {KEY_RATIONALE: "...", KEY_SCORE: 0}, "...": {}}, KEY_SCORE: 0}
    about = f" about {_MEDIA_NOUN[sample.modality]}" if sample.media else ""
    text = "\n\n".join([
        f"You will see a question{about} and one candidate answer. Grade the answer on each criterion.",
        "Criteria:\n" + _criteria_list(rubric, sample.modality, with_facets=True),
        _SCORE_BANDS,
        "Output rules:\n"
        "- Reply with one valid JSON object and nothing else.\n"
        f'- "{KEY_CRITERIA}" has exactly these keys, in this order: {keys}; each holds a rationale and a score.\n'
        f'- "{KEY_SCORE}" is the overall integer score, written last.\n'
        "Shape:\n" + json.dumps(example),
        f"[Question]\n{sample.query}" + (f"\n\n[Reference answer]\n{sample.reference}" if sample.reference else ""),
        f"[Answer]\n{sample.response_a}",
    ])
    return [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
        {"role": "user", "content": _user_content(sample, text, sound)},
    ]


def _int_or_none(x):
    return None if x is None else int(round(x))
