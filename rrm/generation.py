"""The generation seam: what a judge asks of the model behind it, and the in-process backend.

A backend takes rows (chat messages with their decoded media, `rrm.inputs.Row`)
and `GenerationSettings`, and gives back one `Output` (text and timing) per row.
It can also stream: `stream` yields `Progress` with every row's text so far,
the last one carrying the outputs. Setting `cancel` ends generation at the next
token (or, where a backend cannot stop mid-call, before its next call).

Backends (`Judge.from_pretrained(..., backend=)`, `Judge.from_endpoint`):
    transformers   the model in this process (here)
    vllm           a vLLM offline engine (rrm.vllm_backend)
    endpoint       any OpenAI-compatible chat-completions server (rrm.endpoint)
rrm.batching wraps any of them to gather the rows of concurrent callers.

The transformers backend's decoding paths (`decoding=`): `plain` is
transformers' `generate` with its dynamic KV cache. `static` preallocates the
KV cache (STATIC_CACHE_TOKENS, grown in steps of that size when a call needs
more) and runs the judge's own decode loop (rrm.decode_loop), which on a GPU
compiles the decode step with torch.compile and CUDA graphs, for every weight
format (transformers itself will not compile bitsandbytes weights). `deferred`
is `static` with the stop flag read one step late, so the host never waits on
the device between tokens. `auto`, the default, takes `static` on a GPU (but
for 8-bit bitsandbytes weights, never checked there) and `plain` elsewhere.
A static path is warmed up at load on a GPU and checked: if it fails, or its
greedy tokens differ from plain `generate`'s on the warm-up pair, the backend
falls back (`deferred` to `static`, `static` to `plain`) and says why
(`decoding_note`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from .decode_loop import decoding_loop
from .errors import RRMError, first_line
from .inputs import END_OF_TURN, Row, encode, sound_groups, to_device
from .limits import MAX_PROMPT_TOKENS, over
from .media import MediaLimits
from .model import LoadedModel
from .schema import Timing

log = logging.getLogger(__name__)

DECODINGS = ("auto", "plain", "static", "deferred")
_STATIC = ("static", "deferred")  # the paths through rrm.decode_loop
STATIC_CACHE_TOKENS = 4096  # a judgment with its prompt fits (an image or 16 video frames, 2K new tokens)
WARM_UP_TOKENS = 24
_WARM_UP_ROWS = [
    [{"role": "user", "content": [{"type": "text", "text": "Which answer names the capital of France? "
                                                          "[A] Paris. [B] Lyon."}]}],
    [{"role": "user", "content": [{"type": "text", "text": "Which answer names the capital of France? "
                                                          "[A] Lyon. [B] Paris."}]}],
]

# Tokens a judge must never write: a random or undertrained model may sample a
# media placeholder, which breaks the multimodal rope index on the next step.
_MULTIMODAL_TOKEN_ATTRS = ("image_token", "video_token", "audio_token", "vision_bos_token", "vision_eos_token",
                           "audio_bos_token", "audio_eos_token")
_MULTIMODAL_TOKENS = ("<|vision_pad|>", "<|IMAGE|>", "<|VIDEO|>", "<|AUDIO|>", "<|vision_bos|>",
                      "<|vision_eos|>", "<|audio_bos|>", "<|audio_eos|>")


class OutOfMemory(RRMError):
    """The device ran out of memory; the cache has been freed."""


class BackendUnavailable(RRMError):
    """The backend cannot serve at all (unreachable, bad key, unknown model): stop rather than fail every pair."""


@dataclass(frozen=True)  # frozen: a default instance is shared by every judge
class GenerationSettings:
    max_new_tokens: int = 1024
    temperature: float = 0.0  # 0 is greedy decoding
    top_p: float = 1.0
    top_k: int | None = None
    # Sampling keeps only tokens at least min_p times as likely as the likeliest one: a hot sampler explores the
    # likely choices without drawing from the long tail of junk tokens. None (or 0): no such cut.
    min_p: float | None = None
    seed: int = 0
    min_new_tokens: int | None = None
    # A row that has not opened its JSON judgment ("{") within this many tokens is stopped there, and its judgment
    # says so: a judge that has not begun by then is writing junk, and would run on to max_new_tokens. None: never.
    # Honoured by the in-process (transformers) backend; not for free text (Judge.answer, chat requests), nor when
    # min_new_tokens asks for at least as many tokens.
    judgment_start_tokens: int | None = 96

    @property
    def sampling(self) -> bool:
        return self.temperature > 0


NO_JUDGMENT_BEGUN = "no judgment had begun"  # in the reason a row stopped early: what the app looks for


@dataclass
class Output:
    text: str
    timing: Timing = field(default_factory=Timing)
    stopped_early: str | None = None  # why generation stopped this row before its end of turn, if it did


@dataclass
class Progress:
    """One step of a stream: every row's text so far; `outputs` is set on the last step only."""

    texts: list[str]
    outputs: list[Output] | None = None


