"""The judge: pairwise judgments, streaming, batches, the swap check, grading, Best-of-N.

    judge = Judge.from_pretrained("Omni-RRM/Omni-RRM-7B")
    j = judge.judge(Sample(query="What is shown?", media=[MediaItem("image", "cat.png")],
                           response_a="a cat", response_b="a dog"), swap_check=True)
    print(j.verdict, j.score_a, j.score_b, j.swap.agree)

This is the judging procedure, once, over any backend (rrm.generation): the
prompts, both orders, combining them, parsing, grading and Best-of-N. The swap
check judges (A, B) and (B, A) in one backend call, maps the second verdict
back to the caller's order and combines the two: when the orders disagree, the
verdict is a tie. `Judge.from_pretrained(model, backend="transformers"|"vllm")`
runs the model itself; `Judge.from_endpoint(base_url, model)` asks an
OpenAI-compatible server (`vllm serve`, `python -m rrm serve`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import RRMError
from .generation import (
    DECODINGS, BackendUnavailable, GenerationSettings, Output, OutOfMemory, TransformersBackend, multimodal_token_ids,
)
from .inputs import BOTH_ORDERS, Row, decode_media, has_sound, judge_rows, sound_key
from .limits import InputLimits, over
from .media import MediaLimits
from .model import DEFAULT_MODEL, BaseCheck, LoadedModel, load_model
from .parse import PartialJudgment, parse_grade, parse_judgment, parse_partial
from .prompts import (
    PromptFormat, TemplateFormat, build_grade_messages, build_question_messages, get_format, read_text_file,
    resolve_format,
)
from .release import RELEASE_PROFILE, judge_limits
from .rubric import Rubric, load_rubric
from .schema import (
    ORDER_AB, ORDER_BA, VERDICT_A, VERDICT_B, VERDICT_TIE, VIDEO, Grade, Judgment, MediaItem, ParseStatus,
    Sample, SwapCheck, Timing,
)

BACKENDS = ("transformers", "vllm", "endpoint")


@dataclass
class StreamUpdate:
    """One step of a stream: the text so far (A/B order, and B/A with the swap check)."""

    text: str
    partial: PartialJudgment
    swapped_text: str | None = None
    judgment: Judgment | None = None  # set on the last update only


@dataclass
class BestOfN:
    best: int  # index of the winner in the candidate list
    matches: list[tuple[int, int, Judgment]] = field(default_factory=list)  # (incumbent, challenger, judgment)
    wins: list[int] = field(default_factory=list)

    def mean_scores(self) -> list[float | None]:
        """Each candidate's mean overall score over the matches it played that have a verdict (the scores read
        from a judgment without one are no result), None where no such match scored it."""
        scores: list[list[float]] = [[] for _ in self.wins]
        for a, b, j in self.matches:
            if j.verdict is None:
                continue
            for i, score in ((a, j.score_a), (b, j.score_b)):
                if score is not None:
                    scores[i].append(score)
        return [sum(x) / len(x) if x else None for x in scores]

    def ranking(self) -> list[int]:
        """Candidate indices, best first: the knockout's winner, then the others by wins, then by mean score."""
        means = self.mean_scores()
        rest = sorted((i for i in range(len(self.wins)) if i != self.best),
                      key=lambda i: (-self.wins[i], -(means[i] if means[i] is not None else float("-inf")), i))
        return [self.best, *rest]


