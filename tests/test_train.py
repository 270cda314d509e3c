"""Training on the tiny fixture: data, collator, and two-step SFT runs whose adapter the judge then loads."""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rrm.judge import Judge
from rrm.media import MediaLimits
from rrm.prompts import get_format
from rrm.rubric import DEFAULT_RUBRIC
from rrm.schema import ORDER_BA
from train.data import load_pairs, order_for, randomise_order
from train.sft import JudgeCollator, build_dataset, main as sft_main
from train.common import JudgeTrainingArguments

ASSETS = Path(__file__).parent.parent / "assets"


@pytest.fixture
def data_dir(tmp_path):
    for name in ("ball.png", "ball_rolling.mp4", "three_beeps.wav", "train_pairs.jsonl"):
        shutil.copy(ASSETS / name, tmp_path / name)
    return tmp_path


def test_loader_skips_and_counts_bad_rows(data_dir):
    good = (data_dir / "train_pairs.jsonl").read_text().splitlines()
    bad = [json.dumps({**json.loads(good[1]), "id": "nomedia", "image": "gone.png"}),
           json.dumps({**json.loads(good[0]), "id": "badlabel", "label": "C"}),
           '{"id": "cut", "query": "tr',
           json.dumps({**json.loads(good[0]), "id": "rl-row", "split": "rl"})]
    (data_dir / "mixed.jsonl").write_text("\n".join(good + bad) + "\n")
    pairs, report = load_pairs(data_dir / "mixed.jsonl", splits=("sft",))
    assert [p.sample.id for p in pairs] == ["egg", "ball-image", "ball-video", "beeps"]
    assert report.skipped == {"missing media": 1, "bad labels": 1, "unreadable lines": 1}
    assert "4 pairs kept" in str(report)
    rl, _ = load_pairs(data_dir / "mixed.jsonl", splits=("rl",))
    assert [p.sample.id for p in rl] == ["rl-row"]


def test_benchmark_files_load_as_pairs():
    pairs, report = load_pairs(Path(__file__).parent / "fixtures" / "benchmarks" / "hh_rlhf.jsonl", fmt="hh-rlhf")
    assert report.kept == 3 and all(p.target(DEFAULT_RUBRIC) is None for p in pairs)  # labels only: RL data


OMNI_PREFERENCE = Path(__file__).parent / "fixtures" / "omni_preference"
RECIPES = Path(__file__).parent.parent / "train" / "recipes"


@pytest.fixture
def released_root(tmp_path):
    """Media laid out as a user unpacks the release: the rows name the authors' absolute paths."""
    (tmp_path / "rlaif-v-dataset" / "images").mkdir(parents=True)
    shutil.copy(ASSETS / "ball.png", tmp_path / "rlaif-v-dataset" / "images" / "ball.png")
    shutil.copy(ASSETS / "three_beeps.wav", tmp_path / "three_beeps.wav")
    shutil.copy(ASSETS / "ball_rolling.mp4", tmp_path / "ball_rolling.mp4")
    return tmp_path


def test_released_omni_preference_rows_load(released_root):
    pairs, report = load_pairs(OMNI_PREFERENCE / "sft.jsonl", released_root, fmt="omni-preference")
    assert report.skipped == {"bad labels": 1, "malformed records": 1, "missing media": 1, "unreadable lines": 1}
    image, tie, video = pairs
    assert (image.sample.query, image.sample.response_a, image.sample.response_b) == \
        ("What colour is the ball?", "It is blue.", "It is red.")
    # The authors' path is found under the root by its longest tail that exists there.
    assert image.sample.media[0].path == str(released_root / "rlaif-v-dataset" / "images" / "ball.png")
    assert (image.label, image.score_a, image.score_b, image.split) == ("B", 3, 8, "sft")
    target = image.target(DEFAULT_RUBRIC)
    assert [c.rationale for c in target.criteria][1] == "B is about the red ball in the image; A is not."
    assert (tie.sample.id, tie.label, tie.sample.modality) == ("beeps-tie", "tie", "audio")
    assert video.sample.media[0].kind == "video" and video.label == "A"
    assert get_format("omni-rrm").render(target).startswith('{"score_A": 3, "score_B": 8, "better": "B"')
    rl, report = load_pairs(OMNI_PREFERENCE / "rl.jsonl", released_root, fmt="omni-preference", splits=("rl",))
    assert [(p.sample.id, p.label, p.score_a, p.score_b) for p in rl] == [("rl-image", "A", 8, 6),
                                                                        ("rl-audio", "B", 5, 7)]
    assert report.skipped == {"bad labels": 1} and all(p.target(DEFAULT_RUBRIC) is None for p in rl)


def test_sft_trains_on_released_rows(released_root, tiny_dir, tmp_path):
    out = tmp_path / "out"
    assert sft_main(["--model", str(tiny_dir), "--data", str(OMNI_PREFERENCE / "sft.jsonl"), "--data_format",
                     "omni-preference", "--media_root", str(released_root), "--prompt_format", "omni-rrm",
                     "--output_dir", str(out), "--max_steps", "2", "--per_device_train_batch_size", "1",
                     "--effective_batch_size", "1", "--use_cpu", "true", "--report_to", "none",
                     "--video_max_frames", "4"]) == 0
    assert Judge.from_pretrained(str(out)).format.name == "omni-rrm"


