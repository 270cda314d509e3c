"""The judge on a vLLM engine, for large sweeps (`--backend vllm`): pip install vllm, on a CUDA machine.

The prompts, the media decoding and bounds, the parser and the two-order
protocol are the same as `Judge`'s: only the generation call changes. vLLM
batches every row it is given (continuous batching), so pass large batches. A
LoRA adapter is served on its base with vLLM's LoRA support; `--quantization
4bit` quantizes with bitsandbytes in vLLM. Streaming stays with the
transformers backend.
"""

from __future__ import annotations

import time

from .errors import ModelLoadError, RRMError, first_line
from .judge import GenerationSettings, Judge, PromptFiles
from .limits import InputLimits
from .media import MediaLimits
from .model import DEFAULT_MODEL, LoadedModel, load_processor, _read_json, locate
from .rubric import Rubric
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


class VLLMJudge(Judge):
    _lora = None  # a vllm LoRARequest when the checkpoint is an adapter

    @classmethod
    def from_pretrained(cls, model: str = DEFAULT_MODEL, *, quantization: str = "auto", device: str | None = None,
                        prompt_format: str | None = None, prompt_template: str | None = None,
                        system_prompt: str | None = None, rubric: Rubric | dict | str | None = None,
                        merge_adapter: bool = False, limits: MediaLimits | None = None,
                        generation: GenerationSettings = GenerationSettings(), decoding: str = "auto",
                        input_limits: InputLimits = InputLimits(), **engine_kwargs) -> VLLMJudge:
        """Start a vLLM engine on the checkpoint; `engine_kwargs` go to `vllm.LLM` (e.g. tensor_parallel_size)."""
        if decoding != "auto":
            raise RRMError("--decoding is for the transformers backend; vLLM chooses its own (CUDA graphs)")
        vllm = import_vllm()
        prompt_files = PromptFiles(prompt_template, system_prompt)
        if merge_adapter:
            raise RRMError("--merge-adapter is for the transformers backend; vLLM serves the adapter on its base")
        if quantization == "8bit":
            raise RRMError("--backend vllm quantizes to 4bit (bitsandbytes) or not at all; 8bit is not supported")
        checkpoint = locate(model)
        kwargs = {"model": str(checkpoint.weights), "seed": generation.seed, "limit_mm_per_prompt": MEDIA_PER_PROMPT,
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
        loaded = LoadedModel(engine, load_processor(*checkpoint.processor_dirs), checkpoint.name,
                             str(model) if checkpoint.adapter else None,
                             "4bit" if quantization == "4bit" else "none", "vllm", checkpoint.judge_config)
        judge = cls(loaded, prompt_format=prompt_files.format(loaded.judge_config, prompt_format), rubric=rubric,
                    limits=limits, generation=generation, input_limits=input_limits)
        judge._lora = lora
        judge._sampling_params = vllm.SamplingParams
        return judge

    def _inputs(self, rows) -> list[dict]:
        """vLLM prompts: the chat template's text and the decoded media, in the order of the placeholders."""
        requests = []
        for messages, media in rows:
            data: dict[str, list] = {}
            for kind, obj in media:
                if kind == IMAGE:
                    data.setdefault(IMAGE, []).append(obj)
                elif kind == VIDEO:
                    data.setdefault(VIDEO, []).append(obj.frames)
                else:
                    data.setdefault(AUDIO, []).append((obj.samples, obj.sampling_rate))
            prompt = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            requests.append({"prompt": prompt, "multi_modal_data": data} if data else {"prompt": prompt})
        return requests

    def _generate_texts(self, inputs: list[dict], rows: int, settings: GenerationSettings, cancel=None):
        # vLLM runs a whole batch at once: a cancel takes effect between calls (judge_batch checks it).
        sampling = settings.temperature > 0
        params = self._sampling_params(
            temperature=settings.temperature, top_p=settings.top_p if sampling else 1.0,
            top_k=(settings.top_k or 0) if sampling else 0, seed=settings.seed if sampling else None,
            max_tokens=settings.max_new_tokens, min_tokens=settings.min_new_tokens or 0,
            stop_token_ids=self._eos, logit_bias={t: SUPPRESS_BIAS for t in self._suppress} or None)
        started = time.perf_counter()
        try:
            outputs = self.model.generate(inputs, params, use_tqdm=False, lora_request=self._lora)
        except (ValueError, RuntimeError) as e:  # an input the engine refuses (too long, too many media)
            raise RRMError(f"vLLM refused the batch: {first_line(e)}") from None
        total = time.perf_counter() - started
        texts = [o.outputs[0].text for o in outputs]
        timings = [Timing(total_s=total, generated_tokens=len(o.outputs[0].token_ids)) for o in outputs]
        return texts, timings

    def stream(self, *args, **kwargs):
        raise RRMError("streaming needs the transformers backend (--backend transformers)")


__all__ = ["VLLMJudge", "import_vllm"]
