"""The model card (README.md) written beside every trained judge, in place of the generic one peft writes.

It names the real base model (a hub id, found through a local copy's own records where it can be), how to
load the judge, what rrm_judge.json records (prompt format, rubric, media bounds), the training data (pairs
per modality, label balance, where they came from), the recipe's hyper-parameters, and the self-check or
evaluation summary found in the run folder.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from rrm.model import JUDGE_CONFIG_FILE
from rrm.schema import Sample

CARD = "README.md"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_FRONT_BASE = re.compile(r"^base_model:\s*(\S+)\s*$", re.M)
# The run's summaries a card quotes when they are there: the learning self-check's, then an evaluation's.
SUMMARIES = ("selfcheck.md", "summary.md")
HYPER_PARAMETERS = ("learning_rate", "max_steps", "num_train_epochs", "per_device_train_batch_size",
                    "gradient_accumulation_steps", "lr_scheduler_type", "warmup_ratio", "weight_decay", "seed",
                    "num_generations", "beta", "temperature", "max_completion_length", "reward_weights")
ARGUMENTS = ("lora_r", "lora_alpha", "lora_dropout", "effective_batch_size", "quantization", "init_adapter",
             "reward_funcs", "reward_set")


def base_model_id(model: str, depth: int = 3) -> str | None:
    """The hub id a base model goes by: `model` itself, or for a local folder what it records (an adapter's
    base_model_name_or_path, its card's base_model, its config's _name_or_path). None when nothing names one."""
    path = Path(model).expanduser()
    if not path.is_dir():
        return model if _HUB_ID.match(model) else None
    found = []
    adapter = path / "adapter_config.json"
    if adapter.is_file():
        found.append(json.loads(adapter.read_text()).get("base_model_name_or_path"))
    card = path / CARD
    if card.is_file():
        m = _FRONT_BASE.search(card.read_text(errors="replace").split("\n---", 1)[0])
        found.append(m.group(1) if m else None)
    config = path / "config.json"
    if config.is_file():
        found.append(json.loads(config.read_text()).get("_name_or_path"))
    for name in filter(None, found):
        if _HUB_ID.match(name) and not Path(name).expanduser().is_dir():
            return name
        if depth and Path(name).expanduser().is_dir() and Path(name).expanduser().resolve() != path.resolve():
            return base_model_id(name, depth - 1)
    return None


def data_summary(rows, args) -> list[str]:
    """Pairs per modality and the label balance, as the trainer saw them (after the seeded A/B order)."""
    key = "sample" if "sample" in rows.column_names else "prompt"
    modalities = Counter(Sample.from_dict(json.loads(r)).modality for r in rows[key])
    labels = Counter(rows["label"])
    return [f"- {len(rows):,} pairs from `{args.data}` (format `{args.data_format}`)",
            "- per modality: " + ", ".join(f"{m} {n:,}" for m, n in sorted(modalities.items())),
            "- labels (as shown, after the seeded A/B order): " + ", ".join(
                f"{label} {n:,} ({100 * n / len(rows):.0f} %)" for label, n in sorted(labels.items()))]


def _settings(args, config) -> list[str]:
    rows = [(name, getattr(config, name)) for name in HYPER_PARAMETERS if hasattr(config, name)]
    rows += [(name, getattr(args, name)) for name in ARGUMENTS if hasattr(args, name)]
    shown = [(n, getattr(v, "value", v)) for n, v in rows if v is not None]  # an enum by its value
    return ["| setting | value |", "|---|---|", *[f"| {n} | {v} |" for n, v in shown]]


def _summaries(out: Path) -> list[str]:
    for folder in (out, out.parent):
        for name in SUMMARIES:
            if (folder / name).is_file():
                return ["## Results in this run", "", f"From `{folder / name}`:", "",
                        (folder / name).read_text().strip(), ""]
    return []


def write_card(out: Path, args, config, rows, stage: str) -> Path:
    """Write OUT/README.md for the judge just saved there by `stage` (SFT or GRPO)."""
    record = json.loads((out / JUDGE_CONFIG_FILE).read_text())
    base = base_model_id(args.model)
    criteria = [f"  - `{c['key']}`: {c['title']}" for c in record["rubric"]["criteria"]]
    front = ["---", *([f"base_model: {base}"] if base else []), "library_name: peft",
             "tags: [omni-rrm, reward-model, judge, lora]", "---", ""]
    text = [*front, f"# An Omni-RRM judge ({stage})", "",
            f"A LoRA adapter trained with this project's `train.{stage.lower()}` on "
            + (f"[{base}](https://huggingface.co/{base})." if base else f"the local checkpoint `{args.model}` "
               "(no hub id recorded for it)."), "",
            "## Use", "", "```python", "from rrm import Judge, Sample", "",
            f'judge = Judge.from_pretrained("{out}")  # reads rrm_judge.json: format, rubric, media bounds',
            'print(judge.judge(Sample("query", "answer A", "answer B")).verdict)', "```", "",
            f"Or `python -m rrm judge --model {out} ...`, `python app.py --model {out}`.", "",
            "## What rrm_judge.json records", "",
            f"- prompt format: `{record.get('profile') or record['prompt_format']}`",
            "- rubric:", *criteria,
            "- media bounds: " + (", ".join(f"{k} {v}" for k, v in record["media_limits"].items())
                                  if "media_limits" in record else "the release profile's"), "",
            "## Training data", "", *data_summary(rows, args), "",
            "## Recipe", "", *_settings(args, config), "", *_summaries(out)]
    path = out / CARD
    path.write_text("\n".join(text) + "\n")
    return path
