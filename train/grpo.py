"""GRPO from an SFT adapter, with image, video and audio in both the rollouts and the loss.

    python -m train.grpo --config train/recipes/grpo-7b-80gb.yaml --init_adapter runs/sft-7b [--key value ...]

TRL 1.16's GRPOTrainer feeds video and audio features to generation but not to
the forward passes that score completions (old, reference and loss log-probs):
the policy would be updated on inputs it never saw. `JudgeGRPOTrainer` fixes
that with one mechanism: prompts are encoded by `rrm.inputs` (every modality,
our media bounds, each clip's own fps), each rollout row keeps an index to its
media, and every log-prob forward gets the media of exactly the rows it scores.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field

import torch

from rrm.errors import RRMError
from rrm.redact import redact
from rrm.inputs import decode_media, encode, judge_rows
from rrm.generation import GenerationSettings, end_ids, multimodal_token_ids
from rrm.judge import Judge
from rrm.model import LoadedModel
from rrm.schema import Sample, flip_verdict

from .common import (JudgeTrainingArguments, evaluation_set, load_trainable, parse_recipe,
                     share_every_gradient_across_ranks, train_and_save)
from .data import load_pairs, randomise_order
from .rewards import DEFAULT_WEIGHTS, RELEASE_SET, REWARD_SETS, SET_FOR_SCHEMA, get_rewards, logged_metrics

log = logging.getLogger(__name__)

_NOT_MEDIA = ("input_ids", "attention_mask", "labels")
# Logged at every evaluation as eval_judge_accuracy: the policy's greedy judgments of the held-out pairs, parsed as
# the judge parses them (an unreadable one is wrong). --metric_for_best_model judge_accuracy keeps the checkpoint
# that judges best as it will be used; the rollouts' sampled verdict accuracy is a noisier guide to that.
JUDGE_ACCURACY = "judge_accuracy"


@dataclass
class GRPOJudgeArguments(JudgeTrainingArguments):
    reward_funcs: list[str] = field(default_factory=lambda: list(DEFAULT_WEIGHTS), metadata={
        "help": f"the rewards, by name ({', '.join(DEFAULT_WEIGHTS)}); their weights are TRL's --reward_weights "
                f"(default: the release's {', '.join(f'{w:g}' for w in DEFAULT_WEIGHTS.values())})"})
    reward_weights_by_name: str = field(default="", metadata={
        "help": "deprecated, and gone in the next release: use --reward_funcs and --reward_weights"})
    reward_set: str = field(default="", metadata={
        "help": f"{', '.join(REWARD_SETS)} (default: the one for the prompt format's output schema)"})
    group_orders: str = field(default="one", metadata={
        "help": "one: every rollout of a group in its row's seeded A/B order (TRL's groups, the release's recipe); "
                "both: half of each group in each order, so that a judge answering by position, not by the "
                "media, earns rewards that differ within the group"})

    def set_for(self, fmt) -> str:
        return self.reward_set or SET_FOR_SCHEMA[fmt.schema]

    def rewards(self, fmt, rubric, weights: list[float] | None) -> tuple[list, list[float]]:
        """TRL's reward_funcs and reward_weights: the named rewards of the chosen set, bound to the recipe's
        rubric, with `weights` (TRL's own reward_weights; None: the release's), then the logged metrics at 0."""
        names, weights = self._weighted_names(weights)
        funcs = get_rewards(names, self.set_for(fmt), rubric)  # an unknown name fails here, with the known ones
        metrics = logged_metrics(self.set_for(fmt), rubric)
        return [*funcs, *metrics], [*weights, *[0.0] * len(metrics)]  # the metrics are logged, not rewarded

    def _weighted_names(self, weights: list[float] | None) -> tuple[list[str], list[float]]:
        if self.reward_weights_by_name:
            log.warning("--reward_weights_by_name is deprecated and goes in the next release: give the names as "
                        "reward_funcs and their weights as reward_weights")
            if weights is not None:
                raise ValueError("give --reward_weights or the deprecated --reward_weights_by_name, not both")
            try:
                by_name = json.loads(self.reward_weights_by_name)
            except json.JSONDecodeError as e:
                raise ValueError(f"--reward_weights_by_name is not JSON ({e.msg})") from None
            return list(by_name), [float(w) for w in by_name.values()]
        if weights is None:
            return list(self.reward_funcs), [DEFAULT_WEIGHTS.get(n, 0.0) for n in self.reward_funcs]
        if len(weights) != len(self.reward_funcs):
            raise ValueError(f"reward_weights has {len(weights)} weights for {len(self.reward_funcs)} "
                             f"reward_funcs ({', '.join(self.reward_funcs)})")
        return list(self.reward_funcs), list(weights)


GROUP_ORDERS = ("one", "both")


def rl_row(sample: Sample, label: str | None, score_a, score_b) -> dict:
    """One RL row as TRL reads it: the serialized sample is the prompt, the rest reach the reward functions."""
    return {"prompt": json.dumps(sample.to_dict()), "label": label, "score_a": score_a, "score_b": score_b}


def both_orders(rows: list[dict], group: int) -> list[dict]:
    """TRL's rollout rows (each prompt repeated `group` times in a row), the second half of every group swapped to
    the other A/B order, its label and teacher scores with it. With one order per group, a judge that gives one
    letter on a pair it cannot tell apart earns the same reward in every rollout: no advantage, and nothing pulls
    it back once it has drifted there. With both orders, that letter is right in one half and wrong in the other."""
    out = []
    for i, row in enumerate(rows):
        if i % group >= group // 2:
            sample = Sample.from_dict(json.loads(row["prompt"])).swapped()
            row = {**row, **rl_row(sample, flip_verdict(row["label"]), row["score_b"], row["score_a"])}
        out.append(row)
    return out


class _WithMedia:
    """The model, called with extra media inputs (TRL builds the text inputs, this adds the rest)."""

    def __init__(self, model, media: dict):
        self.model, self.media = model, media

    def __call__(self, **kwargs):
        return self.model(**kwargs, **self.media)


def _collate(features: list[dict], device) -> dict:
    """Media of several rows, concatenated in row order (as their placeholders appear)."""
    keys = {k for f in features for k in f} - {"use_audio_in_video"}
    media = {k: torch.cat([f[k] for f in features if k in f]).to(device) for k in keys}
    heard = {f["use_audio_in_video"] for f in features if "use_audio_in_video" in f}
    if len(heard) > 1:
        raise RRMError("a GRPO batch mixes videos heard with their sound and silent ones, which one forward cannot "
                       "take: train them apart, or with --video_audio off")
    if heard:
        media["use_audio_in_video"] = heard.pop()
    return media


ZERO_ADVANTAGE = 0.01  # under TRL's scaling, a group with any spread gives some rollout an advantage of 0.35 or more


def zero_advantage_share(advantages, group: int) -> float:
    """The share of groups whose every rollout has a nil advantage (below ZERO_ADVANTAGE): they teach nothing.
    TRL's frac_reward_zero_std misses groups of equal rewards whose weighted sums differ by float rounding."""
    return (advantages.view(-1, group).abs() < ZERO_ADVANTAGE).all(dim=1).float().mean().item()