@pytest.fixture
def release_media_root(tmp_path):
    """One folder holding the release's media folders, as its path-rewriting scripts expect."""
    from PIL import Image

    image = tmp_path / "rlaif-v-dataset" / "coco2017" / "train2017" / "000000001216.jpg"
    video = tmp_path / "video-dataset" / "academic_source" / "youcook2" / "221" / "WRtoMalV4Zo" / "split_3.mp4"
    for f in (image, video, tmp_path / "audio_files" / "x"):
        f.parent.mkdir(parents=True, exist_ok=True)
    Image.open(ASSETS / "ball.png").convert("RGB").save(image, "JPEG")
    shutil.copy(ASSETS / "ball_rolling.mp4", video)
    for name in ("Big_Ben__London_.wav", "Sundsvall_Harbour.wav"):  # the release renames "Big Ben (London).wav"
        shutil.copy(ASSETS / "three_beeps.wav", tmp_path / "audio_files" / name)
    return tmp_path


def test_rows_in_the_release_layouts_read_right(release_media_root):
    root = release_media_root
    pairs, report = load_pairs(OMNI_PREFERENCE / "release_sft.jsonl", root, fmt="omni-preference")
    assert report.kept == 4 and not report.skipped
    image, video, audio, bracketed = pairs
    assert (image.sample.query, image.sample.response_a, image.sample.response_b) == \
        ("What is on the plate?", "A slice of cake.", "Two fried eggs and toast.")  # the ### Context layout
    assert (bracketed.sample.query, bracketed.sample.response_b) == ("How many eggs are there?", "Three.")
    assert [p.sample.media[0].path for p in pairs] == [
        str(root / "rlaif-v-dataset" / "coco2017" / "train2017" / "000000001216.jpg"),
        str(root / "video-dataset" / "academic_source" / "youcook2" / "221" / "WRtoMalV4Zo" / "split_3.mp4"),
        str(root / "audio_files" / "Big_Ben__London_.wav"),
        str(root / "rlaif-v-dataset" / "coco2017" / "train2017" / "000000001216.jpg")]
    assert [(p.label, p.score_a, p.score_b) for p in pairs] == [("B", 3, 8), ("A", 8, 2), ("A", 9, 2), ("A", 9, 3)]
    rationale = {name: {c.key: c.rationale for c in p.criteria}
                 for name, p in zip(("image", "video", "audio", "bracketed"), pairs)}
    # Five parts on one line, five parts on five lines: Part k is criterion k.
    assert rationale["image"]["accuracy_completeness"] == "B names the eggs and the toast; A invents a cake."
    assert rationale["video"]["safety_ethics"] == "Both are safe."
    # Two parts (four criteria, then safety), and prose without parts: split by each criterion's wording.
    assert rationale["audio"] == {
        "fluency_coherence": "Both answers are fluent and coherent",
        "relevance": "A has more relevance to the audio than B",
        "accuracy_completeness": "A is accurate where B is not",
        "reasoning_quality": "and A's reasoning matches the chimes.",
        "safety_ethics": "Both are safe and ethical."}
    assert rationale["bracketed"]["accuracy_completeness"] == "On accuracy, A is correct and B is not."
    assert all(p.target(DEFAULT_RUBRIC) is not None for p in pairs)  # every row is an SFT target
    rl, report = load_pairs(OMNI_PREFERENCE / "release_rl.jsonl", root, fmt="omni-preference", splits=("rl",))
    assert not report.skipped
    assert [(p.sample.modality, p.label, p.score_a, p.score_b) for p in rl] == [
        ("image", "A", 7, 5), ("video", "B", 4, 6), ("audio", "tie", 6, 6), ("audio", "B", 5, 7)]


