"""Generators and teachers: a local model through rrm, or a model behind an OpenAI-compatible endpoint.

    local:DIR            a checkpoint (hub id or directory) loaded by rrm: a Qwen2.5-Omni checkpoint or
                         adapter (generator or teacher), or any VLM or text chat model (generator)
    api:MODEL@URL        e.g. api:gpt-4o-mini@https://api.openai.com/v1 (key from $OPENAI_API_KEY)
    NAME=SPEC            the same, named NAME in the outputs and the report

A recipe may instead give a mapping with the fields of `ModelSpec`. Both kinds
answer a list of items with (item, result) pairs as each finishes, a result
being the answer or the exception that item met; a stage writes each one as it
comes. Local models run batched; endpoints run `concurrency` calls at a time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

from rrm.endpoint import MEDIA_MODES, Endpoint, EndpointBackend, EndpointError
from rrm.errors import RRMError
from rrm.generation import BackendUnavailable, Output
from rrm.judge import GenerationSettings, Judge
from rrm.media import MediaLimits
from rrm.model import is_omni, load_chat_model
from rrm.rubric import Rubric
from rrm.schema import Judgment, Sample

from .local import ChatGenerator

KINDS = ("local", "api")
# What the paper's teachers were sent for video; frames also bound the request size.
TEACHER_LIMITS = MediaLimits(video_fps=1.0, video_max_frames=35, video_max_pixels=512 * 512)


@dataclass
class ModelSpec:
    model: str  # checkpoint (local) or model name (api)
    kind: str = "local"
    name: str | None = None  # how outputs and the report name it (default: the model)
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = 120.0
    max_retries: int = 5
    backoff_s: float = 2.0
    concurrency: int = 4
    price_in: float = 0.0  # per million prompt tokens
    price_out: float = 0.0  # per million completion tokens
    quantization: str = "auto"
    batch_size: int = 4
    max_new_tokens: int | None = None  # default: 512 for a generator, 2048 for a teacher
    temperature: float | None = None  # default: 0.7 for a generator, greedy for a teacher
    media: str = "frames"  # how an api model is sent media: frames (hosted chat APIs) or omni (a served Omni)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise RRMError(f"unknown model kind {self.kind!r}; known: {', '.join(KINDS)}")
        if self.media not in MEDIA_MODES:
            raise RRMError(f"model {self.model!r}: unknown media mode {self.media!r}; known: {', '.join(MEDIA_MODES)}")
        if self.kind == "api" and not self.base_url:
            raise RRMError(f"api model {self.model!r} needs a base_url")
        self.name = self.name or self.model

    def endpoint(self) -> Endpoint:
        return Endpoint(self.model, self.base_url, self.api_key_env, self.timeout_s, self.max_retries,
                        self.backoff_s, self.concurrency, self.price_in, self.price_out)


def parse_spec(spec: str | dict | ModelSpec) -> ModelSpec:
    """A ModelSpec from '[NAME=]local:DIR', '[NAME=]api:MODEL@URL' or a recipe mapping."""
    if isinstance(spec, ModelSpec):
        return spec
    if isinstance(spec, dict):
        unknown = set(spec) - {f.name for f in dataclasses.fields(ModelSpec)}
        if unknown:
            raise RRMError(f"unknown model field(s) {', '.join(sorted(unknown))}")
        return ModelSpec(**spec)
    text = str(spec).strip()
    name = None
    if "=" in text.partition(":")[0]:
        name, _, text = text.partition("=")
    kind, sep, rest = text.partition(":")
    if not sep or kind not in KINDS or not rest:
        raise RRMError(f"model {spec!r}: write local:DIR or api:MODEL@URL (optionally NAME= before)")
    if kind == "local":
        return ModelSpec(rest, name=name)
    model, at, url = rest.rpartition("@")
    if not at or not model:
        raise RRMError(f"model {spec!r}: write api:MODEL@URL, e.g. api:gpt-4o-mini@https://api.openai.com/v1")
    return ModelSpec(model, kind="api", base_url=url, name=name)


@dataclass
class Answer:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class Verdict:
    judgment: Judgment  # both orders, combined by rrm (the other order in judgment.swap.other)
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Backend:
    """A model that answers queries and judges pairs: local (batched) or behind an endpoint (concurrent calls).

    Judgments go through rrm's one judging procedure (`Judge`), whatever the model is behind it."""

    def __init__(self, spec: ModelSpec, role: str, seed: int = 0, limits: MediaLimits = MediaLimits(),
                 prompt_format: str = "rubric-v2", rubric: Rubric | None = None):
        self.spec, self.seed = spec, seed
        generator = role == "generator"
        self.settings = GenerationSettings(
            max_new_tokens=spec.max_new_tokens or (512 if generator else 2048),
            temperature=spec.temperature if spec.temperature is not None else (0.7 if generator else 0.0),
            top_p=0.95, seed=seed)
        self.chat = None
        if spec.kind == "local" and generator and not is_omni(spec.model):
            self.chat = ChatGenerator(load_chat_model(spec.model, spec.quantization), limits)
        elif spec.kind == "local":
            self.judge = Judge.from_pretrained(spec.model, quantization=spec.quantization, limits=limits,
                                               prompt_format=prompt_format, rubric=rubric, generation=self.settings)
        else:
            self.judge = Judge(EndpointBackend(spec.endpoint(), spec.media), prompt_format=prompt_format,
                               rubric=rubric, generation=self.settings, limits=limits if generator else TEACHER_LIMITS)
        self.rubric = self.judge.rubric if self.chat is None else rubric

    # ------------------------------------------------------------------ answers

    def answer_all(self, samples: Sequence[Sample]) -> Iterator[tuple[Sample, Answer | Exception]]:
        if self.spec.kind == "local":
            yield from self._local_batches(samples, self._local_answers)
        else:
            yield from self._concurrently(samples, lambda s: _answer(self.judge.answer([s])[0]))

    def _local_answers(self, chunk: Sequence[Sample]) -> list[Answer]:
        if self.chat is not None:
            return [Answer(t, 0, len(self.chat.tokenizer(t).input_ids)) for t in self.chat.answer(chunk, self.settings)]
        return [_answer(o) for o in self.judge.answer(chunk)]

    # ------------------------------------------------------------------ judgments

    def judge_all(self, samples: Sequence[Sample]) -> Iterator[tuple[Sample, Verdict | Exception]]:
        """Each pair judged in both orders (one batched call when local)."""
        if self.spec.kind == "local":
            yield from self._local_batches(samples, self._local_verdicts)
        else:
            yield from self._concurrently(samples, lambda s: _verdict(self.judge.judge(s, swap_check=True)))

    def _local_verdicts(self, chunk: Sequence[Sample]) -> list[Verdict]:
        judgments = self.judge.judge_batch(chunk, batch_size=len(chunk), swap_check=True, progress=False)
        for j in judgments:
            if not j.ok and not j.raw and j.status.errors:  # rrm could not even ask (a bad media file)
                raise RRMError(j.status.errors[0])
        return [_verdict(j) for j in judgments]

    # ------------------------------------------------------------------ scheduling

    def _local_batches(self, items: Sequence[Sample], run) -> Iterator:
        size = max(1, self.spec.batch_size)
        for start in range(0, len(items), size):
            chunk = items[start:start + size]
            try:
                yield from zip(chunk, run(chunk))
            except BackendUnavailable:
                raise
            except RRMError:  # one bad item: retry one at a time so that only it fails
                for item in chunk:
                    try:
                        yield item, run([item])[0]
                    except RRMError as e:
                        yield item, e

    def _concurrently(self, items: Sequence[Sample], call) -> Iterator:
        with ThreadPoolExecutor(max_workers=max(1, self.spec.concurrency)) as pool:
            futures = {pool.submit(call, item): item for item in items}
            try:
                for future in as_completed(futures):
                    error = future.exception()
                    if isinstance(error, EndpointError):
                        raise error
                    yield futures[future], error if error is not None else future.result()
            finally:
                for future in futures:
                    future.cancel()


def _answer(output: Output) -> Answer:
    return Answer(output.text, output.timing.prompt_tokens or 0, output.timing.generated_tokens or 0)


def _verdict(j: Judgment) -> Verdict:
    """A judgment with the tokens both its orders took."""
    both = [x for x in (j, j.swap.other if j.swap else None) if x is not None and x.timing]
    return Verdict(j, sum(x.timing.prompt_tokens or 0 for x in both), sum(x.timing.generated_tokens or 0 for x in both))
