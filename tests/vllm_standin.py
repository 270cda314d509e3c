"""A stand-in for the parts of vLLM's offline API that rrm.vllm_backend uses, run on transformers.

vLLM needs CUDA and cannot be installed here. This stand-in takes the same
call shapes (`LLM(...)`, `LLM.generate(prompts, SamplingParams, use_tqdm=,
lora_request=)`, `LoRARequest(name, id, path)`), rejects keyword names vLLM
does not have, and does what vLLM does with a multimodal prompt: it hands the
prompt text and `multi_modal_data` to the model's Hugging Face processor
(which fails when the placeholders and the media do not match), then
generates. What it cannot check is vLLM itself: its kernels, its own media
resizing, its LoRA and bitsandbytes support for Qwen2.5-Omni.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass

import torch


@dataclass
class SamplingParams:  # the field names and defaults of vllm.SamplingParams that rrm sets
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    max_tokens: int | None = 16
    min_tokens: int = 0
    stop_token_ids: list | None = None
    logit_bias: dict | None = None


@dataclass
class LoRARequest:
    lora_name: str
    lora_int_id: int
    lora_path: str


@dataclass
class CompletionOutput:
    text: str
    token_ids: list


@dataclass
class RequestOutput:
    prompt: str
    outputs: list


class _Bias:
    def __init__(self, bias: dict):
        self.ids, self.values = list(bias), torch.tensor(list(bias.values()))

    def __call__(self, input_ids, scores):
        scores[:, self.ids] += self.values.to(scores.dtype)
        return scores


class LLM:
    calls: list = []  # every LLM(...) and generate(...) call, for tests to read

    def __init__(self, model: str, seed: int = 0, limit_mm_per_prompt: dict | None = None,
                 quantization: str | None = None, enable_lora: bool = False, max_lora_rank: int = 16):
        from transformers import AutoProcessor, Qwen2_5OmniThinkerForConditionalGeneration

        LLM.calls.append(("init", dict(model=model, seed=seed, limit_mm_per_prompt=limit_mm_per_prompt,
                                       quantization=quantization, enable_lora=enable_lora,
                                       max_lora_rank=max_lora_rank)))
        self.model = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(model).eval()
        self.processor = AutoProcessor.from_pretrained(model)
        self.limits, self.enable_lora, self._adapters = limit_mm_per_prompt or {}, enable_lora, {}

    def _model_for(self, lora_request):
        if lora_request is None:
            return self.model
        if not self.enable_lora:
            raise ValueError("LoRA is not enabled")
        if lora_request.lora_path not in self._adapters:
            from peft import PeftModel

            self._adapters[lora_request.lora_path] = PeftModel.from_pretrained(self.model, lora_request.lora_path)
        return self._adapters[lora_request.lora_path]

    def generate(self, prompts, sampling_params: SamplingParams, use_tqdm: bool = True, lora_request=None):
        LLM.calls.append(("generate", len(prompts), sampling_params, lora_request))
        model, tokenizer = self._model_for(lora_request), self.processor.tokenizer
        out = []
        for request in prompts:
            data = request.get("multi_modal_data", {})
            for kind, items in data.items():
                if len(items) > self.limits.get(kind, 1):
                    raise ValueError(f"too many {kind} items in one prompt")
            kwargs = {}
            if "image" in data:
                kwargs["images"] = data["image"]
            if "video" in data:
                kwargs["videos"] = data["video"]
            if "audio" in data:
                assert all(rate == 16000 for _, rate in data["audio"]), "audio must be 16 kHz"
                kwargs["audio"] = [a for a, _ in data["audio"]]
            heard = (request.get("mm_processor_kwargs") or {}).get("use_audio_in_video", False)
            if heard:  # as vLLM's Qwen2.5-Omni takes it: one audio item per video, each that video's sound
                assert len(kwargs.get("audio", [])) == len(kwargs["videos"]), "one audio track per video"
                kwargs.update(load_audio_from_video=True, audio_from_video_indices=list(range(len(kwargs["videos"]))))
            inputs = self.processor(text=[request["prompt"]], return_tensors="pt", **kwargs)
            inputs.pop("num_audio_tokens", None)
            if heard:
                inputs["use_audio_in_video"] = True
            p = sampling_params
            generate = {"max_new_tokens": p.max_tokens, "min_new_tokens": p.min_tokens or None,
                        "do_sample": p.temperature > 0, "eos_token_id": p.stop_token_ids,
                        "pad_token_id": tokenizer.pad_token_id}
            if p.temperature > 0:
                torch.manual_seed(p.seed or 0)
                generate.update(temperature=p.temperature, top_p=p.top_p, min_p=p.min_p or None)
            else:
                generate.update(temperature=None, top_p=None, top_k=None)
            if p.logit_bias:
                from transformers import LogitsProcessorList

                generate["logits_processor"] = LogitsProcessorList([_Bias(p.logit_bias)])
            with torch.inference_mode():
                ids = model.generate(**inputs, **generate)[0, inputs["input_ids"].shape[1]:].tolist()
            stop = next((i for i, t in enumerate(ids) if t in (p.stop_token_ids or [])), len(ids))
            out.append(RequestOutput(request["prompt"], [CompletionOutput(
                tokenizer.decode(ids[:stop], skip_special_tokens=True), ids[:stop + 1])]))
        return out


def install(monkeypatch) -> None:
    """Make `import vllm` (and vllm.lora.request) find this stand-in for one test."""
    LLM.calls = []
    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = LLM, SamplingParams
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = LoRARequest
    for name, module in (("vllm", vllm), ("vllm.lora", lora), ("vllm.lora.request", request)):
        monkeypatch.setitem(sys.modules, name, module)