def test_release_rows_train_two_sft_then_two_grpo_steps_in_the_release_profile(release_media_root, tiny_dir,
                                                                               tmp_path):
    from rrm.release import EVAL_LIMITS
    from train.grpo import main as grpo_main

    common = ["--model", str(tiny_dir), "--data_format", "omni-preference", "--media_root", str(release_media_root),
              "--prompt_format", "omni-rrm-release", "--max_steps", "2", "--use_cpu", "true", "--report_to", "none",
              "--video_max_frames", "4"]
    sft_out, grpo_out = tmp_path / "sft", tmp_path / "grpo"
    assert sft_main([*common, "--data", str(OMNI_PREFERENCE / "release_sft.jsonl"), "--output_dir", str(sft_out),
                     "--per_device_train_batch_size", "1", "--effective_batch_size", "1"]) == 0
    assert grpo_main([*common, "--data", str(OMNI_PREFERENCE / "release_rl.jsonl"), "--output_dir", str(grpo_out),
                      "--init_adapter", str(sft_out), "--per_device_train_batch_size", "2", "--num_generations", "2",
                      "--effective_batch_size", "2", "--max_completion_length", "8", "--logging_steps", "1"]) == 0
    logged = [e for e in json.loads((grpo_out / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]
              if "rewards/format_reward/mean" in e]
    assert len(logged) == 2
    record = json.loads((grpo_out / "rrm_judge.json").read_text())
    assert record["profile"] == "omni-rrm-release" and "media_limits" not in record
    judge = Judge.from_pretrained(str(grpo_out))
    assert judge.format.name == "omni-rrm-release" and judge.limits == EVAL_LIMITS


def test_order_is_seeded_per_pair_and_balanced(data_dir):
    pairs, _ = load_pairs(data_dir / "train_pairs.jsonl")
    many = [dataclasses.replace(p, sample=dataclasses.replace(p.sample, id=f"pair-{i}-{n}"))
            for i in range(100) for n, p in enumerate(pairs)]
    shuffled = randomise_order(many, seed=1)
    assert 0.4 < sum(p.label == "A" for p in shuffled) / len(shuffled) < 0.6
    assert [p.label for p in randomise_order(list(reversed(many)), seed=1)] == [p.label for p in reversed(shuffled)]
    swapped = next(p for p in many if order_for(p.sample.id, 1) == ORDER_BA)
    s = swapped.swapped()
    assert s.sample.response_a == swapped.sample.response_b and s.score_a == swapped.score_b
    [mine] = [c for c in s.criteria if c.key == "relevance"]
    [theirs] = [c for c in swapped.criteria if c.key == "relevance"]
    assert mine.score_a == theirs.score_b


def test_collator_carries_every_modality_and_labels_only_the_judgment(data_dir, tiny_dir):
    from transformers import AutoProcessor

    args = JudgeTrainingArguments(model=str(tiny_dir), data=str(data_dir / "train_pairs.jsonl"))
    dataset = build_dataset(args, seed=0)
    processor = AutoProcessor.from_pretrained(tiny_dir)
    collator = JudgeCollator(processor, get_format("rubric-v2"), DEFAULT_RUBRIC, MediaLimits(video_max_frames=4))
    batch = collator([dataset[i] for i in range(len(dataset))])
    for key in ("pixel_values", "pixel_values_videos", "video_grid_thw", "input_features", "feature_attention_mask"):
        assert key in batch, key
    # The whole clip reaches the audio tower: nothing is cut to a text length.
    import soundfile as sf

    seconds = sf.info(str(data_dir / "three_beeps.wav")).duration
    assert batch["feature_attention_mask"].sum() == round(seconds * 100)  # 100 mel frames a second
    tok = processor.tokenizer
    for row, example in enumerate(dataset):
        labelled = batch["labels"][row][batch["labels"][row] != -100]
        assert tok.decode(labelled) == example["target"] + "<|im_end|>"


def _trained(adapter: Path, part: str) -> bool:
    """Whether every LoRA B matrix under `part` moved from its zero start."""
    state = load_file(adapter / "adapter_model.safetensors")
    found = [v for k, v in state.items() if "lora_B" in k and part in k]
    return bool(found) and all(v.abs().sum() > 0 for v in found)


@pytest.mark.parametrize("modality", ["text", "image", "video", "audio"])
def test_two_step_sft_per_modality_then_the_judge_loads_the_adapter(data_dir, tiny_dir, tmp_path, modality):
    rows = [json.loads(x) for x in (data_dir / "train_pairs.jsonl").read_text().splitlines()]
    (data_dir / "one.jsonl").write_text(json.dumps(next(r for r in rows if r["modality"] == modality)) + "\n")
    out = tmp_path / "adapter"
    argv = ["--model", str(tiny_dir), "--data", str(data_dir / "one.jsonl"), "--output_dir", str(out),
            "--max_steps", "2", "--per_device_train_batch_size", "1", "--effective_batch_size", "1",
            "--learning_rate", "1e-3", "--use_cpu", "true", "--report_to", "none", "--save_steps", "1",
            "--video_max_frames", "4", "--logging_steps", "1"]
    assert sft_main(argv) == 0
    assert _trained(out, "language_model")
    # The media reached the loss: the projector of that modality was trained, the other not.
    assert _trained(out, "visual.merger") == (modality in ("image", "video"))
    assert _trained(out, "audio_tower.proj") == (modality == "audio")
    state = json.loads((out / "trainer_state.json").read_text()) if (out / "trainer_state.json").exists() else \
        json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(x)) for x in losses)
    judge = Judge.from_pretrained(str(out))
    assert judge.loaded.adapter == str(out) and judge.format.name == "rubric-v2"
    assert judge.limits.video_max_frames == 4 and judge.limits.video_fps == 1.0  # as trained, not the defaults
    sample = build_dataset(JudgeTrainingArguments(data=str(data_dir / "one.jsonl")), seed=0)[0]
    from rrm.schema import Sample

    j = judge.judge(Sample.from_dict(json.loads(sample["sample"])), swap_check=True)
    assert j.timing.generated_tokens >= 1 and j.swap is not None
    card = (out / "README.md").read_text()  # ours, not peft's generic card
    assert "fine-tuned version of" not in card and f"on the local checkpoint `{tiny_dir}`" in card
    assert f'Judge.from_pretrained("{out}")' in card and "prompt format: `rubric-v2`" in card
    assert f"- per modality: {modality} 1" in card and "video_max_frames 4" in card and "| max_steps | 2 |" in card


def test_a_cards_base_model_is_the_hub_id_a_local_copy_records(tmp_path):
    from train.card import base_model_id

    assert base_model_id("Qwen/Qwen2.5-Omni-7B") == "Qwen/Qwen2.5-Omni-7B"
    assert base_model_id(str(tmp_path / "nowhere")) is None
    full = tmp_path / "omni"  # a downloaded copy: its config remembers where it came from
    full.mkdir()
    (full / "config.json").write_text(json.dumps({"_name_or_path": "Qwen/Qwen2.5-Omni-3B"}))
    adapter = tmp_path / "sft"  # an adapter on that copy: followed to its base
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(full)}))
    assert base_model_id(str(full)) == base_model_id(str(adapter)) == "Qwen/Qwen2.5-Omni-3B"
    carded = tmp_path / "carded"  # a folder whose own card names its base
    carded.mkdir()
    (carded / "README.md").write_text("---\nbase_model: Omni-RRM/Omni-RRM-7B\nlicense: apache-2.0\n---\n# x\n")
    assert base_model_id(str(carded)) == "Omni-RRM/Omni-RRM-7B"
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text("{}")
    assert base_model_id(str(bare)) is None


