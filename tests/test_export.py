"""`rrm export`: judged pairs out as TRL / ms-swift / LLaMA-Factory preference data or as our own SFT lines, with
its filters; the files load with `datasets`, train `trl.DPOTrainer`, and (as SFT lines) `train.sft`."""

import json
import shutil
from pathlib import Path

import pytest

from rrm.__main__ import main
from rrm.schema import CriterionResult, Judgment, ParseStatus, SwapCheck
from rrm.testing import PARROT_A, PARROT_B, PARROT_QUERY

ASSETS = Path(__file__).parent.parent / "assets"
EGG = "How do I boil an egg?"
EGG_GOOD = "Put the egg in boiling water for 7 to 9 minutes, then cool it in cold water before peeling."
EGG_BAD = "Eggs are a good source of protein."


def _judgment(pid: str, verdict, score_a=None, score_b=None, agree=None) -> dict:
    swap = None if agree is None else SwapCheck(agree, verdict, verdict if agree else "B")
    criteria = [CriterionResult("relevance", "Relevance", "A answers it.", 9, 3)]
    return Judgment(verdict, score_a, score_b, criteria, "", ParseStatus(verdict is not None, "x"),
                    swap=swap, sample_id=pid).to_dict()


def _pairs_and_judgments(tmp_path: Path) -> tuple[Path, Path]:
    shutil.copy(ASSETS / "ball.png", tmp_path / "ball.png")
    cases = {  # id: (label, judgment)
        "win": ("a", _judgment("win", "A", 9, 2, agree=True)),  # a label as people write it: A all the same
        "picture": ("B", _judgment("picture", "B", 3, 8, agree=True)),
        "flip-flop": ("A", _judgment("flip-flop", "A", 7, 5, agree=False)),
        "close": ("A", _judgment("close", "A", 6, 5, agree=True)),
        "tie-by-score": ("B", _judgment("tie-by-score", "tie", 4, 6, agree=True)),
        "even-tie": ("A", _judgment("even-tie", "tie", 5, 5, agree=True)),
        "wrong": ("B", _judgment("wrong", "A", 8, 2, agree=True)),
        "unread": ("A", _judgment("unread", None)),
        "unjudged": ("A", None),
    }
    pairs, judged = [], []
    for pid, (label, judgment) in cases.items():
        row = {"id": pid, "query": f"q {pid}", "response_a": f"a {pid}", "response_b": f"b {pid}", "label": label}
        pairs.append({**row, "image": "ball.png"} if pid == "picture" else row)
        if judgment:
            judged.append(judgment)
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs))
    lines = [json.dumps(j) for j in judged] + ["not a judgment"]
    (tmp_path / "judged.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path / "pairs.jsonl", tmp_path / "judged.jsonl"


def _export(pairs: Path, judged: Path, fmt: str, out: Path, *flags: str, pairs_format: str = "preference") -> int:
    return main(["export", "--judged", str(judged), "--pairs", str(pairs), "--pairs-format", pairs_format,
                 "--format", fmt, "--out", str(out), *flags])


def _ids(out: Path) -> list[str]:
    return [json.loads(x)["id"] for x in (out / "train.jsonl").read_text().splitlines()]


def test_each_filter_leaves_out_its_pairs_and_says_how_many(tmp_path, capsys):
    pairs, judged = _pairs_and_judgments(tmp_path)
    assert _export(pairs, judged, "trl", tmp_path / "all") == 0
    err = capsys.readouterr().err
    assert "1 lines hold no judgment" in err and "exported 6 of 9 pairs" in err
    assert "1 no verdict" in err and "1 not judged" in err and "1 ties with equal scores" in err
    assert _ids(tmp_path / "all") == ["win", "picture", "flip-flop", "close", "tie-by-score", "wrong"]
    rows = {json.loads(x)["id"]: json.loads(x) for x in (tmp_path / "all" / "train.jsonl").read_text().splitlines()}
    # The tie went to the higher overall score (B); the judge, not the label, decides ("wrong" keeps A).
    assert rows["tie-by-score"]["chosen"][0]["content"][0]["text"] == "b tie-by-score"
    assert rows["wrong"]["chosen"][0]["content"][0]["text"] == "a wrong"

    assert _export(pairs, judged, "trl", tmp_path / "strict", "--require-swap-agree", "--min-score-gap", "2",
                   "--drop-ties", "--agree-with-label") == 0
    err = capsys.readouterr().err
    assert _ids(tmp_path / "strict") == ["win", "picture"]
    for reason in ("1 not swap-consistent", "2 score gap under 2", "1 ties", "1 verdict differs from the label"):
        assert reason in err
    assert _export(pairs, judged, "preference", tmp_path / "sft") == 0
    assert "even-tie" in _ids(tmp_path / "sft")  # our own lines keep a tie as a tie


def test_nothing_to_export_is_a_one_line_error_and_writes_nothing(tmp_path, capsys):
    pairs, judged = _pairs_and_judgments(tmp_path)
    assert _export(pairs, judged, "swift", tmp_path / "none", "--min-score-gap", "11") == 2
    assert "error: no pair of" in capsys.readouterr().err
    assert not (tmp_path / "none" / "train.jsonl").exists()
    assert _export(pairs, tmp_path / "missing.jsonl", "swift", tmp_path / "none") == 2
    assert "judged file" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["trl", "swift", "llamafactory"])