def multimodal_token_ids(tokenizer) -> list[int]:
    """Ids of every media placeholder token: suppressed whenever a judge writes."""
    names = {getattr(tokenizer, a, None) for a in _MULTIMODAL_TOKEN_ATTRS} | set(_MULTIMODAL_TOKENS)
    vocab = tokenizer.get_vocab()
    return sorted({vocab[n] for n in names if n and n in vocab})


def end_ids(tokenizer) -> list[int]:
    """The tokens that end a turn."""
    vocab = tokenizer.get_vocab()
    ids = {vocab[t] for t in (END_OF_TURN, "<|endoftext|>") if t in vocab}
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)


def generate_kwargs(settings: GenerationSettings, eos: Sequence[int], pad: int | None,
                    suppress: Sequence[int] = ()) -> dict:
    """GenerationSettings as the arguments of transformers' `generate` (any causal LM)."""
    kwargs = {"max_new_tokens": settings.max_new_tokens, "do_sample": settings.sampling,
              "eos_token_id": list(eos), "pad_token_id": pad if pad is not None else eos[0]}
    if suppress:
        kwargs["suppress_tokens"] = list(suppress)
    if settings.sampling:
        kwargs.update(temperature=settings.temperature, top_p=settings.top_p)
        if settings.top_k:
            kwargs["top_k"] = settings.top_k
        if settings.min_p:
            kwargs["min_p"] = settings.min_p
    else:  # silence the checkpoint's sampling defaults under greedy decoding
        kwargs.update(temperature=None, top_p=None, top_k=None, min_p=None)
    if settings.min_new_tokens:
        kwargs["min_new_tokens"] = settings.min_new_tokens
    return kwargs


def stream_once(generate: Callable[[], list[Output]]) -> Iterator[Progress]:
    """The stream of a backend that returns whole texts: one final step."""
    outputs = generate()
    yield Progress([o.text for o in outputs], outputs)


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


class _NoJudgmentBegun:
    """A stopping criterion for the rows that have written `limit` tokens without opening a JSON object.

    It looks once, when `limit` tokens are written: a row that has begun by then stays begun, and the others stop
    there (or have ended already)."""

    def __init__(self, prompt_tokens: int, limit: int, opening: list[int], eos: Sequence[int]):
        self.prompt_tokens, self.limit, self.opening, self.eos = prompt_tokens, limit, opening, list(eos)
        self.rows: set[int] = set()  # the rows it stopped

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        written = input_ids[:, self.prompt_tokens:]
        if written.shape[1] != self.limit:
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        begun = torch.isin(written, torch.tensor(self.opening, device=input_ids.device)).any(dim=1)
        ended = torch.isin(written, torch.tensor(self.eos, device=input_ids.device)).any(dim=1)
        stop = ~begun & ~ended
        self.rows.update(stop.nonzero().flatten().tolist())
        return stop


