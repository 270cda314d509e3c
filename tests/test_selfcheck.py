"""The RL self-check (train/selfcheck.py): its control, its statistics and report, and a short slice of the whole
pipeline (SFT -> train.mine_hard -> GRPO and the SFT-continued control -> held-out accuracy) on the tiny model."""

from __future__ import annotations

import json
import math

import pytest

from train.graded import HARD, make_split
from train.selfcheck import (STAGES, Setting, balanced, held_out, kept_step, markdown, mean_se, plot, run,
                             speed, withheld_media)


SILENT_STAGES = [s for s in STAGES if "sound" not in s]  # the stages of a unit whose task is not av

def test_the_control_gives_each_item_another_items_media(tmp_path):
    test = held_out(make_split(tmp_path, "image", "test-hard", 5, HARD, seed=0), seed=0)
    media = withheld_media(test, seed=3)
    assert all(given != sample.media for (sample, _), given in zip(test, media))
    assert sorted(m[0].path for m in media) == sorted(s.media[0].path for s, _ in test)  # a permutation
    assert withheld_media(test, seed=3) == media  # seeded
    # Balanced: as near to half as the count allows, the media given hold the item's own answer.
    for n, seed in ((32, 0), (32, 1), (7, 2)):
        items = held_out(make_split(tmp_path, "image", f"balanced-{n}", n, HARD, seed=seed), seed=seed)
        right = {s.media[0].path: s.response_a if label == "A" else s.response_b for s, label in items}
        given = withheld_media(items, seed)
        agree = sum(right[s.media[0].path] == right[m[0].path] for (s, _), m in zip(items, given))
        assert abs(2 * agree - n) <= 2 and all(m != s.media for (s, _), m in zip(items, given))
    one_answer = [(s, label) for s, label in test if (s.response_a if label == "A" else s.response_b)
                  == (test[0][0].response_a if test[0][1] == "A" else test[0][0].response_b)]
    with pytest.raises(ValueError, match="both answers"):
        withheld_media(one_answer * 2)
    assert {label for _, label in held_out(make_split(tmp_path, "audio", "t", 12, HARD, 0), 0)} == {"A", "B"}
    with pytest.raises(ValueError, match="two held-out items"):
        withheld_media(test[:1])


def test_the_rl_pairs_hold_both_answers_alike_topped_up_hardest_first():
    def row(i, answer, contrast):
        return {"id": f"p{i}", "response_a": answer, "contrast": contrast, "split": "sft"}

    pool = [row(0, "red", 0.1), row(1, "red", 0.1), row(2, "red", 1.0), row(3, "blue", 1.0), row(4, "blue", 0.1),
            row(5, "blue", 1.0), row(6, "blue", 0.1)]
    mined = [{**pool[i], "split": "rl"} for i in (0, 1, 2)]  # a judge that leans to "blue" wavers on red pairs
    rl = balanced(mined, pool)
    assert rl[:3] == mined and [r["id"] for r in rl[3:]] == ["p4", "p6", "p3"]  # the hard blue pairs first
    assert all(r["split"] == "rl" for r in rl)
    assert sum(r["response_a"] == "red" for r in rl) == sum(r["response_a"] == "blue" for r in rl) == 3
    assert balanced(mined + [{**pool[4], "split": "rl"}], pool)[4:] == [{**pool[6], "split": "rl"},
                                                                        {**pool[3], "split": "rl"}]
    assert len(balanced([{**r, "split": "rl"} for r in pool[:3]], pool[:3])) == 3  # a pool of one answer: as mined


def test_the_step_kept_is_the_first_with_the_lowest_held_out_loss_or_best_accuracy():
    log = [{"step": 100, "loss": 0.1}, {"step": 100, "eval_loss": 0.3}, {"step": 200, "eval_loss": 0.2},
           {"step": 300, "eval_loss": 0.2}, {"step": 400, "eval_loss": 1.7}, {"step": 400, "loss": 0.01}]
    assert kept_step(log) == 200
    accuracy = [{"step": 5, "eval_rewards/verdict_accuracy/mean": 0.5}, {"step": 10, "loss": 0.3},
                {"step": 10, "eval_rewards/verdict_accuracy/mean": 0.75},
                {"step": 15, "eval_rewards/verdict_accuracy/mean": 0.75}]
    assert kept_step(accuracy, "rewards/verdict_accuracy/mean") == 10
    assert kept_step([{"step": 1, "loss": 0.2}, {"step": 2, "loss": 0.1}]) == 2  # not validated: the last
    start = [{"step": 0, "eval_judge_accuracy": 0.75}, {"step": 5, "eval_judge_accuracy": 0.75}]
    assert kept_step(start, "judge_accuracy") == 0  # evaluated at its start and not bettered: the start kept


def test_mean_and_standard_error():
    assert mean_se([0.5]) == (0.5, 0.0)
    mean, se = mean_se([0.6, 0.8])
    assert mean == pytest.approx(0.7) and se == pytest.approx(0.1)
    assert mean_se([1.0, 1.0, 1.0])[1] == 0 and math.isclose(mean_se([0.0, 1.0, 0.5])[1], math.sqrt(0.25 / 3))