def test_an_export_reads_back_as_the_same_pairs_with_its_media_in_the_folder(tmp_path, fmt):
    import datasets

    from train.data import load_pairs

    (tmp_path / "in").mkdir()
    pairs, judged = _pairs_and_judgments(tmp_path / "in")
    out = tmp_path / "out"
    assert _export(pairs, judged, fmt, out, "--require-swap-agree") == 0
    shutil.rmtree(tmp_path / "in")  # the export stands on its own
    assert len(datasets.load_dataset("json", data_files=str(out / "train.jsonl"), split="train")) == 5
    back, report = load_pairs(out / "train.jsonl", out, fmt, splits=("rl",))
    assert report.kept == 5
    chosen = {p.sample.id: p.sample.response_a if p.label == "A" else p.sample.response_b for p in back}
    assert chosen == {"win": "a win", "picture": "b picture", "close": "a close", "wrong": "a wrong",
                      "tie-by-score": "b tie-by-score"}
    picture = next(p.sample for p in back if p.sample.id == "picture")
    assert [m.path for m in picture.media] == [str(out / "media" / "ball.png")]
    assert (out / "media" / "ball.png").read_bytes() == (ASSETS / "ball.png").read_bytes()
    if fmt == "llamafactory":
        info = json.loads((out / "dataset_info.json").read_text())["rrm_export"]
        assert info["ranking"] and info["columns"]["images"] == "images" and info["file_name"] == "train.jsonl"


def _foreign(fmt: str) -> list[dict]:
    """The parrot's two text-and-image pairs (it judges them right in both orders) in each project's layout."""
    text, image = (EGG, EGG_GOOD, EGG_BAD), (PARROT_QUERY, PARROT_B, PARROT_A)
    if fmt == "trl":
        return [{"prompt": text[0], "chosen": text[1], "rejected": text[2]},
                {"prompt": image[0], "chosen": image[1], "rejected": image[2], "images": ["ball.png"]}]
    if fmt == "swift":
        return [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": c}],
                 "rejected_response": r, **media} for (q, c, r), media in
                ((text, {}), ((f"<image>{image[0]}", *image[1:]), {"images": ["ball.png"]}))]
    return [{"conversations": [{"from": "human", "value": q}], "chosen": {"from": "gpt", "value": c},
             "rejected": {"from": "gpt", "value": r}, **media} for (q, c, r), media in
            ((text, {}), ((f"<image>{image[0]}", *image[1:]), {"images": ["ball.png"]}))]


@pytest.mark.parametrize("fmt", ["trl", "swift", "llamafactory"])
def test_a_foreign_file_judged_then_exported_as_sft_lines_trains_train_sft(tmp_path, fmt, parrot_dir, tiny_dir):
    from train.sft import main as sft_main

    shutil.copy(ASSETS / "ball.png", tmp_path / "ball.png")
    data = tmp_path / f"{fmt}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _foreign(fmt)))
    judged = tmp_path / "judged.jsonl"
    assert main(["judge", "--model", str(parrot_dir), "--pairs", str(data), "--pairs-format", fmt, "--out",
                 str(judged), "--swap-check"]) == 0
    out = tmp_path / "sft-data"
    assert _export(data, judged, "preference", out, "--require-swap-agree", "--agree-with-label", pairs_format=fmt) == 0
    rows = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["criteria"]["relevance"]["rationale"] for r in rows)
    assert rows[1]["image"] == ["media/ball.png"]
    assert sft_main(["--model", str(tiny_dir), "--data", str(out / "train.jsonl"), "--output_dir",
                     str(tmp_path / "sft"), "--max_steps", "2", "--per_device_train_batch_size", "1",
                     "--effective_batch_size", "1", "--use_cpu", "true", "--report_to", "none"]) == 0
    state = json.loads((tmp_path / "sft" / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and (tmp_path / "sft" / "adapter_model.safetensors").exists()


def test_a_trl_export_trains_dpo_one_step(tmp_path, parrot_dir, tiny_text_dir):
    import datasets
    from trl import DPOConfig, DPOTrainer

    data = tmp_path / "trl.jsonl"
    data.write_text(json.dumps(_foreign("trl")[0]) + "\n")
    judged, out = tmp_path / "judged.jsonl", tmp_path / "dpo-data"
    assert main(["judge", "--model", str(parrot_dir), "--pairs", str(data), "--pairs-format", "trl", "--out",
                 str(judged), "--swap-check"]) == 0
    assert _export(data, judged, "trl", out, "--require-swap-agree", pairs_format="trl") == 0
    dataset = datasets.load_dataset("json", data_files=str(out / "train.jsonl"), split="train")
    assert dataset[0]["chosen"] == EGG_GOOD and dataset[0]["rejected"] == EGG_BAD
    config = DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=1, per_device_train_batch_size=1, use_cpu=True,
                       report_to=[], logging_steps=1, save_strategy="no", max_length=128)
    trainer = DPOTrainer(model=str(tiny_text_dir), args=config, train_dataset=dataset)
    trainer.train()
    logged = trainer.state.log_history[0]
    assert trainer.state.global_step == 1 and logged["grad_norm"] > 0
    assert logged["logps/chosen"] != logged["logps/rejected"]  # the two answers were scored apart