def test_sft_resumes_from_its_checkpoint_and_can_merge(data_dir, tiny_dir, tmp_path):
    out = tmp_path / "run"
    base = ["--model", str(tiny_dir), "--data", str(data_dir / "train_pairs.jsonl"), "--output_dir", str(out),
            "--per_device_train_batch_size", "2", "--effective_batch_size", "2", "--use_cpu", "true",
            "--report_to", "none", "--save_steps", "1", "--video_max_frames", "4"]
    assert sft_main([*base, "--max_steps", "1"]) == 0
    first = (out / "checkpoint-1" / "adapter_model.safetensors").stat().st_mtime_ns
    assert sft_main([*base, "--max_steps", "2", "--resume_from_checkpoint", "auto", "--merge", "true"]) == 0
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    # Resumed, not restarted: step 1 was not trained (and saved) again.
    assert (out / "checkpoint-1" / "adapter_model.safetensors").stat().st_mtime_ns == first
    merged = Judge.from_pretrained(str(out / "merged"))
    assert merged.loaded.adapter is None and merged.format.name == "rubric-v2"
    assert type(merged.backend.model).__name__ == "Qwen2_5OmniThinkerForConditionalGeneration"


def test_sft_keeps_the_checkpoint_with_the_lowest_validation_loss(tiny_dir, tmp_path, capsys):
    out, data = tmp_path / "run", str(ASSETS / "train_pairs.jsonl")
    base = ["--model", str(tiny_dir), "--data", data, "--output_dir", str(out), "--use_cpu", "true",
            "--per_device_train_batch_size", "2", "--effective_batch_size", "2", "--report_to", "none",
            "--video_max_frames", "4", "--logging_steps", "1"]
    assert sft_main([*base, "--load_best_model_at_end", "true", "--eval_strategy", "steps"]) == 2
    assert "need --eval_data" in capsys.readouterr().err
    # At this rate the validation loss falls, then rises again at the last step: the last step is not the best.
    assert sft_main([*base, "--eval_data", data, "--max_steps", "6", "--learning_rate", "30", "--eval_strategy",
                     "steps", "--eval_steps", "1", "--save_strategy", "steps", "--save_steps", "1",
                     "--load_best_model_at_end", "true", "--metric_for_best_model", "eval_loss"]) == 0
    log = json.loads((out / "train_log.json").read_text())
    losses = {e["step"]: e["eval_loss"] for e in log if "eval_loss" in e}
    best = min(losses, key=losses.get)
    assert sorted(losses) == [1, 2, 3, 4, 5, 6] and best < 6
    saved = load_file(out / "adapter_model.safetensors")
    for step in (best, 6):
        checkpoint = load_file(out / f"checkpoint-{step}" / "adapter_model.safetensors")
        assert all(torch.equal(checkpoint[k], saved[k]) for k in saved) == (step == best)
    assert Judge.from_pretrained(str(out)).loaded.adapter == str(out)


def test_sft_without_usable_rows_says_so(tmp_path, tiny_dir, capsys):
    (tmp_path / "labels_only.jsonl").write_text(json.dumps(
        {"id": "x", "query": "q", "response_a": "a", "response_b": "b", "label": "A"}) + "\n")
    code = sft_main(["--model", str(tiny_dir), "--data", str(tmp_path / "labels_only.jsonl"),
                     "--output_dir", str(tmp_path / "o"), "--use_cpu", "true"])
    assert code == 2 and "rationale for every criterion" in capsys.readouterr().err


def _rl_file(data_dir, modality=None) -> Path:
    rows = [json.loads(x) | {"split": "rl"} for x in (data_dir / "train_pairs.jsonl").read_text().splitlines()]
    rows = [r for r in rows if modality is None or r["modality"] == modality]
    path = data_dir / f"rl-{modality or 'all'}.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _grpo_argv(data, tiny_dir, out, *extra):
    return ["--model", str(tiny_dir), "--data", str(data), "--output_dir", str(out), "--max_steps", "2",
            "--per_device_train_batch_size", "2", "--num_generations", "2", "--effective_batch_size", "2",
            "--max_completion_length", "8", "--use_cpu", "true", "--report_to", "none", "--logging_steps", "1",
            "--video_max_frames", "4", "--beta", "0.04", *extra]


VISION, AUDIO_ENCODER = "Qwen2_5OmniVisionEncoder", "Qwen2_5OmniAudioEncoder"


def _sound_rl_file(data_dir) -> Path:
    """The video rows, their clip given a sound track (a video heard: frames and sound in every forward)."""
    from .media_files import make_av_video

    make_av_video(data_dir / "ball_with_sound.mp4", seconds=2.0)
    rows = [json.loads(x) | {"video": "ball_with_sound.mp4"}
            for x in _rl_file(data_dir, "video").read_text().splitlines()]
    path = data_dir / "rl-video-sound.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.mark.parametrize("modality,expected", [("text", set()), ("image", {VISION}), ("video", {VISION}),
                                               ("audio", {AUDIO_ENCODER}), ("video-sound", {VISION, AUDIO_ENCODER})])
