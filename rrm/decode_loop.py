"""The judge's own decode loop for the static-cache paths, handed to transformers' `generate` (`custom_generate`).

transformers prepares the inputs, the cache, the logits processors and the stopping criteria as usual; this loop
then runs the steps. It exists for two things transformers' own loop (5.24) will not do on a GPU:

- compile the decode step for any weights, bitsandbytes included (transformers refuses to compile those; the
  backend's warm-up checks the compiled tokens against plain `generate` and falls back if they differ);
- read the "every row has ended" flag one step late (`defer_stop`). Reading it at once makes the host wait for
  the device at every token, so the device idles while the host queues the next step; at a few ms a step that
  caps decode near 300 tokens/s. Read late, the host queues step n+1 while the device still runs step n. It
  costs one extra step at the end, which is dropped, and tokens reach the streamer one step behind.

It does greedy and sampled decoding of one sequence per row (what the judge asks for), nothing else.
"""

from __future__ import annotations

from collections.abc import Callable


class _StopNow:
    """Reads the stop flag at every step, as transformers does: the host waits for each token."""

    def __init__(self, input_ids, streamer):
        self.streamer = streamer

    def __call__(self, unfinished, tokens) -> bool:
        if self.streamer is not None:
            self.streamer.put(tokens.cpu())
        return bool(unfinished.max() == 0)

    def finish(self) -> int:
        return 0


class _StopOneStepLate:
    """Copies each step's stop flag and tokens to the host without waiting, and reads them at the next step.

    Two host buffers take turns: step k writes one while the host reads step k-1's from the other."""

    def __init__(self, input_ids, streamer):
        import torch

        cuda = input_ids.device.type == "cuda"  # pinned memory and events make the copies asynchronous
        rows = input_ids.shape[0]
        self.buffers = [(torch.zeros((), dtype=torch.bool, pin_memory=cuda),
                         torch.zeros(rows, dtype=torch.long, pin_memory=cuda),
                         torch.cuda.Event() if cuda else None) for _ in range(2)]
        self.streamer, self.steps, self.all_ended = streamer, 0, False

    def _read(self, step: int) -> bool:
        ended, tokens, copied = self.buffers[step % 2]
        if copied is not None:
            copied.synchronize()
        if self.streamer is not None:
            self.streamer.put(tokens.clone())
        return bool(ended)

    def __call__(self, unfinished, tokens) -> bool:
        ended, host_tokens, copied = self.buffers[self.steps % 2]
        ended.copy_(unfinished.max() == 0, non_blocking=True)
        host_tokens.copy_(tokens, non_blocking=True)
        if copied is not None:
            copied.record()
        if self.steps:
            self.all_ended = self._read(self.steps - 1)
        self.steps += 1
        return self.all_ended

    def finish(self) -> int:
        """How many steps to drop: the last one if it ran after every row had ended; else it is streamed now."""
        if self.all_ended:
            return 1
        self._read(self.steps - 1)
        return 0


def decoding_loop(compile_step: bool, defer_stop: bool, streamer=None) -> Callable:
    """A `custom_generate` callable for `model.generate`: compile the decode step or not, defer the stop or not.

    Pass `streamer` here as well as to `generate`: transformers 5.24 hands a callable neither the streamer nor
    `synced_gpus` (it rebuilds their dict from the callable's own extra parameters), though it still gives the
    streamer the prompt."""
    handed = streamer

    # transformers matches a callable's parameter names against its own loop's, `self` (the model) included.
    # `synced_gpus` (for sharded training) is taken so that it does not reach the model; the judge never shards.
    def loop(self, input_ids, logits_processor, stopping_criteria, generation_config, synced_gpus=False,
             streamer=None, **model_kwargs):
        import torch

        streamer = streamer if streamer is not None else handed

        # The length limit is known on the host, so even a deferred stop ends on time there: a static cache has no
        # room for a step past it.
        limit = stopping_criteria.max_length or float("inf")
        pad = generation_config._pad_token_tensor
        pad = None if pad is None else pad.to(input_ids.device)
        unfinished = torch.ones(input_ids.shape[0], dtype=torch.long, device=input_ids.device)
        forward = self.get_compiled_call(generation_config.compile_config) if compile_step else self.__call__
        stop = (_StopOneStepLate if defer_stop else _StopNow)(input_ids, streamer)
        outputs = self._prefill(input_ids, generation_config, model_kwargs)
        while True:
            model_kwargs = self._update_model_kwargs_for_generation(outputs, model_kwargs)
            logits = outputs.logits[:, -1].to(copy=True, dtype=torch.float32, device=input_ids.device)
            del outputs  # the prefill's logits are large
            scores = logits_processor(input_ids, logits)
            if generation_config.do_sample:
                tokens = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
            else:
                tokens = scores.argmax(dim=-1)
            if pad is not None:  # rows that have ended write padding
                tokens = tokens * unfinished + pad * (1 - unfinished)
            input_ids = torch.cat([input_ids, tokens[:, None]], dim=-1)
            unfinished = unfinished & ~stopping_criteria(input_ids, None)
            if stop(unfinished, tokens) or input_ids.shape[1] >= limit:
                break
            inputs = self.prepare_inputs_for_generation(input_ids, next_sequence_length=1, **model_kwargs)
            outputs = forward(**inputs, return_dict=True)
        dropped = stop.finish()
        if streamer is not None:
            streamer.end()
        return input_ids[:, :input_ids.shape[1] - dropped]

    return loop


__all__ = ["decoding_loop"]