def make_trainer(fmt, rubric, limits, group_orders: str = "one", **trainer_kwargs):
    """TRL's GRPOTrainer, with every modality in the rollouts and in every log-prob forward; with
    `group_orders="both"`, each group's rollouts in both A/B orders (`both_orders`)."""
    from trl import GRPOTrainer

    class JudgeGRPOTrainer(GRPOTrainer):
        def __init__(self, **kwargs):
            # TRL stops a rollout at the tokenizer's end of text and the model's generation config only. A judge
            # ends its turn with <|im_end|>, as SFT taught it: unless that stops it too, every rollout runs on
            # to the length limit past its judgment, and the strict rewards score them all alike.
            kwargs["model"].generation_config.eos_token_id = end_ids(kwargs["processing_class"].tokenizer)
            super().__init__(**kwargs)
            self.judge_format, self.judge_rubric, self.media_limits = fmt, rubric, limits
            self._row_media: list[dict] = []
            self._rows_in_forward: list[int] | None = None

        def _rows(self, prompts: list[str]):
            decoded = {}
            rows = []
            for prompt in prompts:  # a prompt is a serialized Sample; rollouts repeat it num_generations times
                if prompt not in decoded:
                    sample = Sample.from_dict(json.loads(prompt))
                    decoded[prompt] = judge_rows(sample, decode_media(sample, self.media_limits),
                                                 self.judge_format, self.judge_rubric)[0]
                rows.append(decoded[prompt])
            return rows

        def _tokenize_prompts(self, prompts):
            inputs = encode(self.processing_class, self._rows(prompts), self.media_limits)
            ids = [row[mask.bool()].tolist() for row, mask in zip(inputs["input_ids"], inputs["attention_mask"])]
            return ids, None, {k: v for k, v in inputs.items() if k not in _NOT_MEDIA}

        def _generate_and_score_completions(self, inputs):
            if group_orders == "both":
                inputs = both_orders(inputs, self.num_generations)
            rows = self._rows([x["prompt"] for x in inputs])
            self._row_media = [{k: v for k, v in encode(self.processing_class, [row], self.media_limits).items()
                                if k not in _NOT_MEDIA} for row in rows]
            self._rows_in_forward = list(range(len(inputs)))  # old and reference log-probs, in rollout order
            try:
                output = super()._generate_and_score_completions(inputs)
            finally:
                self._rows_in_forward = None
            output["media_row"] = torch.arange(len(inputs), device=self.accelerator.device)
            mode = "train" if self.model.training else "eval"
            self._metrics[mode]["frac_zero_advantage"].append(
                zero_advantage_share(self.accelerator.gather(output["advantages"]), self.num_generations))
            return output

        def evaluate(self, *args, **kwargs):
            if self.eval_dataset is not None:  # logged with TRL's eval metrics, and read by the best-model check
                self._metrics["eval"][JUDGE_ACCURACY].append(self._judge_accuracy())
            return super().evaluate(*args, **kwargs)

        def _judge_accuracy(self) -> float:
            """The share of held-out pairs the policy judges right, greedily (every process judges them all)."""
            from trl.models.utils import unwrap_model_for_generation

            rows = list(self.eval_dataset)
            samples = [Sample.from_dict(json.loads(r["prompt"])) for r in rows]
            with unwrap_model_for_generation(self.model_wrapped, self.accelerator,
                                             gather_deepspeed3_params=self.args.ds3_gather_for_generation) as model:
                training = model.training
                model.eval()
                loaded = LoadedModel(model, self.processing_class, "policy", None, "none",
                                     str(self.accelerator.device), {})
                judge = Judge(loaded, fmt, rubric, limits, GenerationSettings(
                    max_new_tokens=self.max_completion_length), decoding="plain")
                try:
                    judgments = judge.judge_batch(samples, self.args.per_device_eval_batch_size, progress=False)
                finally:
                    model.train(training)
            return sum(j.verdict == r["label"] for j, r in zip(judgments, rows)) / len(rows)

        def _compute_loss(self, model, inputs):
            self._rows_in_forward = inputs["media_row"].tolist()  # rows were shuffled and split: follow them
            try:
                return super()._compute_loss(model, inputs)
            finally:
                self._rows_in_forward = None

        def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep,
                                               batch_size=None, compute_entropy=False, compute_aux_loss=False,
                                               **image_kwargs):
            rows = self._rows_in_forward
            if rows is None:
                raise RuntimeError("a log-prob forward without its rows' media")
            step = batch_size or input_ids.size(0)
            logps, entropies, aux = [], [], []
            for start in range(0, input_ids.size(0), step):
                end = min(start + step, input_ids.size(0))
                media = _collate([self._row_media[r] for r in rows[start:end]], input_ids.device)
                lp, ent, ax = super()._get_per_token_logps_and_entropies(
                    _WithMedia(model, media), input_ids[start:end], attention_mask[start:end], logits_to_keep,
                    batch_size=end - start, compute_entropy=compute_entropy, compute_aux_loss=compute_aux_loss)
                logps.append(lp)
                entropies.append(ent)
                aux.append(ax)
            return (torch.cat(logps), torch.cat(entropies) if compute_entropy else None,
                    torch.stack(aux).mean() if compute_aux_loss else None)

    return JudgeGRPOTrainer(**trainer_kwargs)