def test_two_step_grpo_feeds_the_media_to_the_loss_forward(data_dir, tiny_dir, tmp_path, modality, expected):
    from train.grpo import main as grpo_main

    # Record every encoder call, and whether gradients were on: only the loss forward runs with them.
    calls = []

    def spy(module, args, output):
        calls.append((type(module).__name__, torch.is_grad_enabled()))

    handle = torch.nn.modules.module.register_module_forward_hook(spy)
    try:
        data = _sound_rl_file(data_dir) if modality == "video-sound" else _rl_file(data_dir, modality)
        assert grpo_main(_grpo_argv(data, tiny_dir, tmp_path / "grpo", "--save_steps", "2")) == 0
    finally:
        handle.remove()
    encoders = {"Qwen2_5OmniVisionEncoder", "Qwen2_5OmniAudioEncoder"}
    with_grad = {name for name, grad in calls if grad and name in encoders}
    without_grad = {name for name, grad in calls if not grad and name in encoders}
    assert with_grad == expected  # the loss forward saw the media (a heard video: its frames and its sound)
    assert without_grad == expected  # so did the rollouts and the reference
    state = json.loads((tmp_path / "grpo" / "checkpoint-2" / "trainer_state.json").read_text())
    logged = [h for h in state["log_history"] if "loss" in h]
    assert len(logged) == 2
    for key in ("rewards/format_reward/mean", "rewards/preference_reward/mean", "rewards/rubric_reward/mean",
                "rewards/verdict_accuracy/mean", "rewards/format_valid/mean", "completions/mean_length", "kl",
                "frac_zero_advantage"):
        assert key in logged[0], key
    judge = Judge.from_pretrained(str(tmp_path / "grpo"))
    assert judge.format.name == "rubric-v2" and judge.loaded.adapter
    card = (tmp_path / "grpo" / "README.md").read_text()
    assert "# An Omni-RRM judge (GRPO)" in card and "| num_generations | 2 |" in card
    assert "| reward_funcs | ['format', 'preference', 'rubric'] |" in card
    assert "| reward_weights | [0.4, 0.4, 0.2, 0.0, 0.0] |" in card


def test_a_group_whose_rewards_differ_by_float_rounding_counts_as_zero_advantage():
    from train.grpo import zero_advantage_share

    # TRL's advantages for two groups of four: equal weighted rewards that differ in the last bit, then a spread
    rewards = torch.tensor([[-0.6, -0.6 + 6e-8, -0.6, -0.6 - 6e-8], [1.0, 0.2, 0.2, 0.2]])
    std = rewards.std(dim=1, keepdim=True)
    advantages = ((rewards - rewards.mean(dim=1, keepdim=True)) / (std + 1e-4)).flatten()
    assert not torch.isclose(std[0], torch.zeros(1))  # what TRL's frac_reward_zero_std counts as spread
    assert zero_advantage_share(advantages, 4) == 0.5
    assert zero_advantage_share(advantages[4:], 4) == 0.0


def test_grpo_rollouts_end_where_the_judge_ends_its_turn(data_dir, tiny_dir, tmp_path):
    """TRL stops a rollout at the tokenizer's end of text and the model's generation config only; a judge trained
    by SFT ends its turn with <|im_end|>, so that must stop (and close) the rollout too."""
    from trl import GRPOConfig

    from train.common import load_trainable
    from train.grpo import GRPOJudgeArguments, build_dataset, make_trainer

    args = GRPOJudgeArguments(model=str(tiny_dir), data=str(_rl_file(data_dir)))
    fmt, rubric = args.prompt()
    model, processor, peft_config = load_trainable(args)
    im_end = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end not in [processor.tokenizer.eos_token_id, *[model.generation_config.eos_token_id or []]]
    config = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, per_device_train_batch_size=2,
                        num_generations=2, report_to="none", max_steps=1)
    funcs, config.reward_weights = args.rewards(fmt, rubric, None)
    trainer = make_trainer(fmt, rubric, args.limits(), model=model, args=config, processing_class=processor,
                           train_dataset=build_dataset(args, 0), reward_funcs=funcs, peft_config=peft_config)
    assert im_end in trainer.eos_token_ids and im_end in trainer.generation_config.eos_token_id
    # The rewards as TRL holds them: logged by name, weighted by its own reward_weights.
    assert trainer.reward_func_names == ["format_reward", "preference_reward", "rubric_reward", "verdict_accuracy",
                                         "format_valid"]
    assert trainer.reward_weights.tolist() == pytest.approx([0.4, 0.4, 0.2, 0.0, 0.0])


def test_grpo_groups_in_both_orders_show_each_pair_both_ways_within_a_group(data_dir, tiny_dir, tmp_path):
    """--group_orders both: each group's rollouts are half in one A/B order and half in the other, the label
    and teacher scores following; what TRL hands the reward functions shows it."""
    from trl import GRPOConfig

    from rrm.schema import Sample
    from train.common import load_trainable
    from train.grpo import GRPOJudgeArguments, build_dataset, make_trainer

    seen = []

    def record(completions, prompts, label, score_a, score_b, **kwargs):  # a reward of 0: it only looks
        seen.extend(zip(prompts, label, score_a, score_b))
        return [0.0] * len(completions)

    args = GRPOJudgeArguments(model=str(tiny_dir), data=str(_rl_file(data_dir, "image")), group_orders="both")
    fmt, rubric = args.prompt()
    model, processor, peft_config = load_trainable(args)
    config = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, per_device_train_batch_size=4,
                        num_generations=4, report_to="none", max_steps=1, max_completion_length=8)
    funcs, weights = args.rewards(fmt, rubric, None)
    config.reward_weights = [*weights, 0.0]
    trainer = make_trainer(fmt, rubric, args.limits(), "both", model=model, args=config, processing_class=processor,
                           train_dataset=build_dataset(args, 0), reward_funcs=[*funcs, record],
                           peft_config=peft_config)
    trainer.train()
    assert len(seen) == 4
    first, second = [Sample.from_dict(json.loads(p)) for p, *_ in (seen[0], seen[2])]
    assert (first.response_a, first.response_b) == (second.response_b, second.response_a) and first.id == second.id
    assert seen[0][1:] == seen[1][1:] and seen[2][1] == {"A": "B", "B": "A"}[seen[0][1]]
    assert (seen[2][2], seen[2][3]) == (seen[0][3], seen[0][2])  # the teacher scores swap with the answers


