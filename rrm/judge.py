"""The judge: pairwise judgments, streaming, batches, the swap check, grading, Best-of-N.

    judge = Judge.from_pretrained("Omni-RRM/Omni-RRM-7B")
    j = judge.judge(Sample(query="What is shown?", media=[MediaItem("image", "cat.png")],
                           response_a="a cat", response_b="a dog"), swap_check=True)
    print(j.verdict, j.score_a, j.score_b, j.swap.agree)

The swap check judges (A, B) and (B, A) in one batched `generate` call, maps the
second verdict back to the caller's order and combines the two: when the orders
disagree, the verdict is a tie.

Decoding paths (`decoding=`): `plain` is transformers' `generate` with its
dynamic KV cache; `static` preallocates the KV cache (STATIC_CACHE_TOKENS, grown
in steps of that size when a call needs more), which lets transformers compile
the decode step with torch.compile and CUDA graphs where it can (a CUDA device,
weights it can compile). `auto`, the default, takes `static` on a GPU when the
weights are not bitsandbytes-quantized (transformers does not compile those,
and a static cache alone does not speed them up), else `plain`. The static path
is warmed up at load (the compilation happens then, not on the first judgment),
and checked: if it fails, or its greedy tokens differ from plain `generate`'s on
the warm-up pair, the judge falls back to `plain` and says why
(`Judge.decoding_note`).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from .errors import RRMError, first_line
from .inputs import END_OF_TURN, Row, encode, to_device
from .limits import InputLimits, over
from .media import MediaLimits, load_media
from .model import DEFAULT_MODEL, BaseCheck, LoadedModel, load_model
from .parse import PartialJudgment, parse_grade, parse_judgment, parse_partial
from .prompts import (
    PromptFormat, build_grade_messages, build_messages, build_question_messages, get_format, read_text_file,
    resolve_format,
)
from .release import judge_limits
from .rubric import Rubric, load_rubric
from .schema import (
    ORDER_AB, ORDER_BA, VERDICT_A, VERDICT_B, VERDICT_TIE, Grade, Judgment, MediaItem, ParseStatus,
    Sample, SwapCheck, Timing,
)

log = logging.getLogger(__name__)

# Tokens a judge must never write: a random or undertrained model may sample a
# media placeholder, which breaks the multimodal rope index on the next step.
_MULTIMODAL_TOKEN_ATTRS = ("image_token", "video_token", "audio_token", "vision_bos_token", "vision_eos_token",
                           "audio_bos_token", "audio_eos_token")
_MULTIMODAL_TOKENS = ("<|vision_pad|>", "<|IMAGE|>", "<|VIDEO|>", "<|AUDIO|>", "<|vision_bos|>",
                      "<|vision_eos|>", "<|audio_bos|>", "<|audio_eos|>")
def multimodal_token_ids(tokenizer) -> list[int]:
    """Ids of every media placeholder token: suppressed whenever a judge writes."""
    names = {getattr(tokenizer, a, None) for a in _MULTIMODAL_TOKEN_ATTRS} | set(_MULTIMODAL_TOKENS)
    vocab = tokenizer.get_vocab()
    return sorted({vocab[n] for n in names if n and n in vocab})


DECODINGS = ("auto", "plain", "static")
STATIC_CACHE_TOKENS = 4096  # a judgment with its prompt fits (an image or 16 video frames, 2K new tokens)
WARM_UP_TOKENS = 24
_WARM_UP_PAIR = Sample(query="Which answer names the capital of France correctly?",
                       response_a="The capital of France is Paris.", response_b="The capital of France is Lyon.",
                       id="warm-up")


class OutOfMemory(RRMError):
    """The device ran out of memory; the cache has been freed."""


@dataclass
class GenerationSettings:
    max_new_tokens: int = 1024
    temperature: float = 0.0  # 0 is greedy decoding
    top_p: float = 1.0
    top_k: int | None = None
    seed: int = 0
    min_new_tokens: int | None = None


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


class _TokenStreamer:
    """Collects generated token ids per row as `generate` produces them (a transformers streamer)."""

    def __init__(self, rows: int):
        self.tokens: list[list[int]] = [[] for _ in range(rows)]
        self.first_token_at: float | None = None
        self.updates: queue.Queue = queue.Queue()
        self._prompt_seen = False

    def put(self, value):
        if not self._prompt_seen:  # generate() first hands over the prompt
            self._prompt_seen = True
            return
        ids = value.reshape(len(self.tokens), -1).tolist()
        for row, new in zip(self.tokens, ids):
            row.extend(new)
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.updates.put(True)

    def end(self):
        self.updates.put(None)


class _Cancelled:
    """A stopping criterion that ends generation when an event is set."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class Judge:
    def __init__(self, loaded: LoadedModel, prompt_format: str | PromptFormat | None = None,
                 rubric: Rubric | dict | str | None = None, limits: MediaLimits | None = None,
                 generation: GenerationSettings = GenerationSettings(), decoding: str = "auto",
                 input_limits: InputLimits = InputLimits()):
        self.loaded = loaded
        self.model, self.processor = loaded.model, loaded.processor
        self.tokenizer = self.processor.tokenizer
        recorded = loaded.judge_config or {}
        self.format = resolve_format(recorded, prompt_format)
        self.rubric = load_rubric(rubric if rubric is not None else recorded.get("rubric"))
        # Media bounds: as given, else as the checkpoint records (those it was trained with), else its profile's.
        self.limits = limits if limits is not None else judge_limits(recorded)
        self.generation = generation
        self.input_limits = input_limits
        self._suppress = multimodal_token_ids(self.tokenizer)
        self._eos = self._eos_ids()
        self._lock = threading.Lock()  # one generation at a time per model
        self.decoding, self.decoding_note = self._pick_decoding(decoding)
        if self.decoding == "static" and self.loaded.device.startswith("cuda"):
            self.warm_up()

    @classmethod
    def from_pretrained(cls, model: str = DEFAULT_MODEL, *, quantization: str = "auto", device: str | None = None,
                        prompt_format: str | None = None, prompt_template: str | None = None,
                        system_prompt: str | None = None, rubric: Rubric | dict | str | None = None,
                        merge_adapter: bool = False, limits: MediaLimits | None = None,
                        generation: GenerationSettings = GenerationSettings(), decoding: str = "auto",
                        allow_base: BaseCheck | None = None, input_limits: InputLimits = InputLimits()) -> Judge:
        """`prompt_template` and `system_prompt` are files: the user turn's template, the system turn's text.
        `allow_base` lets a server refuse an adapter whose base it does not serve (rrm.model.locate)."""
        prompt_files = PromptFiles(prompt_template, system_prompt)  # read before the model loads: fail fast
        loaded = load_model(model, quantization=quantization, device=device, merge_adapter=merge_adapter,
                            allow_base=allow_base)
        return cls(loaded, prompt_format=prompt_files.format(loaded.judge_config, prompt_format), rubric=rubric,
                   limits=limits, generation=generation, decoding=decoding, input_limits=input_limits)

    def configured(self, *, prompt_format: str | PromptFormat | None = None, rubric: Rubric | dict | None = None,
                   limits: MediaLimits | None = None) -> Judge:
        """A view of this judge with other options; it shares the model and its one-at-a-time lock."""
        other = copy.copy(self)
        if prompt_format is not None and prompt_format != self.format.name:  # the same name keeps its system turn
            other.format = get_format(prompt_format)
        if rubric is not None:
            other.rubric = load_rubric(rubric)
        if limits is not None:
            other.limits = limits
        return other

    @property
    def description(self) -> str:
        return f"{self.loaded.describe()} · {self.format.name}"

    # ---------------------------------------------------------------- decoding

    def _pick_decoding(self, requested: str) -> tuple[str, str]:
        if requested not in DECODINGS:
            raise RRMError(f"unknown decoding {requested!r}; known: {', '.join(DECODINGS)}")
        if requested != "auto":
            return requested, "as asked"
        if not self.loaded.device.startswith("cuda"):
            return "plain", f"no GPU ({self.loaded.device})"
        if self.loaded.quantization != "none":
            return "plain", f"transformers does not compile {self.loaded.quantization} bitsandbytes weights"
        return "static", "static KV cache, compiled decode step"

    def warm_up(self) -> None:
        """Run the static path on a short pair (batch 1 and 2: one order and the swap check) and check it.

        Any failure, or greedy tokens that differ from plain generate's, switches this judge to plain.
        """
        settings = GenerationSettings(max_new_tokens=WARM_UP_TOKENS, min_new_tokens=WARM_UP_TOKENS)
        started = time.perf_counter()
        try:
            for rows in (1, 2):
                inputs = self._inputs(self._rows(_WARM_UP_PAIR, [], swap_check=rows == 2))
                fast = self._generate_ids(inputs, rows, settings, "static")
                fast_again = self._generate_ids(inputs, rows, settings, "static")  # after compilation
                plain = self._generate_ids(inputs, rows, settings, "plain")
                if fast != plain or fast_again != plain:
                    self._fall_back(f"its greedy tokens differed from plain generate's at batch {rows}")
                    return
        except OutOfMemory:
            raise
        except Exception as e:  # a compiler or cache error: judge on the plain path
            self._fall_back(f"{type(e).__name__}: {first_line(e, 160)}")
            return
        self.decoding_note += f" (warm-up {time.perf_counter() - started:.1f} s)"
        log.info("decoding: static (%s)", self.decoding_note)

    def _fall_back(self, reason: str) -> None:
        self.decoding, self.decoding_note = "plain", f"static path off: {reason}"
        log.warning("decoding falls back to plain generate: %s", reason)

    def _generate_ids(self, inputs: dict, rows: int, settings: GenerationSettings, decoding: str) -> list[list[int]]:
        streamer = _TokenStreamer(rows)
        self._run_generate(inputs, streamer, threading.Event(), settings, decoding)
        return streamer.tokens

    # ------------------------------------------------------------------ tokens

    def _eos_ids(self) -> list[int]:
        vocab = self.tokenizer.get_vocab()
        ids = {vocab[t] for t in (END_OF_TURN, "<|endoftext|>") if t in vocab}
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return sorted(ids)

    # ------------------------------------------------------------------ inputs

    def _decode_media(self, sample: Sample) -> list[tuple[str, object]]:
        return [(m.kind, load_media(m, self.limits)) for m in sample.media]

    def _inputs(self, rows: list[Row]) -> dict:
        """Processor inputs for a batch of (messages, decoded media) rows, on the model's device.

        A prompt over the token limit is refused here, before generation (it would hold the model for long, or
        ask for more memory than there is)."""
        inputs = encode(self.processor, rows, self.limits)
        longest = int(inputs["attention_mask"].sum(dim=1).max())
        if longest > self.input_limits.max_prompt_tokens:
            raise RRMError(over("the prompt", longest, self.input_limits.max_prompt_tokens, "tokens",
                                "--max-prompt-tokens") + ": shorten the texts, or use fewer video frames or "
                                                          "shorter audio")
        return to_device(inputs, self.model)

    # -------------------------------------------------------------- generation

    def _generate_kwargs(self, settings: GenerationSettings, prompt_tokens: int = 0, decoding: str = "plain") -> dict:
        sampling = settings.temperature > 0
        kwargs = {
            "max_new_tokens": settings.max_new_tokens,
            "do_sample": sampling,
            "suppress_tokens": self._suppress,
            "eos_token_id": self._eos,
            "pad_token_id": self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self._eos[0],
        }
        if sampling:
            kwargs.update(temperature=settings.temperature, top_p=settings.top_p)
            if settings.top_k:
                kwargs["top_k"] = settings.top_k
        else:  # silence the checkpoint's sampling defaults under greedy decoding
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if settings.min_new_tokens:
            kwargs["min_new_tokens"] = settings.min_new_tokens
        if decoding == "static":
            # One cache size for most calls: a new size means a new compilation.
            need = prompt_tokens + settings.max_new_tokens
            kwargs.update(cache_implementation="static",
                          max_cache_len=-(-need // STATIC_CACHE_TOKENS) * STATIC_CACHE_TOKENS)
        return kwargs

    def _run_generate(self, inputs: dict, streamer: _TokenStreamer, cancel: threading.Event,
                      settings: GenerationSettings, decoding: str | None = None):
        import torch
        from transformers import StoppingCriteriaList

        if settings.temperature > 0:
            torch.manual_seed(settings.seed)
        kwargs = self._generate_kwargs(settings, inputs["input_ids"].shape[1], decoding or self.decoding)
        with self._lock, torch.inference_mode():
            try:
                self.model.generate(**inputs, **kwargs, streamer=streamer,
                                    stopping_criteria=StoppingCriteriaList([_Cancelled(cancel)]))
            except torch.OutOfMemoryError:
                torch.cuda.empty_cache()
                raise OutOfMemory("out of GPU memory: use fewer video frames (--video-max-frames), fewer pixels "
                                  "(--image-max-pixels, --video-max-pixels), shorter audio or a smaller batch") from None

    def _texts(self, streamer: _TokenStreamer) -> list[str]:
        return [self.tokenizer.decode(self._until_eos(row), skip_special_tokens=True) for row in streamer.tokens]

    def _until_eos(self, ids: list[int]) -> list[int]:
        for i, t in enumerate(ids):
            if t in self._eos:
                return ids[:i]
        return ids

    def _timing(self, streamer: _TokenStreamer, started: float, row: int = 0) -> Timing:
        total = time.perf_counter() - started
        tokens = len(self._until_eos(streamer.tokens[row]))
        ttft = (streamer.first_token_at - started) if streamer.first_token_at else None
        decode = total - (ttft or 0.0)
        rate = (tokens - 1) / decode if tokens > 1 and decode > 0 else None
        return Timing(ttft_s=ttft, total_s=total, generated_tokens=tokens, tokens_per_s=rate)

    def _generate_texts(self, inputs: dict, rows: int, settings: GenerationSettings,
                        cancel: threading.Event | None = None) -> tuple[list[str], list[Timing]]:
        streamer = _TokenStreamer(rows)
        started = time.perf_counter()
        self._run_generate(inputs, streamer, cancel or threading.Event(), settings)
        return self._texts(streamer), [self._timing(streamer, started, r) for r in range(rows)]

    # ------------------------------------------------------------------ public

    def _rows(self, sample: Sample, media, swap_check: bool):
        orders = (ORDER_AB, ORDER_BA) if swap_check else (ORDER_AB,)
        return [(build_messages(sample, self.format, self.rubric, o), media) for o in orders]

    def _finish(self, sample: Sample, texts: list[str], timings: list[Timing]) -> Judgment:
        return judgment_from_texts(sample, texts, self.rubric, self.description, timings)

    def judge(self, sample: Sample, swap_check: bool = False, settings: GenerationSettings | None = None,
              cancel: threading.Event | None = None) -> Judgment:
        """Judge one pair. With swap_check, both orders go through one batched generate call. Setting `cancel`
        stops generation at the next token."""
        _validate(sample, self.input_limits)
        settings = settings or self.generation
        rows = self._rows(sample, self._decode_media(sample), swap_check)
        texts, timings = self._generate_texts(self._inputs(rows), len(rows), settings, cancel)
        return self._finish(sample, texts, timings)

    def stream(self, sample: Sample, swap_check: bool = False, cancel: threading.Event | None = None,
               settings: GenerationSettings | None = None) -> Iterator[StreamUpdate]:
        """Yield the text so far with its partial judgment; the last update carries the judgment.

        Set `cancel`, or close the generator, to stop generation at once.
        """
        _validate(sample, self.input_limits)
        settings = settings or self.generation
        cancel = cancel or threading.Event()
        rows = self._rows(sample, self._decode_media(sample), swap_check)
        inputs = self._inputs(rows)
        streamer = _TokenStreamer(len(rows))
        failure: list[BaseException] = []

        def work():
            try:
                self._run_generate(inputs, streamer, cancel, settings)
            except BaseException as e:  # handed to the consumer below
                failure.append(e)
                streamer.end()

        started = time.perf_counter()
        worker = threading.Thread(target=work, name="rrm-generate", daemon=True)
        worker.start()
        try:
            done = False
            while not done:
                done = streamer.updates.get() is None
                while not done and not streamer.updates.empty():  # decode once per burst of tokens
                    done = streamer.updates.get() is None
                texts = self._texts(streamer)
                yield StreamUpdate(texts[0], parse_partial(texts[0], self.rubric),
                                   texts[1] if len(texts) > 1 else None)
            worker.join()
            if failure:
                raise failure[0]
            texts = self._texts(streamer)
            timings = [self._timing(streamer, started, r) for r in range(len(rows))]
            judgment = self._finish(sample, texts, timings)
            if cancel.is_set():
                judgment.status.errors.append("generation was cancelled")
            yield StreamUpdate(texts[0], parse_partial(texts[0], self.rubric),
                               texts[1] if len(texts) > 1 else None, judgment)
        finally:
            cancel.set()
            worker.join()

    def judge_batch(self, samples: Sequence[Sample], batch_size: int = 4, swap_check: bool = False,
                    progress: bool = True, settings: GenerationSettings | None = None,
                    cancel: threading.Event | None = None) -> list[Judgment]:
        """Judge many pairs. A bad sample becomes a failed judgment; the batch goes on. Setting `cancel` stops it
        at the next token: the pairs judged so far are returned."""
        from tqdm.auto import tqdm

        settings = settings or self.generation
        results: list[Judgment] = []
        with tqdm(total=len(samples), desc="judging", unit="pair", disable=not progress) as bar:
            for start in range(0, len(samples), batch_size):
                if cancel is not None and cancel.is_set():
                    break
                chunk = samples[start:start + batch_size]
                results.extend(self._judge_chunk(chunk, swap_check, settings, cancel))
                bar.update(len(chunk))
        return results

    def _judge_chunk(self, chunk: Sequence[Sample], swap_check: bool, settings,
                     cancel: threading.Event | None = None) -> list[Judgment]:
        out: list[Judgment | None] = [None] * len(chunk)
        rows, owners = [], []
        for i, sample in enumerate(chunk):
            try:
                _validate(sample, self.input_limits)
                new = self._rows(sample, self._decode_media(sample), swap_check)
            except RRMError as e:
                out[i] = failed_judgment(sample, str(e), self.description)
                continue
            rows += new
            owners += [i] * len(new)
        if rows:
            try:
                texts, timings = self._generate_texts(self._inputs(rows), len(rows), settings, cancel)
            except RRMError as e:  # out of memory, or an input the processor refuses
                if len(chunk) == 1:
                    return [failed_judgment(chunk[0], str(e), self.description)]
                # Retry one pair at a time: only the pair at fault is lost, not the batch.
                return [j for s in chunk for j in self._judge_chunk([s], swap_check, settings, cancel)]
            for i in sorted(set(owners)):
                mine = [r for r, o in enumerate(owners) if o == i]
                out[i] = self._finish(chunk[i], [texts[r] for r in mine], [timings[r] for r in mine])
        return out

    def grade(self, sample: Sample, settings: GenerationSettings | None = None) -> Grade:
        """Pointwise: score `sample.response_a` alone, per criterion and overall."""
        if not sample.response_a.strip():
            raise RRMError("the response to grade is empty")
        settings = settings or self.generation
        rows = [(build_grade_messages(sample, self.rubric), self._decode_media(sample))]
        texts, timings = self._generate_texts(self._inputs(rows), 1, settings)
        return dataclasses.replace(parse_grade(texts[0], self.rubric), timing=timings[0], model=self.description)

    def answer(self, samples: Sequence[Sample], settings: GenerationSettings | None = None) -> list[str]:
        """Plain answers to the samples' queries (responses are ignored): how a local model generates candidates.

        One batched call; a sample whose media cannot be read raises its MediaError.
        """
        settings = settings or self.generation
        rows = [(build_question_messages(s), self._decode_media(s)) for s in samples]
        texts, _ = self._generate_texts(self._inputs(rows), len(rows), settings)
        return texts

    def best_of_n(self, query: str, responses: Sequence[str], media: Sequence[MediaItem] = (),
                  swap_check: bool = True, settings: GenerationSettings | None = None,
                  cancel: threading.Event | None = None) -> BestOfN:
        """Knockout: the current best meets each next candidate; it is replaced only by a clear win."""
        if len(responses) < 2:
            raise RRMError("best_of_n needs at least two responses")
        if len(responses) > self.input_limits.max_responses:
            raise RRMError(f"best_of_n got {len(responses):,} responses; the limit is "
                           f"{self.input_limits.max_responses}")
        result = BestOfN(best=0, wins=[0] * len(responses))
        for challenger in range(1, len(responses)):
            if cancel is not None and cancel.is_set():
                break
            sample = Sample(query=query, response_a=responses[result.best], response_b=responses[challenger],
                            media=list(media), id=f"{result.best}-vs-{challenger}")
            judgment = self.judge(sample, swap_check=swap_check, settings=settings, cancel=cancel)
            result.matches.append((result.best, challenger, judgment))
            if judgment.verdict == VERDICT_B:
                result.best = challenger
            if judgment.verdict in (VERDICT_A, VERDICT_B):  # a tie or no verdict keeps the incumbent, unscored
                result.wins[result.best] += 1
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
           "failed_judgment", "judgment_from_texts", "multimodal_token_ids"]