class Judge:
    """The judging procedure over a backend (rrm.generation); a LoadedModel gets the transformers backend."""

    def __init__(self, backend, prompt_format: str | PromptFormat | None = None,
                 rubric: Rubric | dict | str | None = None, limits: MediaLimits | None = None,
                 generation: GenerationSettings = GenerationSettings(), decoding: str = "auto",
                 input_limits: InputLimits = InputLimits()):
        if isinstance(backend, LoadedModel):
            backend = TransformersBackend(backend, decoding, input_limits.max_prompt_tokens)
        self.backend = backend
        recorded = backend.judge_config
        self.format = resolve_format(recorded, prompt_format)
        self.rubric = load_rubric(rubric if rubric is not None else recorded.get("rubric"))
        # Media bounds: as given, else as the checkpoint records (those it was trained with), else its profile's.
        self.limits = judge_limits(recorded, limits)
        self.generation = generation
        self.input_limits = input_limits

    @classmethod
    def from_pretrained(cls, model: str = DEFAULT_MODEL, *, backend: str = "transformers", quantization: str = "auto",
                        device: str | None = None, prompt_format: str | None = None,
                        prompt_template: str | None = None, system_prompt: str | None = None,
                        rubric: Rubric | dict | str | None = None, merge_adapter: bool = False,
                        limits: MediaLimits | None = None, generation: GenerationSettings = GenerationSettings(),
                        decoding: str = "auto", allow_base: BaseCheck | None = None,
                        input_limits: InputLimits = InputLimits(), **engine_kwargs) -> Judge:
        """`prompt_template` and `system_prompt` are files: the user turn's template, the system turn's text.
        `allow_base` lets a server refuse an adapter whose base it does not serve (rrm.model.locate).
        `engine_kwargs` go to `vllm.LLM` with backend="vllm" (e.g. tensor_parallel_size)."""
        prompt_files = PromptFiles(prompt_template, system_prompt)  # read before the model loads: fail fast
        if backend == "vllm":
            from .vllm_backend import VLLMBackend

            engine = VLLMBackend.load(model, quantization=quantization, merge_adapter=merge_adapter,
                                      decoding=decoding, seed=generation.seed, **engine_kwargs)
        elif backend == "transformers":
            loaded = load_model(model, quantization=quantization, device=device, merge_adapter=merge_adapter,
                                allow_base=allow_base)
            engine = TransformersBackend(loaded, decoding, input_limits.max_prompt_tokens)
        else:
            raise RRMError(f"backend {backend!r} loads no checkpoint: use transformers or vllm "
                           f"(an endpoint: Judge.from_endpoint)")
        return cls(engine, prompt_format=prompt_files.format(engine.judge_config, prompt_format), rubric=rubric,
                   limits=limits, generation=generation, input_limits=input_limits)

    @classmethod
    def from_endpoint(cls, base_url: str, model: str, *, api_key_env: str | None = None,
                      concurrency: int = 8, timeout_s: float = 300.0, max_retries: int = 3, media: str = "omni",
                      prompt_format: str | None = None, prompt_template: str | None = None,
                      system_prompt: str | None = None, rubric: Rubric | dict | str | None = None,
                      limits: MediaLimits | None = None, generation: GenerationSettings = GenerationSettings(),
                      input_limits: InputLimits = InputLimits()) -> Judge:
        """A judge whose model is behind an OpenAI-compatible chat-completions URL (rrm.endpoint). The key, if the
        server wants one, is read from the environment variable `api_key_env`; by default none is sent."""
        from .endpoint import Endpoint, EndpointBackend

        prompt_files = PromptFiles(prompt_template, system_prompt)
        engine = EndpointBackend(Endpoint(model, base_url, api_key_env, timeout_s, max_retries,
                                          concurrency=concurrency), media=media)
        return cls(engine, prompt_format=prompt_files.format(engine.judge_config, prompt_format), rubric=rubric,
                   limits=limits, generation=generation, input_limits=input_limits)

    def configured(self, *, prompt_format: str | PromptFormat | None = None, rubric: Rubric | dict | None = None,
                   limits: MediaLimits | None = None) -> Judge:
        """A view of this judge with other options; it shares the backend (and its one-at-a-time lock)."""
        other = copy.copy(self)
        if prompt_format is not None and prompt_format != self.format.name:  # the same name keeps its system turn
            other.format = get_format(prompt_format)
        if rubric is not None:
            other.rubric = load_rubric(rubric)
        if limits is not None:
            other.limits = judge_limits(self.backend.judge_config, limits)
        return other

    @property
    def description(self) -> str:
        return f"{self.backend.description} · {self.format.name}"

    def record(self) -> dict:
        """What a checkpoint's rrm_judge.json would say to prompt, grade and see media as this judge does (what
        `rrm serve` tells its clients)."""
        fmt = self.format
        base = fmt.base if isinstance(fmt, TemplateFormat) else fmt
        record = {"prompt_format": base.name, "rubric": self.rubric.to_dict(),
                  "media_limits": dataclasses.asdict(self.limits)}
        if base.name == RELEASE_PROFILE:
            record["profile"] = RELEASE_PROFILE
        if isinstance(fmt, TemplateFormat):
            record["prompt_template"] = fmt.text
        if fmt.system_override is not None:
            record["system_prompt"] = fmt.system
        return record

    @property
    def loaded(self) -> LoadedModel | None:
        """The model in this process (None behind an endpoint)."""
        return getattr(self.backend, "loaded", None)

    @property
    def decoding(self) -> str:
        return getattr(self.backend, "decoding", self.backend.name)

    @property
    def decoding_note(self) -> str:
        return getattr(self.backend, "decoding_note", "chosen by the server")

    # ------------------------------------------------------------------ rows

    def _decode_media(self, sample: Sample) -> list[tuple[str, object]]:
        return decode_media(sample, self.limits)

    def _rows(self, sample: Sample, media, swap_check: bool) -> list[Row]:
        return judge_rows(sample, media, self.format, self.rubric, BOTH_ORDERS if swap_check else (ORDER_AB,))

    def _generate(self, rows: Sequence[Row], settings: GenerationSettings | None,
                  cancel: threading.Event | None = None) -> list[Output]:
        return self.backend.generate(rows, settings or self.generation, self.limits, cancel)

    def _finish(self, sample: Sample, outputs: Sequence[Output], media=()) -> Judgment:
        judgment = judgment_from_texts(sample, [o.text for o in outputs], self.rubric, self.description,
                                       [o.timing for o in outputs])
        judgment.heard = heard(sample, media)
        for order, output in zip((ORDER_AB, ORDER_BA), outputs):
            if output.stopped_early:
                judgment.status.errors.append(f"{order}: {output.stopped_early}" if len(outputs) > 1
                                              else output.stopped_early)
        return judgment

    # ------------------------------------------------------------------ public

    def judge(self, sample: Sample, swap_check: bool = False, settings: GenerationSettings | None = None,
              cancel: threading.Event | None = None) -> Judgment:
        """Judge one pair. With swap_check, both orders go through one backend call. Setting `cancel`
        stops generation at the next token."""
        _validate(sample, self.input_limits)
        media = self._decode_media(sample)
        rows = self._rows(sample, media, swap_check)
        return self._finish(sample, self._generate(rows, settings, cancel), media)

    def stream(self, sample: Sample, swap_check: bool = False, cancel: threading.Event | None = None,
               settings: GenerationSettings | None = None) -> Iterator[StreamUpdate]:
        """Yield the text so far with its partial judgment; the last update carries the judgment.

        Set `cancel`, or close the generator, to stop generation at once.
        """
        _validate(sample, self.input_limits)
        cancel = cancel or threading.Event()
        media = self._decode_media(sample)
        rows = self._rows(sample, media, swap_check)
        steps = self.backend.stream(rows, settings or self.generation, self.limits, cancel)
        with contextlib.closing(steps):
            for step in steps:
                texts = step.texts
                judgment = None
                if step.outputs is not None:
                    judgment = self._finish(sample, step.outputs, media)
                    if cancel.is_set():
                        judgment.status.errors.append("generation was cancelled")
                yield StreamUpdate(texts[0], parse_partial(texts[0], self.rubric),
                                   texts[1] if len(texts) > 1 else None, judgment)

    def judge_batch(self, samples: Sequence[Sample], batch_size: int = 4, swap_check: bool = False,
                    progress: bool = True, settings: GenerationSettings | None = None,
                    cancel: threading.Event | None = None) -> list[Judgment]:
        """Judge many pairs. A bad sample becomes a failed judgment; the batch goes on. Setting `cancel` stops it
        at the next token: the pairs judged so far are returned."""
        from tqdm.auto import tqdm

        results: list[Judgment] = []
        with tqdm(total=len(samples), desc="judging", unit="pair", disable=not progress) as bar:
            for chunk, judged in self.judge_chunks(samples, batch_size, swap_check, settings, cancel):
                results.extend(judged)
                bar.update(len(chunk))
        return results

    def judge_chunks(self, samples: Sequence[Sample], batch_size: int = 4, swap_check: bool = False,
                     settings: GenerationSettings | None = None, cancel: threading.Event | None = None
                     ) -> Iterator[tuple[Sequence[Sample], list[Judgment]]]:
        """Judge many pairs `batch_size` at a time, yielding each chunk with its judgments as it is done: the
        loop that every caller writing results as they come (a file, a progress bar) shares. A set `cancel`
        ends it at the next token."""
        settings = settings or self.generation
        for start in range(0, len(samples), batch_size):
            if cancel is not None and cancel.is_set():
                return
            chunk = samples[start:start + batch_size]
            yield chunk, self._judge_chunk(chunk, swap_check, settings, cancel)

    def _judge_chunk(self, chunk: Sequence[Sample], swap_check: bool, settings,
                     cancel: threading.Event | None = None) -> list[Judgment]:
        out: list[Judgment | None] = [None] * len(chunk)
        rows, owners, media = [], [], {}
        for i, sample in enumerate(chunk):
            try:
                _validate(sample, self.input_limits)
                media[i] = self._decode_media(sample)
                new = self._rows(sample, media[i], swap_check)
            except RRMError as e:
                out[i] = failed_judgment(sample, str(e), self.description)
                continue
            rows += new
            owners += [i] * len(new)
        if rows:
            try:
                outputs = self._generate(rows, settings, cancel)
            except BackendUnavailable:  # every other pair would fail the same way
                raise
            except RRMError as e:  # out of memory, or an input the processor refuses
                if len(chunk) == 1:
                    return [failed_judgment(chunk[0], str(e), self.description)]
                # Retry one pair at a time: only the pair at fault is lost, not the batch.
                return [j for s in chunk for j in self._judge_chunk([s], swap_check, settings, cancel)]
            for i in sorted(set(owners)):
                out[i] = self._finish(chunk[i], [outputs[r] for r, o in enumerate(owners) if o == i], media[i])
        return out

    def grade(self, sample: Sample, settings: GenerationSettings | None = None) -> Grade:
        """Pointwise: score `sample.response_a` alone, per criterion and overall."""
        return self._graded(self._generate([self._grade_row(sample)], settings)[0])

    def grade_batch(self, samples: Sequence[Sample], settings: GenerationSettings | None = None) -> list[Grade]:
        """Pointwise grades of many responses in one backend call. A sample that cannot be graded gets a grade
        with no score and the reason; the others go on."""
        grades: list[Grade | None] = [None] * len(samples)
        rows, owners = [], []
        for i, sample in enumerate(samples):
            try:
                rows.append(self._grade_row(sample))
                owners.append(i)
            except RRMError as e:
                grades[i] = Grade(None, [], "", ParseStatus(False, "none", [str(e)], False), model=self.description)
        for i, output in zip(owners, self._generate(rows, settings) if rows else []):
            grades[i] = self._graded(output)
        return grades

    def _grade_row(self, sample: Sample) -> Row:
        if not sample.response_a.strip():
            raise RRMError("the response to grade is empty")
        if len(sample.response_a) > self.input_limits.max_text_chars:
            raise RRMError(over("the response", len(sample.response_a), self.input_limits.max_text_chars,
                                flag="--max-text-chars"))
        media = self._decode_media(sample)
        sound_key(media)
        return build_grade_messages(sample, self.rubric, sound=has_sound(media)), media

    def _graded(self, output: Output) -> Grade:
        return dataclasses.replace(parse_grade(output.text, self.rubric), timing=output.timing,
                                   model=self.description)

    def answer(self, samples: Sequence[Sample], settings: GenerationSettings | None = None) -> list[Output]:
        """Plain answers to the samples' queries (responses are ignored): how a local model generates candidates.

        One backend call; a sample whose media cannot be read raises its MediaError.
        """
        settings = dataclasses.replace(settings or self.generation, judgment_start_tokens=None)  # free text
        return self._generate([(build_question_messages(s), self._decode_media(s)) for s in samples], settings)

    def best_of_n(self, query: str, responses: Sequence[str], media: Sequence[MediaItem] = (),
                  swap_check: bool = True, settings: GenerationSettings | None = None,
                  cancel: threading.Event | None = None) -> BestOfN:
        """Knockout (rrm.eval.bon's): the current best meets each next candidate; it is replaced only by a clear
        win. A tie or no verdict keeps the incumbent, unscored; a set `cancel` ends the matches there."""
        from .eval.bon import knockout

        if len(responses) < 2:
            raise RRMError("best_of_n needs at least two responses")
        if len(responses) > self.input_limits.max_responses:
            raise RRMError(f"best_of_n got {len(responses):,} responses; the limit is "
                           f"{self.input_limits.max_responses}")
        result = BestOfN(best=0, wins=[0] * len(responses))

        def match(best: int, challenger: int) -> str | None:
            if cancel is not None and cancel.is_set():
                return None
            sample = Sample(query=query, response_a=responses[best], response_b=responses[challenger],
                            media=list(media), id=f"{best}-vs-{challenger}")
            judgment = self.judge(sample, swap_check=swap_check, settings=settings, cancel=cancel)
            result.matches.append((best, challenger, judgment))
            if judgment.verdict in (VERDICT_A, VERDICT_B):
                result.wins[challenger if judgment.verdict == VERDICT_B else best] += 1
            return judgment.verdict

        result.best = knockout(list(range(len(responses))), match)
        return result