def test_grpo_profile_splits_the_run_into_its_phases(data_dir, tiny_dir, tmp_path, capsys):
    from train.grpo_profile import main as profile_main

    prof = tmp_path / "grpo.prof"
    assert profile_main(["--out", str(prof), "--", *_grpo_argv(_rl_file(data_dir, "image"), tiny_dir,
                                                                 tmp_path / "grpo")]) == 0
    rows = {line.split(" | ")[0].strip("| "): float(line.split(" | ")[1])
            for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line
            and not line.startswith("| phase")}
    whole = rows.pop("whole run (model loading included)")
    assert rows["rollouts (generate)"] > 0 and rows["log-prob forwards (old, reference, loss)"] > 0
    assert rows["rewards (the judge's reward functions)"] > 0 and rows["backward"] > 0
    assert sum(rows.values()) < 1.5 * whole
    assert prof.stat().st_size > 0


def test_grpo_rewards_its_rollouts_on_held_out_pairs_and_saves_the_best_checkpoint(data_dir, tiny_dir, tmp_path):
    from train.grpo import main as grpo_main

    rl, out, metric = _rl_file(data_dir, "image"), tmp_path / "grpo", "rewards/format_reward/mean"
    assert grpo_main(_grpo_argv(rl, tiny_dir, out, "--max_steps", "3", "--learning_rate", "1e-2",
                                "--eval_data", str(rl), "--eval_strategy", "steps", "--eval_steps", "1",
                                "--save_steps", "1", "--load_best_model_at_end", "true",
                                "--metric_for_best_model", metric, "--greater_is_better", "true")) == 0
    evals = [e for e in json.loads((out / "train_log.json").read_text()) if f"eval_{metric}" in e]
    assert [e["step"] for e in evals] == [1, 2, 3]
    assert all("eval_rewards/verdict_accuracy/mean" in e and "eval_frac_zero_advantage" in e for e in evals)
    best = max(evals, key=lambda e: e[f"eval_{metric}"])["step"]  # the first of the best, as the trainer keeps
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["best_model_checkpoint"] == str(out / f"checkpoint-{best}")
    saved, kept = (load_file(p / "adapter_model.safetensors") for p in (out, out / f"checkpoint-{best}"))
    assert all(torch.equal(saved[k], kept[k]) for k in saved)


def test_grpo_judges_its_held_out_pairs_greedily_and_keeps_its_start_when_no_step_betters_it(parrot_dir, tmp_path):
    """eval_judge_accuracy: the policy's greedy judgments, parsed as the judge parses them. With --eval_on_start, the
    start competes with the checkpoints: a run that only made the judge worse saves the judge it started from."""
    from train.grpo import main as grpo_main

    rows = [json.loads(x) | {"split": "rl"} for x in (ASSETS / "pairs.jsonl").read_text().splitlines()]
    data = tmp_path / "rl.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows if r["modality"] in ("text", "image")))
    pairs, _ = load_pairs(data, ASSETS, splits=("rl",))
    parrot = Judge.from_pretrained(str(parrot_dir))
    judged = parrot.judge_batch([p.sample for p in pairs], swap_check=True, progress=False)
    assert [j.verdict for j in judged] == [p.label for p in pairs]  # the parrot is right in both orders
    out, metric = tmp_path / "grpo", "eval_judge_accuracy"
    # 4 rollouts a pair, so that some group's rewards differ and the rate has a gradient to break the judge with.
    assert grpo_main(["--model", str(parrot_dir), "--data", str(data), "--media_root", str(ASSETS), "--output_dir",
                      str(out), "--max_steps", "2", "--per_device_train_batch_size", "4", "--num_generations", "4",
                      "--effective_batch_size", "4", "--max_completion_length", "256", "--use_cpu", "true",
                      "--report_to", "none", "--logging_steps", "1", "--learning_rate", "0.5",
                      "--eval_data", str(data), "--eval_strategy", "steps", "--eval_steps", "1", "--save_steps", "1",
                      "--eval_on_start", "true", "--load_best_model_at_end", "true",
                      "--metric_for_best_model", "judge_accuracy", "--greater_is_better", "true"]) == 0
    evals = {e["step"]: e[metric] for e in json.loads((out / "train_log.json").read_text()) if metric in e}
    assert list(evals) == [0, 1, 2] and evals[0] == 1.0 and max(evals[1], evals[2]) < 1.0  # the rate broke it
    saved = load_file(out / "adapter_model.safetensors")
    assert [k for k in saved if "lora_B" in k] and all(not saved[k].any() for k in saved if "lora_B" in k)
    again = Judge.from_pretrained(str(out)).judge_batch([p.sample for p in pairs], progress=False)
    assert [j.raw for j in again] == [j.raw for j in parrot.judge_batch([p.sample for p in pairs], progress=False)]


