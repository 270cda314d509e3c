"""Learning self-check: does the recipe teach a judge to use the media?

    python -m train.selfcheck [--out runs/selfcheck] [--setting small|large]

Builds a synthetic preference set per modality where the better answer can only
be known from the media (image: the colour of a square; audio: a high or a low
tone; video: the direction a bar moves), trains the tiny fixture with the
project's SFT recipe and then GRPO from that adapter (one judge per modality),
and reports held-out verdict accuracy per modality: untrained, after SFT, after
GRPO, and after GRPO with the media withheld (each item's media replaced by
another held-out item's: the control, which should fall to chance). The
teacher rationale says what the media hold before the verdict compares the
answers with it. The `small` setting runs on a 2-core CPU in about 20 minutes;
`large` is for a GPU.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rrm.judge import GenerationSettings, Judge
from rrm.media import MediaLimits
from rrm.schema import MediaItem, Sample

TEMPLATE = "Question: ${question}\nAnswer A: ${answer_a}\nAnswer B: ${answer_b}\nWhich answer matches the ${media}?"
RUBRIC = {"criteria": [{"key": "grounding", "title": "Grounding",
                        "description": "Does the answer say what the image, audio or video shows?"}]}
MODALITIES = ("image", "audio", "video")
VIDEO_FRAMES, VIDEO_FPS = 6, 3.0  # every frame of the synthetic clips


@dataclass(frozen=True)
class Setting:
    train_items: int  # per modality
    test_items: int  # per modality
    sft_steps: int
    grpo_steps: int
    batch: int


SETTINGS = {"small": Setting(1600, 48, 2000, 4, 8), "large": Setting(4000, 200, 6000, 100, 16)}


def _task(modality: str, truth: bool, path: Path) -> tuple[str, str, str]:
    """Write the media for one item; return (question, right answer, wrong answer)."""
    if modality == "image":
        from PIL import Image

        Image.new("RGB", (56, 56), (220, 30, 30) if truth else (30, 30, 220)).save(path.with_suffix(".png"))
        options = ("It is red.", "It is blue.")
        return "What colour is the square?", *(options if truth else options[::-1])
    if modality == "audio":
        import soundfile as sf

        t = np.arange(int(0.6 * 16000)) / 16000
        sf.write(path.with_suffix(".wav"), (0.4 * np.sin(2 * np.pi * (1200 if truth else 300) * t)).astype(np.float32),
                 16000)
        options = ("It is high.", "It is low.")
        return "Is the tone high or low?", *(options if truth else options[::-1])
    import cv2

    writer = cv2.VideoWriter(str(path.with_suffix(".mp4")), cv2.VideoWriter_fourcc(*"mp4v"), 3, (56, 56))
    for i in range(6):  # a white bar sweeps across the frame
        frame = np.zeros((56, 56, 3), np.uint8)
        x = 6 + 8 * i if truth else 50 - 8 * i
        frame[:, max(0, x - 8):x + 8] = 255
        writer.write(frame)
    writer.release()
    options = ("It moves to the right.", "It moves to the left.")
    return "Which way does the bar move?", *(options if truth else options[::-1])


_EXT = {"image": ".png", "audio": ".wav", "video": ".mp4"}


def make_data(out: Path, setting: Setting, seed: int) -> tuple[Path, list[tuple[str, Sample, str]]]:
    """The training JSONL (sft and rl rows, the right answer in slot A: training randomises the order)
    and the held-out samples (in random order, with their labels)."""
    rng = random.Random(seed)
    media = out / "media"
    media.mkdir(parents=True, exist_ok=True)
    rows, test = [], []
    for modality in MODALITIES:
        for i in range(setting.train_items + setting.test_items):
            name = f"{modality}-{i}"
            question, right, wrong = _task(modality, rng.random() < 0.5, media / name)
            rel = f"media/{name}{_EXT[modality]}"
            if i < setting.train_items:
                # The rationale says what the media hold, in the words of the right answer (it names
                # no slot, so it stays true when training swaps A and B): first perceive, then compare.
                criteria = {"grounding": {"rationale": f"In the {modality}: {right}", "score_A": 9, "score_B": 1}}
                for split in ("sft", "rl"):
                    rows.append({"id": f"{name}-{split}", "modality": modality, "query": question, modality: rel,
                                 "response_a": right, "response_b": wrong, "label": "A", "score_a": 9, "score_b": 1,
                                 "criteria": criteria, "split": split})
            else:
                first = rng.random() < 0.5
                a, b = (right, wrong) if first else (wrong, right)
                sample = Sample(question, a, b, media=[MediaItem(modality, str(out / rel))], id=name)
                test.append((modality, sample, "A" if first else "B"))
    data = out / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return data, test


def withheld_media(test, seed: int = 0) -> list:
    """For each held-out item, the media of another item of the same modality (a seeded derangement)."""
    out = [None] * len(test)
    for modality in dict.fromkeys(m for m, _, _ in test):
        mine = [i for i, (m, _, _) in enumerate(test) if m == modality]
        if len(mine) < 2:
            raise ValueError(f"the media-withheld control needs two held-out {modality} items at least")
        order = mine[:]
        rng = random.Random(seed)
        while any(i == j for i, j in zip(mine, order)):
            rng.shuffle(order)
        for i, j in zip(mine, order):
            out[i] = test[j][1].media
    return out


def accuracy(judge: Judge, test, withheld: bool = False, seed: int = 0) -> dict[str, float]:
    """Held-out verdict accuracy per modality. With `withheld`, each item's media is replaced by that of
    another held-out item of its kind (a seeded derangement): the prompt stays well-formed, but its
    media no longer tell which answer is right, so a judge that reads the media falls to chance."""
    media = withheld_media(test, seed) if withheld else [s.media for _, s, _ in test]
    samples = [Sample(s.query, s.response_a, s.response_b, media=m, id=s.id) for (_, s, _), m in zip(test, media)]
    judgments = judge.judge_batch(samples, batch_size=16, progress=False)
    scores = {}
    for modality in dict.fromkeys(m for m, _, _ in test):
        hits = [j.verdict == label for (m, _, label), j in zip(test, judgments) if m == modality]
        scores[modality] = sum(hits) / len(hits)
    return scores


def _common(model: str, data: Path, files: dict, out: Path, steps: int, setting: Setting) -> list[str]:
    return ["--model", model, "--data", str(data), "--output_dir", str(out), "--max_steps", str(steps),
            "--prompt_template", str(files["template"]), "--rubric", str(files["rubric"]),
            "--per_device_train_batch_size", str(setting.batch), "--effective_batch_size", str(setting.batch),
            "--report_to", "none", "--save_strategy", "no", "--seed", "0", "--logging_steps", "50",
            "--video_max_frames", str(VIDEO_FRAMES), "--video_fps", str(VIDEO_FPS)]


def run(out: Path, setting: Setting, seed: int = 0) -> dict[str, dict[str, float]]:
    """One judge per modality, each trained from the tiny fixture with SFT, then GRPO from that adapter."""
    from rrm.testing import make_tiny

    out.mkdir(parents=True, exist_ok=True)
    data, test = make_data(out, setting, seed)
    files = {"template": out / "template.txt", "rubric": out / "rubric.json"}
    files["template"].write_text(TEMPLATE)
    files["rubric"].write_text(json.dumps(RUBRIC))
    tiny = str(make_tiny(out / "tiny", seed=seed))
    table: dict[str, dict[str, float]] = {}
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    for modality in MODALITIES:
        part = out / modality
        part.mkdir(exist_ok=True)
        subset = part / "pairs.jsonl"
        subset.write_text("".join(json.dumps({**r, modality: f"../{r[modality]}"}) + "\n"
                                  for r in rows if r["modality"] == modality))
        held_out = [t for t in test if t[0] == modality]
        for stage, score in _train_one(tiny, subset, files, part, setting, held_out).items():
            table.setdefault(stage, {})[modality] = score
    return table


def _train_one(tiny: str, data: Path, files: dict, out: Path, setting: Setting, test) -> dict[str, float]:
    from .common import cuda_available
    from .grpo import main as grpo_main
    from .sft import main as sft_main

    generation = GenerationSettings(max_new_tokens=160)
    cpu = [] if cuda_available() else ["--use_cpu", "true"]
    modality = test[0][0]

    def judge(path, limits=None):  # a trained judge reads its media bounds from its checkpoint
        return Judge.from_pretrained(path, prompt_format="rubric-v2", prompt_template=str(files["template"]),
                                     rubric=str(files["rubric"]), generation=generation, limits=limits)

    scores = {"untrained": accuracy(judge(tiny, MediaLimits(video_fps=VIDEO_FPS, video_max_frames=VIDEO_FRAMES)),
                                    test)[modality]}
    sft_out = out / "sft"
    # A tiny model learns the media cue only with plain float32 steps: a constant rate, no dropout,
    # no gradient clipping and no checkpointing (TRL's defaults for large models hold it at chance).
    if sft_main([*_common(tiny, data, files, sft_out, setting.sft_steps, setting), "--learning_rate", "3e-3",
                 "--lr_scheduler_type", "constant", "--lora_dropout", "0",
                 "--max_grad_norm", "0", "--gradient_checkpointing", "false", *cpu]) != 0:
        raise SystemExit("SFT failed")
    scores["after SFT"] = accuracy(judge(str(sft_out)), test)[modality]
    grpo_out = out / "grpo"
    if grpo_main([*_common(tiny, data, files, grpo_out, setting.grpo_steps, setting), "--learning_rate", "1e-4",
                  "--init_adapter", str(sft_out), "--num_generations", "2", "--max_completion_length", "160",
                  "--beta", "0.04", *cpu]) != 0:
        raise SystemExit("GRPO failed")
    final = judge(str(grpo_out))
    scores["after GRPO"] = accuracy(final, test)[modality]
    scores["after GRPO, media withheld"] = accuracy(final, test, withheld=True)[modality]
    return scores


def markdown(table: dict[str, dict[str, float]], setting_name: str, setting: Setting) -> str:
    stages = list(table)
    lines = [f"Held-out verdict accuracy (%), setting `{setting_name}`: {setting.train_items} training and "
             f"{setting.test_items} held-out pairs per modality, {setting.sft_steps} SFT steps, "
             f"{setting.grpo_steps} GRPO steps; chance is 50.", "",
             "| modality | " + " | ".join(stages) + " |", "|---|" + "---|" * len(stages)]
    for modality in MODALITIES:
        lines.append(f"| {modality} | " + " | ".join(f"{100 * table[s][modality]:.0f}" for s in stages) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.selfcheck", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/selfcheck")
    parser.add_argument("--setting", choices=list(SETTINGS), default="small")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    setting = SETTINGS[args.setting]
    table = run(Path(args.out), setting, args.seed)
    text = markdown(table, args.setting, setting)
    (Path(args.out) / "selfcheck.md").write_text(text)
    (Path(args.out) / "selfcheck.json").write_text(json.dumps(table, indent=2))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