def build_dataset(args: GRPOJudgeArguments, seed: int, path: str | None = None):
    """RL rows of `path` (default: --data): the serialized sample (in its seeded A/B order) as the prompt, with the
    label and teacher scores."""
    from datasets import Dataset

    path = path or args.data
    pairs, report = load_pairs(path, args.media_root, args.data_format, splits=("rl",) if
                               args.data_format == "preference" else ("sft", "rl"))
    rows = [rl_row(p.sample, p.label, p.score_a, p.score_b) for p in randomise_order(pairs, seed)]
    log.warning("GRPO data: %s (%s)", report, path)
    if not rows:
        raise RRMError(f"no RL rows in {path} (records with \"split\": \"rl\" and a label)")
    return Dataset.from_list(rows)


def main(argv: list[str] | None = None) -> int:
    from trl import GRPOConfig

    args, config = parse_recipe(GRPOJudgeArguments, GRPOConfig, argv)
    try:
        fmt, rubric = args.prompt()
        funcs, config.reward_weights = args.rewards(fmt, rubric, config.reward_weights)
        if args.group_orders not in GROUP_ORDERS:
            raise ValueError(f"unknown --group_orders {args.group_orders!r}; known: {', '.join(GROUP_ORDERS)}")
        if args.group_orders == "both" and config.use_vllm and config.vllm_mode == "server":
            raise ValueError("--group_orders both needs every rollout's own prompt: vLLM's server mode samples a "
                             "group from one prompt; use --vllm_mode colocate")
        dataset = build_dataset(args, config.seed)
        evaluation = evaluation_set(args, config, build_dataset)
        unscored = sum(r["score_a"] is None or r["score_b"] is None for r in dataset)
        if unscored and args.set_for(fmt) == RELEASE_SET:
            log.warning("%d RL rows have no teacher scores: the %s preference reward gives every completion of "
                        "theirs -1, as the release does (--reward_set rubric-v2 scores the verdict alone there)",
                        unscored, RELEASE_SET)
        model, processor, peft_config = load_trainable(args)
    except (RRMError, ValueError) as e:
        print(f"error: {redact(e)}", file=sys.stderr)
        return 2
    share_every_gradient_across_ranks(model, config)
    config.generation_kwargs = {**(config.generation_kwargs or {}),
                                "suppress_tokens": multimodal_token_ids(processor.tokenizer)}
    trainer = make_trainer(fmt, rubric, args.limits(), args.group_orders, model=model, args=config,
                           train_dataset=dataset, eval_dataset=evaluation, processing_class=processor,
                           reward_funcs=funcs, peft_config=peft_config)
    return train_and_save(trainer, processor, args, config)


if __name__ == "__main__":
    sys.exit(main())