class TransformersBackend:
    """A model loaded in this process (rrm.model.load_model): transformers' `generate`, one call at a time.

    `compile_step`: whether the static paths compile their decode step; None (the default) on a GPU only, where
    CUDA graphs pay for the compilation."""

    name = "transformers"

    def __init__(self, loaded: LoadedModel, decoding: str = "auto", max_prompt_tokens: int = MAX_PROMPT_TOKENS,
                 compile_step: bool | None = None):
        self.loaded = loaded
        self.compile_step = loaded.device.startswith("cuda") if compile_step is None else compile_step
        self.model, self.processor = loaded.model, loaded.processor
        self.tokenizer = self.processor.tokenizer
        self.judge_config = loaded.judge_config or {}
        self.max_prompt_tokens = max_prompt_tokens
        self._suppress = multimodal_token_ids(self.tokenizer)
        self._eos = end_ids(self.tokenizer)
        # Byte-level BPE and SentencePiece vocabularies both spell "{" as itself inside a token.
        self._opening = [i for token, i in self.tokenizer.get_vocab().items() if "{" in token]
        self._lock = threading.Lock()  # one generation at a time per model
        self.decoding, self.decoding_note = self._pick_decoding(decoding)
        if self.decoding in _STATIC and loaded.device.startswith("cuda"):
            self.warm_up()

    @property
    def description(self) -> str:
        return self.loaded.describe()

    def info(self) -> dict:
        return {"backend": self.name, "model": self.loaded.name, "adapter": self.loaded.adapter,
                "quantization": self.loaded.quantization, "device": self.loaded.device, "decoding": self.decoding}

    # ---------------------------------------------------------------- decoding

    def _pick_decoding(self, requested: str) -> tuple[str, str]:
        if requested not in DECODINGS:
            raise RRMError(f"unknown decoding {requested!r}; known: {', '.join(DECODINGS)}")
        if requested != "auto":
            return requested, "as asked"
        if not self.loaded.device.startswith("cuda"):
            return "plain", f"no GPU ({self.loaded.device})"
        if self.loaded.quantization == "8bit":
            return "plain", "8-bit bitsandbytes weights are not compiled (never checked)"
        return "static", "static KV cache, compiled decode step"  # full precision, torchao int4 or NF4

    def warm_up(self) -> None:
        """Run the chosen static path on short rows (batch 1 and 2) and check it against plain generate.

        Any failure, or greedy tokens that differ from plain generate's, switches this backend to the next path
        down (`deferred` to `static`, `static` to `plain`), checked the same way, and says why.
        """
        started, reasons, plain = time.perf_counter(), [], {}
        while self.decoding in _STATIC:
            reason = self._check_against_plain(self.decoding, plain)
            if reason is None:
                self.decoding_note += f" (warm-up {time.perf_counter() - started:.1f} s)"
                log.info("decoding: %s (%s)", self.decoding, self.decoding_note)
                return
            reasons.append(f"{self.decoding} off: {reason}")
            self.decoding = "static" if self.decoding == "deferred" else "plain"
            self.decoding_note = "; ".join(reasons)
            log.warning("decoding falls back to %s: %s", self.decoding, reasons[-1])

    def _check_against_plain(self, decoding: str, plain: dict[int, list[list[int]]]) -> str | None:
        """Why `decoding` cannot be used, or None when its greedy tokens equal plain generate's (`plain`: those
        tokens per batch size, filled on first use and kept for the next path down)."""
        settings = GenerationSettings(max_new_tokens=WARM_UP_TOKENS, min_new_tokens=WARM_UP_TOKENS)
        try:
            for rows in (1, 2):
                inputs = self.inputs([(m, []) for m in _WARM_UP_ROWS[:rows]], MediaLimits())
                fast = self._generate_ids(inputs, rows, settings, decoding)
                fast_again = self._generate_ids(inputs, rows, settings, decoding)  # after compilation
                if rows not in plain:
                    plain[rows] = self._generate_ids(inputs, rows, settings, "plain")
                if fast != plain[rows] or fast_again != plain[rows]:
                    return f"its greedy tokens differed from plain generate's at batch {rows}"
        except OutOfMemory:
            raise
        except Exception as e:  # a compiler or cache error: judge on the next path down
            return f"{type(e).__name__}: {first_line(e, 160)}"
        return None

    def _generate_ids(self, inputs: dict, rows: int, settings: GenerationSettings, decoding: str) -> list[list[int]]:
        streamer = _TokenStreamer(rows)
        self._run_generate(inputs, streamer, threading.Event(), settings, decoding)
        return streamer.tokens

    # ------------------------------------------------------------------ inputs

    def inputs(self, rows: Sequence[Row], limits: MediaLimits) -> dict:
        """Processor inputs for a batch of rows, on the model's device.

        A prompt over the token limit is refused here, before generation (it would hold the model for long, or
        ask for more memory than there is)."""
        inputs = encode(self.processor, rows, limits)
        longest = int(inputs["attention_mask"].sum(dim=1).max())
        if longest > self.max_prompt_tokens:
            raise RRMError(over("the prompt", longest, self.max_prompt_tokens, "tokens", "--max-prompt-tokens")
                           + ": shorten the texts, or use fewer video frames or shorter audio")
        return to_device(inputs, self.model)

    # -------------------------------------------------------------- generation

    def generate_kwargs(self, settings: GenerationSettings, prompt_tokens: int = 0, decoding: str = "plain",
                        streamer: _TokenStreamer | None = None) -> dict:
        kwargs = generate_kwargs(settings, self._eos, self.tokenizer.pad_token_id, self._suppress)
        if decoding in _STATIC:
            # One cache size for most calls: a new size means a new compilation.
            need = prompt_tokens + settings.max_new_tokens  # rounded up to a multiple: -(-a // b) is ceil(a / b)
            kwargs.update(cache_implementation="static",
                          max_cache_len=-(-need // STATIC_CACHE_TOKENS) * STATIC_CACHE_TOKENS,
                          custom_generate=decoding_loop(compile_step=self.compile_step,
                                                        defer_stop=decoding == "deferred", streamer=streamer))
        return kwargs

    def _run_generate(self, inputs: dict, streamer: _TokenStreamer, cancel: threading.Event,
                      settings: GenerationSettings, decoding: str | None = None) -> set[int]:
        """Generate into `streamer`; the rows stopped because no judgment had begun."""
        import torch
        from transformers import StoppingCriteriaList

        if settings.sampling:
            torch.manual_seed(settings.seed)
        prompt_tokens = inputs["input_ids"].shape[1]
        kwargs = self.generate_kwargs(settings, prompt_tokens, decoding or self.decoding, streamer)
        criteria = [_Cancelled(cancel)]
        limit = settings.judgment_start_tokens
        if limit and not (settings.min_new_tokens and settings.min_new_tokens >= limit):  # a bench asks for length
            criteria.append(_NoJudgmentBegun(prompt_tokens, limit, self._opening, self._eos))
        with self._lock, torch.inference_mode():
            try:
                self.model.generate(**inputs, **kwargs, streamer=streamer,
                                    stopping_criteria=StoppingCriteriaList(criteria))
            except torch.OutOfMemoryError:
                torch.cuda.empty_cache()
                raise OutOfMemory("out of GPU memory: use fewer video frames (--video-max-frames), fewer pixels "
                                  "(--image-max-pixels, --video-max-pixels), shorter audio or a smaller batch"
                                  ) from None
        return criteria[1].rows if len(criteria) > 1 else set()

    def _texts(self, streamer: _TokenStreamer) -> list[str]:
        return [self.tokenizer.decode(self._until_eos(row), skip_special_tokens=True) for row in streamer.tokens]

    def _until_eos(self, ids: list[int]) -> list[int]:
        for i, t in enumerate(ids):
            if t in self._eos:
                return ids[:i]
        return ids

    def _outputs(self, streamer: _TokenStreamer, started: float, prompt_tokens: list[int], stopped: set[int],
                 settings: GenerationSettings) -> list[Output]:
        total = time.perf_counter() - started
        ttft = (streamer.first_token_at - started) if streamer.first_token_at else None
        decode = total - (ttft or 0.0)
        outputs = []
        early = (f"stopped after {settings.judgment_start_tokens} tokens: {NO_JUDGMENT_BEGUN} (no JSON object "
                 "opened), so the rest would have been junk too")
        for row, (text, ids, prompt) in enumerate(zip(self._texts(streamer), streamer.tokens, prompt_tokens)):
            tokens = len(self._until_eos(ids))
            rate = (tokens - 1) / decode if tokens > 1 and decode > 0 else None
            outputs.append(Output(text, Timing(ttft_s=ttft, total_s=total, generated_tokens=tokens,
                                               tokens_per_s=rate, prompt_tokens=prompt),
                                  early if row in stopped else None))
        return outputs

    def generate(self, rows: Sequence[Row], settings: GenerationSettings, limits: MediaLimits,
                 cancel: threading.Event | None = None) -> list[Output]:
        groups = sound_groups(rows)
        if len(groups) > 1:  # videos heard with their sound and silent ones: one generate call for each kind
            outputs: list = [None] * len(rows)
            for group in groups:
                for i, output in zip(group, self.generate([rows[i] for i in group], settings, limits, cancel)):
                    outputs[i] = output
            return outputs
        inputs = self.inputs(rows, limits)
        streamer = _TokenStreamer(len(rows))
        started = time.perf_counter()
        stopped = self._run_generate(inputs, streamer, cancel or threading.Event(), settings)
        return self._outputs(streamer, started, inputs["attention_mask"].sum(dim=1).tolist(), stopped, settings)

    def stream(self, rows: Sequence[Row], settings: GenerationSettings, limits: MediaLimits,
               cancel: threading.Event | None = None) -> Iterator[Progress]:
        """Every row's text as tokens arrive. Set `cancel`, or close the generator, to stop at once."""
        cancel = cancel or threading.Event()
        groups = sound_groups(rows)
        if len(groups) > 1:
            yield from self._stream_groups(rows, groups, settings, limits, cancel)
            return
        inputs = self.inputs(rows, limits)
        streamer = _TokenStreamer(len(rows))
        failure: list[BaseException] = []
        stopped: set[int] = set()

        def work():
            try:
                stopped.update(self._run_generate(inputs, streamer, cancel, settings))
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
                yield Progress(self._texts(streamer))
            worker.join()
            if failure:
                raise failure[0]
            outputs = self._outputs(streamer, started, inputs["attention_mask"].sum(dim=1).tolist(), stopped, settings)
            yield Progress([o.text for o in outputs], outputs)
        finally:
            cancel.set()
            worker.join()

    def _stream_groups(self, rows: Sequence[Row], groups: list[list[int]], settings: GenerationSettings,
                       limits: MediaLimits, cancel: threading.Event) -> Iterator[Progress]:
        """A stream over rows that cannot share a forward (rrm.inputs.sound_groups): one group after another."""
        texts, outputs = [""] * len(rows), [None] * len(rows)
        for group in groups:
            for step in self.stream([rows[i] for i in group], settings, limits, cancel):
                for i, text in zip(group, step.texts):
                    texts[i] = text
                if step.outputs is None:
                    yield Progress(list(texts))
                else:
                    for i, output in zip(group, step.outputs):
                        outputs[i] = output
        yield Progress(list(texts), outputs)


__all__ = ["GenerationSettings", "Output", "Progress", "TransformersBackend", "OutOfMemory", "BackendUnavailable",
           "DECODINGS", "multimodal_token_ids", "end_ids", "generate_kwargs", "stream_once"]
