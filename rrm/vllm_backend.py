"""The vLLM offline engine as a backend, for large sweeps (`--backend vllm`): pip install vllm, on a CUDA machine.

The judging procedure, the prompts, the media decoding and bounds are the
judge's (rrm.judge); only generation changes. vLLM batches every row it is
given (continuous batching), so pass large batches. A LoRA adapter is served on
its base with vLLM's LoRA support; `--quantization 4bit` quantizes with
bitsandbytes in vLLM. The offline engine returns whole texts: a stream is one
final step, and a cancel takes effect before the next call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence

from .errors import ModelLoadError, RRMError, first_line
from .generation import GenerationSettings, Output, Progress, end_ids, multimodal_token_ids, stream_once
from .inputs import Row, has_sound
from .media import MediaLimits
from .model import DEFAULT_MODEL, _read_json, load_processor, locate
from .quantization import TORCHAO
from .schema import AUDIO, IMAGE, VIDEO, Timing

# Media per prompt the engine must make room for (a pair prompt carries the query's media once).
MEDIA_PER_PROMPT = {IMAGE: 4, VIDEO: 2, AUDIO: 2}
# Added to the logits of media placeholder tokens: a judge must never write one.
SUPPRESS_BIAS = -100.0


def import_vllm():
    try:
        import vllm
    except ImportError:
        raise RRMError("--backend vllm needs vLLM, which is not installed: pip install vllm (on a CUDA machine), "
                       "or use --backend transformers") from None
    return vllm


class VLLMBackend:
    name = "vllm"

    def __init__(self, engine, processor, checkpoint, lora=None, quantization: str = "none"):
        self.engine, self.processor, self.checkpoint, self._lora = engine, processor, checkpoint, lora
        self.tokenizer = processor.tokenizer
        self.judge_config = checkpoint.judge_config or {}
        self.quantization = quantization
        self._suppress = multimodal_token_ids(self.tokenizer)
        self._eos = end_ids(self.tokenizer)
        self.decoding, self.decoding_note = "vllm", "vLLM's own (CUDA graphs, continuous batching)"

    @classmethod
    def load(cls, model: str = DEFAULT_MODEL, *, quantization: str = "auto", merge_adapter: bool = False,
             decoding: str = "auto", seed: int = 0, **engine_kwargs) -> VLLMBackend:
        """Start a vLLM engine on the checkpoint; `engine_kwargs` go to `vllm.LLM` (e.g. tensor_parallel_size)."""
        if decoding != "auto":
            raise RRMError("--decoding is for the transformers backend; vLLM chooses its own (CUDA graphs)")
        vllm = import_vllm()
        if merge_adapter:
            raise RRMError("--merge-adapter is for the transformers backend; vLLM serves the adapter on its base")
        if quantization in ("8bit", *TORCHAO):
            raise RRMError(f"--backend vllm quantizes to 4bit (bitsandbytes) or not at all; {quantization} is not "
                           "supported")
        checkpoint = locate(model)
        kwargs = {"model": str(checkpoint.weights), "seed": seed, "limit_mm_per_prompt": MEDIA_PER_PROMPT,
                  **engine_kwargs}
        if quantization == "4bit":
            kwargs["quantization"] = "bitsandbytes"
        lora = None
        if checkpoint.adapter:
            from vllm.lora.request import LoRARequest

            rank = _read_json(checkpoint.adapter / "adapter_config.json").get("r", 8)
            kwargs.update(enable_lora=True, max_lora_rank=max(8, int(rank)))
            lora = LoRARequest("judge", 1, str(checkpoint.adapter))
        try:
            engine = vllm.LLM(**kwargs)
        except Exception as e:
            raise ModelLoadError(f"vLLM cannot load {checkpoint.weights}: {first_line(e)}") from None
        backend = cls(engine, load_processor(*checkpoint.processor_dirs), checkpoint, lora,
                      "4bit" if quantization == "4bit" else "none")
        backend._sampling_params = vllm.SamplingParams
        return backend

    @property
    def description(self) -> str:
        adapter = f" + adapter {self.checkpoint.adapter}" if self.checkpoint.adapter else ""
        return f"{self.checkpoint.name}{adapter} · {self.quantization} · vllm"

    def info(self) -> dict:
        return {"backend": self.name, "model": self.checkpoint.name,
                "adapter": str(self.checkpoint.adapter) if self.checkpoint.adapter else None,
                "quantization": self.quantization, "device": "vllm", "decoding": self.decoding}

    def prompts(self, rows: Sequence[Row]) -> list[dict]:
        """vLLM prompts: the chat template's text and the decoded media, in the order of the placeholders."""
        requests = []
        for messages, media in rows:
            data: dict[str, list] = {}
            sound = has_sound(media)
            if sound and any(kind == AUDIO for kind, _ in media):
                raise RRMError("vLLM hears a video's sound only where the prompt has no separate audio clip: "
                               "judge this sample with --video-audio off, or on the transformers backend")
            for kind, obj in media:
                if kind == IMAGE:
                    data.setdefault(IMAGE, []).append(obj)
                elif kind == VIDEO:
                    data.setdefault(VIDEO, []).append(obj.frames)
                    if sound:  # with use_audio_in_video, vLLM takes each video's own track as its audio
                        data.setdefault(AUDIO, []).append((obj.audio.samples, obj.audio.sampling_rate))
                else:
                    data.setdefault(AUDIO, []).append((obj.samples, obj.sampling_rate))
            prompt = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            request = {"prompt": prompt, "multi_modal_data": data} if data else {"prompt": prompt}
            if sound:
                request["mm_processor_kwargs"] = {"use_audio_in_video": True}
            requests.append(request)
        return requests

    def sampling_params(self, settings: GenerationSettings):
        sampling = settings.sampling
        return self._sampling_params(
            temperature=settings.temperature, top_p=settings.top_p if sampling else 1.0,
            top_k=(settings.top_k or 0) if sampling else 0, min_p=(settings.min_p or 0.0) if sampling else 0.0,
            seed=settings.seed if sampling else None,
            max_tokens=settings.max_new_tokens, min_tokens=settings.min_new_tokens or 0,
            stop_token_ids=self._eos, logit_bias={t: SUPPRESS_BIAS for t in self._suppress} or None)

    def generate(self, rows: Sequence[Row], settings: GenerationSettings, limits: MediaLimits,
                 cancel: threading.Event | None = None) -> list[Output]:
        if cancel is not None and cancel.is_set():
            raise RRMError("generation was cancelled")
        started = time.perf_counter()
        try:
            outputs = self.engine.generate(self.prompts(rows), self.sampling_params(settings), use_tqdm=False,
                                           lora_request=self._lora)
        except (ValueError, RuntimeError) as e:  # an input the engine refuses (too long, too many media)
            raise RRMError(f"vLLM refused the batch: {first_line(e)}") from None
        total = time.perf_counter() - started
        return [Output(o.outputs[0].text, Timing(total_s=total, generated_tokens=len(o.outputs[0].token_ids),
                                                 prompt_tokens=len(getattr(o, "prompt_token_ids", None) or []) or None))
                for o in outputs]

    def stream(self, rows: Sequence[Row], settings: GenerationSettings, limits: MediaLimits,
               cancel: threading.Event | None = None) -> Iterator[Progress]:
        return stream_once(lambda: self.generate(rows, settings, limits, cancel))


__all__ = ["VLLMBackend", "import_vllm"]