@dataclass
class PromptFiles:
    """A user template and a system text given as files, read at once so that a bad path fails before loading."""

    template_path: str | None = None
    system_path: str | None = None

    def __post_init__(self):
        self.template = read_text_file(self.template_path, "prompt template") if self.template_path else None
        self.system = read_text_file(self.system_path, "system prompt") if self.system_path else None

    def format(self, recorded: dict, prompt_format: str | None = None) -> PromptFormat | None:
        if self.template is None and self.system is None:
            return prompt_format
        return resolve_format(recorded, prompt_format, self.template, self.system, self.template_path or "template")


def _validate(sample: Sample, limits: InputLimits) -> None:
    for name in ("response_a", "response_b"):
        if not str(getattr(sample, name) or "").strip():
            raise RRMError(f"{name} is empty")
    if not str(sample.query or "").strip() and not sample.media:
        raise RRMError("the query is empty and there is no media")
    limits.check_media(len(sample.media))
    for name in ("query", "response_a", "response_b", "reference"):
        size = len(str(getattr(sample, name) or ""))
        if size > limits.max_text_chars:
            raise RRMError(over(f"the {name.replace('_', ' ')}", size, limits.max_text_chars,
                                flag="--max-text-chars"))


def judgment_from_texts(sample: Sample, texts: Sequence[str], rubric: Rubric, model: str | None = None,
                        timings: Sequence[Timing | None] = (None, None)) -> Judgment:
    """The judgment read from a model's output for (A, B) and, with the swap check, for (B, A) after it."""
    ab = dataclasses.replace(parse_judgment(texts[0], rubric), timing=timings[0])
    if len(texts) > 1:
        # The model saw (B, A): its "A" is the caller's B.
        ba = dataclasses.replace(parse_judgment(texts[1], rubric).swapped(), order=ORDER_BA, timing=timings[1])
        ab = combine_orders(ab, ba)
    return dataclasses.replace(ab, model=model, sample_id=sample.id)