def test_grpo_starts_from_an_sft_adapter(data_dir, tiny_dir, tmp_path):
    from train.grpo import main as grpo_main

    sft_out = tmp_path / "sft"
    assert sft_main(["--model", str(tiny_dir), "--data", str(data_dir / "train_pairs.jsonl"), "--output_dir",
                     str(sft_out), "--max_steps", "1", "--per_device_train_batch_size", "2", "--effective_batch_size",
                     "2", "--use_cpu", "true", "--report_to", "none", "--video_max_frames", "4"]) == 0
    out = tmp_path / "grpo"
    assert grpo_main(_grpo_argv(_rl_file(data_dir), tiny_dir, out, "--init_adapter", str(sft_out),
                                "--save_steps", "1")) == 0
    assert (out / "checkpoint-2").exists()
    assert Judge.from_pretrained(str(out)).judge(
        __import__("rrm").Sample("Describe the sounds.", "a dog", "beeps")).timing.generated_tokens >= 1


def test_sft_goes_on_training_the_adapter_it_is_given(data_dir, tiny_dir, tiny_sft_adapter, tmp_path):
    """--init_adapter (the self-check's SFT-continued control) trains the given LoRA further, not a fresh one."""
    from train.common import TRAIN_LOG

    start = load_file(tiny_sft_adapter / "adapter_model.safetensors")
    for rate, out in (("0", tmp_path / "still"), ("1e-2", tmp_path / "moved")):
        assert sft_main(["--model", str(tiny_dir), "--data", str(data_dir / "train_pairs.jsonl"), "--output_dir",
                         str(out), "--max_steps", "1", "--per_device_train_batch_size", "2", "--effective_batch_size",
                         "2", "--use_cpu", "true", "--report_to", "none", "--video_max_frames", "4", "--logging_steps",
                         "1", "--learning_rate", rate, "--init_adapter", str(tiny_sft_adapter)]) == 0
        assert [h for h in json.loads((out / TRAIN_LOG).read_text()) if "loss" in h]
    still, moved = (load_file(tmp_path / name / "adapter_model.safetensors") for name in ("still", "moved"))
    assert still.keys() == start.keys() == moved.keys()
    assert all(torch.equal(still[k], start[k]) for k in start)  # no step taken: exactly the adapter given
    assert any(not torch.equal(moved[k], start[k]) for k in start if "lora_B" in k)


def test_a_prompt_template_trained_with_is_recorded_and_spoken(data_dir, tiny_dir, tmp_path):
    template = tmp_path / "short.txt"
    template.write_text("Q: ${question}\nA: ${answer_a}\nB: ${answer_b}\nWhich fits the ${media}?")
    out = tmp_path / "templated"
    assert sft_main(["--model", str(tiny_dir), "--data", str(data_dir / "train_pairs.jsonl"), "--output_dir", str(out),
                     "--max_steps", "1", "--per_device_train_batch_size", "2", "--effective_batch_size", "2",
                     "--use_cpu", "true", "--report_to", "none", "--video_max_frames", "4",
                     "--prompt_template", str(template)]) == 0
    record = json.loads((out / "rrm_judge.json").read_text())
    assert record["prompt_template"] == template.read_text() and record["prompt_format"] == "rubric-v2"
    judge = Judge.from_pretrained(str(out))
    from rrm.prompts import build_messages
    from rrm.schema import Sample

    text = build_messages(Sample("What?", "x", "y"), judge.format, judge.rubric)[1]["content"][-1]["text"]
    assert text == "Q: What?\nA: x\nB: y\nWhich fits the text?"


