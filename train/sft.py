"""Supervised fine-tuning of a judge: LoRA on TRL's SFTTrainer, loss on the judgment tokens only.

    python -m train.sft --config train/recipes/sft-7b-80gb.yaml [--key value ...]
    accelerate launch --config_file train/recipes/accelerate-ddp-8gpu.yaml -m train.sft --config ...
    python -m train.sft ... --eval_data val.jsonl --eval_strategy steps --eval_steps 100 --save_strategy steps \
        --save_steps 100 --load_best_model_at_end true   # keep the checkpoint with the lowest held-out loss

The targets are teacher judgments rendered by rrm in the chosen prompt format,
with a seeded A/B order per pair. The output directory holds a LoRA adapter
that `rrm` and `app.py --model DIR` load directly.
"""

from __future__ import annotations

import json
import logging
import sys

from rrm.errors import RRMError
from rrm.inputs import decode_media, encode, judge_rows
from rrm.redact import redact
from rrm.schema import Sample

from .common import (JudgeTrainingArguments, evaluation_set, load_trainable, parse_recipe,
                     share_every_gradient_across_ranks, train_and_save)
from .data import load_pairs, randomise_order

log = logging.getLogger(__name__)


class JudgeCollator:
    """Batches of (prompt with its media, target judgment): images, video frames and audio features included.

    TRL's collator handles images only, and its max_length would cut the audio
    features; this one encodes everything through rrm.inputs and truncates nothing.
    """

    def __init__(self, processor, fmt, rubric, limits):
        self.processor, self.fmt, self.rubric, self.limits = processor, fmt, rubric, limits

    def __call__(self, examples: list[dict]):
        rows, targets = [], []
        for ex in examples:
            sample = Sample.from_dict(json.loads(ex["sample"]))
            rows += judge_rows(sample, decode_media(sample, self.limits), self.fmt, self.rubric)
            targets.append(ex["target"])
        return dict(encode(self.processor, rows, self.limits, targets=targets))


def build_dataset(args: JudgeTrainingArguments, seed: int, path: str | None = None):
    """The SFT rows of `path` (default: --data): pairs with a teacher rationale, each in its seeded order,
    rendered as targets."""
    from datasets import Dataset

    fmt, rubric = args.prompt()
    path = path or args.data
    pairs, report = load_pairs(path, args.media_root, args.data_format, splits=("sft",))
    rows, no_target = [], 0
    for pair in randomise_order(pairs, seed):
        target = pair.target(rubric)
        if target is None:
            no_target += 1
            continue
        rows.append({"id": pair.sample.id, "sample": json.dumps(pair.sample.to_dict()),
                     "target": fmt.render(target, rubric), "label": pair.label})
    log.warning("SFT data: %s; %d without a full teacher rationale; %d rows (%s)", report, no_target, len(rows), path)
    if not rows:
        raise RRMError(f"no SFT rows in {path}: each needs a label and a rationale for every criterion")
    return Dataset.from_list(rows)


def main(argv: list[str] | None = None) -> int:
    from trl import SFTConfig, SFTTrainer

    args, config = parse_recipe(JudgeTrainingArguments, SFTConfig, argv)
    try:
        dataset = build_dataset(args, config.seed)
        evaluation = evaluation_set(args, config, build_dataset)
        model, processor, peft_config = load_trainable(args)
    except (RRMError, ValueError) as e:
        print(f"error: {redact(e)}", file=sys.stderr)
        return 2
    share_every_gradient_across_ranks(model, config)
    config.dataset_kwargs = {"skip_prepare_dataset": True}
    config.max_length = None  # never cut audio features or judgments
    fmt, rubric = args.prompt()
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, eval_dataset=evaluation,
                         processing_class=processor,
                         data_collator=JudgeCollator(processor, fmt, rubric, args.limits()),
                         peft_config=peft_config)
    return train_and_save(trainer, processor, args, config)


if __name__ == "__main__":
    sys.exit(main())
