"""Answers from a local chat model that is not an Omni checkpoint: an image-text-to-text VLM or a text LM.

Omni checkpoints answer through `rrm.Judge.answer` (the judge's own input path,
images, video and audio). Any other model is loaded by `rrm.model.load_chat_model`
and given what it can take: a VLM gets images and video frames through its own
processor; a text model gets the query alone. A prompt with media the model
cannot take fails with one line naming the prompt, and the stage goes on.
"""

from __future__ import annotations

from collections.abc import Sequence

from rrm.errors import RRMError, first_line
from rrm.generation import GenerationSettings, end_ids, generate_kwargs
from rrm.inputs import to_device
from rrm.media import MediaLimits, load_media
from rrm.model import LoadedModel
from rrm.prompts import build_question_messages
from rrm.schema import IMAGE, VIDEO, Sample


class ChatGenerator:
    def __init__(self, loaded: LoadedModel, limits: MediaLimits = MediaLimits()):
        self.loaded, self.model, self.processor, self.limits = loaded, loaded.model, loaded.processor, limits
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self.tokenizer.padding_side = "left"  # generation continues every row from its end
        self.vision = hasattr(self.processor, "image_processor")

    def _check(self, sample: Sample) -> None:
        kinds = {m.kind for m in sample.media}
        taken = {IMAGE, VIDEO} if self.vision else set()
        refused = sorted(kinds - taken)
        if refused:
            what = "an image-text model" if self.vision else "a text model"
            raise RRMError(f"{self.loaded.name} is {what}: prompt {sample.id} has {', '.join(refused)} it cannot take")

    def _inputs(self, samples: Sequence[Sample]):
        if not self.vision:
            texts = [self.tokenizer.apply_chat_template([{"role": "user", "content": s.query}], tokenize=False,
                                                        add_generation_prompt=True) for s in samples]
            return self.tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=False)
        texts = [self.processor.apply_chat_template(build_question_messages(s), tokenize=False,
                                                    add_generation_prompt=True) for s in samples]
        decoded = [(m.kind, load_media(m, self.limits)) for s in samples for m in s.media]
        kwargs = {}
        if any(k == IMAGE for k, _ in decoded):
            kwargs["images"] = [obj for k, obj in decoded if k == IMAGE]
        if any(k == VIDEO for k, _ in decoded):
            kwargs["videos"] = [obj.frames for k, obj in decoded if k == VIDEO]
        try:
            return self.processor(text=texts, padding=True, return_tensors="pt", **kwargs)
        except Exception as e:
            raise RRMError(f"the processor of {self.loaded.name} rejected the input: "
                           f"{first_line(e)}") from None

    def answer(self, samples: Sequence[Sample], settings: GenerationSettings) -> list[str]:
        """One batched generate call for the samples' queries."""
        import torch

        for s in samples:
            self._check(s)
        inputs = to_device(self._inputs(samples), self.model)
        kwargs = generate_kwargs(settings, end_ids(self.tokenizer), self.tokenizer.pad_token_id)
        if settings.sampling:
            torch.manual_seed(settings.seed)
        with torch.inference_mode():
            out = self.model.generate(**inputs, **kwargs)
        new = out[:, inputs["input_ids"].shape[1]:]
        return [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]