@pytest.mark.slow
def test_accelerate_launch_trains_the_same_judge_under_ddp_and_zero2(data_dir, tiny_dir, tmp_path):
    """The project's accelerate configs (DDP, DeepSpeed ZeRO-2) with two ranks on CPU (gloo).

    Each rank's batch holds another modality, so one rank leaves an encoder's LoRA weights unused while the
    other trains them: ZeRO-2 crashed on that (mismatched gradient buckets) before every rank shared every
    gradient; now it must train exactly the adapter DDP trains.
    """
    import subprocess
    import sys

    def launch(config, module, *args):
        done = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                               str(RECIPES / config), "--num_processes", "2", "--mixed_precision", "no",
                               "-m", module, *args], capture_output=True, text=True, timeout=600, cwd=ASSETS.parent)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stderr

    def sft(config, out, steps=1, *extra):
        log = launch(config, "train.sft", "--model", str(tiny_dir), "--data", str(data_dir / "train_pairs.jsonl"),
                     "--output_dir", str(out), "--max_steps", str(steps), "--per_device_train_batch_size", "1",
                     "--effective_batch_size", "4", "--use_cpu", "true", "--report_to", "none",
                     "--video_max_frames", "4", "--save_steps", "1", "--logging_steps", "1", "--learning_rate", "1e-3",
                     *extra)
        assert log.count("WARNING: SFT data: 4 pairs kept") == 1  # reported once, not once per process
        state = json.loads((out / f"checkpoint-{steps}" / "trainer_state.json").read_text())
        assert state["global_step"] == steps and state["epoch"] == steps  # 4 pairs: 2 ranks x 1 pair x 2 accumulated
        return load_file(out / "adapter_model.safetensors"), state

    ddp, _ = sft("accelerate-ddp-8gpu.yaml", tmp_path / "ddp")
    zero2, first = sft("accelerate-zero2-8gpu.yaml", tmp_path / "zero2")
    assert ddp.keys() == zero2.keys()
    for name, weight in ddp.items():
        torch.testing.assert_close(zero2[name], weight, rtol=1e-4, atol=1e-6, msg=name)
    for encoder in ("audio_tower.proj", "visual.merger.mlp.0"):  # each trained on one rank per micro-step
        assert ddp[f"base_model.model.model.{encoder}.lora_B.weight"].abs().max() > 0
    # A stopped ZeRO-2 run resumes from its DeepSpeed checkpoint: step 1 is kept (not saved again), step 2 runs.
    step1 = tmp_path / "zero2" / "checkpoint-1" / "adapter_model.safetensors"
    saved = step1.stat().st_mtime_ns
    _, resumed = sft("accelerate-zero2-8gpu.yaml", tmp_path / "zero2", 2, "--resume_from_checkpoint", "auto")
    assert step1.stat().st_mtime_ns == saved
    assert resumed["log_history"][0] == first["log_history"][0] and len(resumed["log_history"]) == 2

    grpo_out = tmp_path / "grpo"
    launch("accelerate-zero2-8gpu.yaml", "train.grpo", *_grpo_argv(
        _rl_file(data_dir), tiny_dir, grpo_out, "--init_adapter", str(tmp_path / "zero2"), "--save_steps", "2",
        "--effective_batch_size", "4"))
    state = json.loads((grpo_out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and len([h for h in state["log_history"] if "loss" in h]) == 2
    assert Judge.from_pretrained(str(grpo_out)).loaded.adapter == str(grpo_out)


def test_an_effective_batch_that_cannot_be_met_exactly_is_reported(tmp_path, caplog):
    from trl import SFTConfig

    from train.common import parse_recipe

    args, config = parse_recipe(JudgeTrainingArguments, SFTConfig, [
        "--effective_batch_size", "3", "--per_device_train_batch_size", "2", "--output_dir", str(tmp_path),
        "--use_cpu", "true", "--report_to", "none"])
    assert config.gradient_accumulation_steps == 2
    assert "effective batch 4 (2 per device x 1 devices x 2 accumulation steps), not the 3 asked" in caplog.text


@pytest.fixture(scope="module")
def tiny_sft_adapter(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("recipes") / "sft"
    assert sft_main(["--model", str(tiny_dir), "--data", str(ASSETS / "train_pairs.jsonl"), "--output_dir", str(out),
                     "--max_steps", "1", "--per_device_train_batch_size", "1", "--effective_batch_size", "1",
                     "--use_cpu", "true", "--report_to", "none", "--video_max_frames", "4"]) == 0
    return out


@pytest.mark.parametrize("recipe", sorted(p.name for p in RECIPES.glob("*gb*.yaml")))
def test_every_gpu_recipe_runs_one_step_on_the_tiny_model(recipe, data_dir, tiny_dir, tiny_sft_adapter, tmp_path):
    """Each GPU recipe as written (QLoRA, gradient checkpointing, warm-up ...), shrunk to the tiny model on CPU."""
    from train.grpo import main as grpo_main

    small = ["--config", str(RECIPES / recipe), "--model", str(tiny_dir), "--media_root", str(data_dir),
             "--data_format", "preference", "--output_dir", str(tmp_path / "out"), "--max_steps", "1",
             "--use_cpu", "true", "--save_steps", "1", "--video_max_frames", "4"]
    if recipe.startswith("sft"):
        code = sft_main([*small, "--data", str(data_dir / "train_pairs.jsonl"), "--per_device_train_batch_size", "1",
                         "--effective_batch_size", "1"])
    else:
        code = grpo_main([*small, "--data", str(_rl_file(data_dir)), "--init_adapter", str(tiny_sft_adapter),
                          "--per_device_train_batch_size", "2", "--num_generations", "2", "--effective_batch_size",
                          "2", "--max_completion_length", "8"])
    assert code == 0
    judge = Judge.from_pretrained(str(tmp_path / "out"))
    assert judge.loaded.adapter == str(tmp_path / "out")


def test_the_launch_configs_are_what_accelerate_reads():
    from accelerate.commands.config.config_args import load_config_from_file

    ddp = load_config_from_file(str(RECIPES / "accelerate-ddp-8gpu.yaml"))
    zero2 = load_config_from_file(str(RECIPES / "accelerate-zero2-8gpu.yaml"))
    assert (ddp.distributed_type.value, ddp.num_processes, ddp.mixed_precision) == ("MULTI_GPU", 8, "bf16")
    assert (zero2.distributed_type.value, zero2.deepspeed_config["zero_stage"]) == ("DEEPSPEED", 2)


def test_sft_continues_a_released_lora_adapter_and_the_result_stacks_on_it(tmp_path):
    """A released checkpoint that is an ms-swift adapter: merged into its base for training; the new adapter is
    saved on top of it, and loading that one merges the released adapter first."""
    from rrm.testing import make_released

    released = make_released(tmp_path / "released", "swift-lora")
    out = tmp_path / "continued"
    assert sft_main(["--model", str(released), "--data", str(ASSETS / "train_pairs.jsonl"), "--output_dir", str(out),
                     "--max_steps", "1", "--per_device_train_batch_size", "1", "--effective_batch_size", "1",
                     "--use_cpu", "true", "--report_to", "none", "--video_max_frames", "4",
                     "--prompt_format", "omni-rrm-release"]) == 0
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(released)
    judge = Judge.from_pretrained(str(out))
    assert judge.loaded.adapter == str(out) and judge.loaded.name == str(released.parent / "base")
    assert judge.format.name == "omni-rrm-release"