def _result(modality, seed, hard_after_grpo):
    scores = {stage: {"easy": 1.0, "hard": 0.5} for stage in SILENT_STAGES}
    scores["after GRPO"]["hard"] = hard_after_grpo
    log = [{"step": k, "rewards/format_reward/mean": 0.9, "kl": 0.01 * k, "frac_zero_advantage": 0.5,
            "step_time": 0.5 * k} for k in (1, 2, 3)]
    return {"modality": modality, "seed": seed, "scores": scores, "seconds": {"GRPO": 10.0},
            "mined": {"pairs": 6, "of": 8, "hard": 5}, "grpo_log": log}


def test_the_report_gives_mean_and_error_per_difficulty_and_plots_the_logs(tmp_path):
    results = [_result("audio", 0, 0.75), {**_result("audio", 1, 0.85), "kept": {"SFT": 700, "GRPO": 15}}]
    text = markdown(results, "test", Setting(4, 8, 2, 1, 3, 2, 2, 1))
    assert "| audio | hard | 50 ± 0 | 50 ± 0 | 80 ± 5 | 50 ± 0 | 50 ± 0 |" in text
    assert "| audio | easy | 100 ± 0 |" in text and "seeds 0, 1" in text
    assert "audio seed 1: 6 of 8 (5 hard)" in text
    assert "audio seed 0: 50 / 75 / 50, 50 % of groups alike; audio seed 1: 50 / 85 / 50, 50 % of groups alike, " \
        "kept steps 700 / 15 / –." in text
    # Two runs of 3 steps of 2 x 2 rollouts in 3 s of steps each (the stage's 10 s hold loading and validation).
    assert speed(results, Setting(4, 8, 2, 1, 3, 2, 2, 1)).startswith("GRPO: 4.00 rollouts/s, 60.0 optimizer steps/min")
    png = plot(results, tmp_path / "logs.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert plot([{**r, "grpo_log": []} for r in results], tmp_path / "none.png") is None


@pytest.mark.slow
def test_a_short_slice_of_the_whole_pipeline_runs_and_logs_what_grpo_did(tmp_path):
    setting = Setting(sft_items=48, pool_items=8, test_items=4, sft_steps=60, rl_steps=2, rl_prompts=2,
                      generations=2, draws=2, sft_eval_steps=20, val_items=4, rl_eval_steps=1,
                      rl_val_items=4)
    [result] = run(tmp_path, setting, seeds=(0,), modalities=("image",))
    sft_log = json.loads((tmp_path / "image-seed0" / "sft" / "train_log.json").read_text())
    assert [e["step"] for e in sft_log if "eval_loss" in e] == [20, 40, 60]  # validated on its own held-out pairs
    assert result["kept"]["SFT"] == kept_step(sft_log)
    grpo_evals = [e["step"] for e in result["grpo_log"] if "eval_judge_accuracy" in e]
    assert grpo_evals == [0, 1, 2] and result["kept"]["GRPO"] in grpo_evals  # validated on its own pairs, start too
    assert result["kept"]["GRPO"] == kept_step(result["grpo_log"], "judge_accuracy")
    assert list(result["scores"]) == SILENT_STAGES
    assert all(set(s) == {"easy", "hard"} and all(0 <= v <= 1 for v in s.values()) for s in result["scores"].values())
    unit = tmp_path / "image-seed0"
    mined = [json.loads(line) for line in (unit / "mined.jsonl").read_text().splitlines()]
    assert mined and len(mined) == result["mined"]["pairs"] and all(r["split"] == "rl" for r in mined)
    assert all(len(r["hardness"]["judge"]["verdicts"]) == 2 for r in mined)
    rl = [json.loads(line) for line in (unit / "rl.jsonl").read_text().splitlines()]  # what GRPO trained on
    assert rl[:len(mined)] == mined and len(rl) == len(mined) + result["mined"]["added"]
    answers = [r["response_a"] for r in rl]
    assert len(set(answers)) == 2 and answers.count(answers[0]) * 2 == len(answers)
    steps = [e for e in result["grpo_log"] if "loss" in e]
    assert len(steps) == 2
    assert all(0 <= e["frac_zero_advantage"] <= 1 and "rewards/preference_reward/mean" in e for e in steps)
    control = [e for e in json.loads((unit / "sft-continued" / "train_log.json").read_text()) if "loss" in e]
    assert len(control) == setting.rl_steps  # as many extra optimizer steps as GRPO took
    for judge in ("sft", "grpo", "sft-continued"):
        assert (unit / judge / "rrm_judge.json").exists()


def test_a_unit_whose_mining_found_nothing_is_reported_and_the_others_keep_their_cells():
    whole = _result("video", 0, 0.9)
    cut = {"modality": "video", "seed": 1, "scores": {s: {"easy": 1.0, "hard": 1.0} for s in SILENT_STAGES[:2]},
           "seconds": {}, "mined": {"pairs": 0, "of": 8, "hard": 0},
           "skipped": "mine_hard found no pair the SFT judge wavers on: GRPO and SFT-continued not run"}
    text = markdown([whole, cut], "test", Setting(4, 8, 2, 1, 3, 2, 2, 1))
    assert "| video | hard | 75 ± 25 | 75 ± 25 | 90 ± 0 (1 of 2 seeds) |" in text
    assert "Not run to the end: video seed 1: mine_hard found no pair" in text
    assert "| image |" not in text