def heard(sample: Sample, media) -> list[dict]:
    """What the judge heard of each video of a sample (its decoded media): seconds of sound, or why none."""
    return [{"video": Path(item.path).name if item.path else VIDEO, **clip.heard()}
            for item, (kind, clip) in zip(sample.media, media) if kind == VIDEO]


def failed_judgment(sample: Sample, reason: str, model: str | None = None) -> Judgment:
    """A judgment that records why a sample could not be judged (no verdict is made up)."""
    return Judgment(None, None, None, [], "", ParseStatus(False, "none", [reason], False), model=model,
                    sample_id=sample.id)


def combine_orders(ab: Judgment, ba: Judgment) -> Judgment:
    """Combine a judgment with its swapped twin (already mapped back to the caller's order)."""
    if ab.verdict and ba.verdict:
        agree = ab.verdict == ba.verdict
        verdict = ab.verdict if agree else VERDICT_TIE
    else:
        agree, verdict = None, ab.verdict or ba.verdict
    errors = list(ab.status.errors)
    if agree is False:
        errors.append(f"the two orders disagree ({ab.verdict} vs {ba.verdict}): verdict set to tie")
    elif agree is None:
        errors.append("swap check incomplete: one order gave no verdict")

    def mean(x, y):
        vals = [v for v in (x, y) if v is not None]
        return sum(vals) / len(vals) if vals else None

    status = ParseStatus(ok=verdict is not None, format=ab.status.format, errors=errors,
                         consistent=ab.status.consistent and ba.status.consistent)
    timing = ab.timing
    if ab.timing and ba.timing:  # one batched call: the slower row is the wall time
        timing = dataclasses.replace(ab.timing, total_s=max(ab.timing.total_s or 0, ba.timing.total_s or 0))
    return dataclasses.replace(
        ab, verdict=verdict, score_a=mean(ab.score_a, ba.score_a), score_b=mean(ab.score_b, ba.score_b),
        status=status, timing=timing, swap=SwapCheck(agree, ab.verdict, ba.verdict, ba),
    )


__all__ = ["Judge", "GenerationSettings", "StreamUpdate", "BestOfN", "OutOfMemory", "combine_orders",
           "failed_judgment", "judgment_from_texts", "multimodal_token_ids", "BACKENDS", "DECODINGS"]
