"""Other projects' preference files (TRL, ms-swift, LLaMA-Factory), in each one's documented row layout: read
into pairs with the chosen answer in a seeded slot, judged by `rrm judge --pairs`, and trained on by GRPO."""

import json
import shutil
from pathlib import Path

import pytest

from rrm.errors import RRMError
from rrm.formats import foreign_record
from rrm.pairs import read_pairs

BALL = Path(__file__).parent.parent / "assets" / "ball.png"
QUERY, GOOD, BAD = "What colour is the ball?", "The ball is red.", "The ball is green."


def _rows(fmt: str) -> list[dict]:
    """Two rows per format (text, then one with an image) in that project's layout."""
    if fmt == "trl":
        return [{"prompt": "Say hi.", "chosen": "Hello!", "rejected": "Go away."},
                {"prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUERY}]}],
                 "chosen": [{"role": "assistant", "content": GOOD}],
                 "rejected": [{"role": "assistant", "content": BAD}], "images": ["ball.png"]}]
    if fmt == "swift":
        return [{"messages": [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hello!"}],
                 "rejected_response": "Go away."},
                {"messages": [{"role": "system", "content": "Be brief."},
                              {"role": "user", "content": f"<image>{QUERY}"}, {"role": "assistant", "content": GOOD}],
                 "rejected_response": BAD, "images": ["ball.png"]}]
    return [{"conversations": [{"from": "human", "value": "Say hi."}], "chosen": {"from": "gpt", "value": "Hello!"},
             "rejected": {"from": "gpt", "value": "Go away."}},
            {"conversations": [{"from": "human", "value": f"<image>{QUERY}"}], "chosen": {"from": "gpt", "value": GOOD},
             "rejected": {"from": "gpt", "value": BAD}, "images": ["ball.png"]}]


def _file(tmp_path: Path, fmt: str, rows: list[dict], broken: bool = True) -> Path:
    shutil.copy(BALL, tmp_path / "ball.png")
    lines = [json.dumps(r) for r in rows]
    if broken:  # a row missing its rejected answer, and a line cut off mid-write
        lines += [json.dumps({k: v for k, v in rows[0].items() if k not in ("rejected", "rejected_response")}),
                  json.dumps(rows[0])[:20]]
    path = tmp_path / f"{fmt}.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("fmt", ["trl", "swift", "llamafactory"])
def test_each_projects_rows_become_pairs_with_the_chosen_answer_labelled(tmp_path, fmt):
    samples, problems = read_pairs(_file(tmp_path, fmt, _rows(fmt)), tmp_path, fmt=fmt)
    assert len(samples) == 2 and len(problems) == 2  # the malformed row and the cut line, each named, skipped
    assert "needs 'rejected" in problems[0] and "line 3" in problems[0] and "line 4" in problems[1]
    text, image = samples
    assert text.query == "Say hi." and {text.response_a, text.response_b} == {"Hello!", "Go away."}
    assert image.query == QUERY  # the <image> tag and the system turn are not the query
    assert [(m.kind, m.path) for m in image.media] == [("image", str(tmp_path / "ball.png"))]
    for n, (row, sample) in enumerate(zip(_rows(fmt), samples), 1):
        record = foreign_record(row, fmt, n)
        chosen = record["response_a"] if record["label"] == "A" else record["response_b"]
        assert chosen in ("Hello!", GOOD) and record["split"] == "rl"
        assert (sample.response_a, sample.response_b) == (record["response_a"], record["response_b"])


def test_the_chosen_slot_is_a_seeded_coin_per_row():
    rows = [{"id": f"r{i}", "prompt": "q", "chosen": "good", "rejected": "bad"} for i in range(200)]
    labels = [foreign_record(r, "trl", i)["label"] for i, r in enumerate(rows)]
    assert 0.35 < labels.count("A") / len(labels) < 0.65
    assert labels == [foreign_record(r, "trl", i)["label"] for i, r in enumerate(reversed(rows))][::-1]
    assert labels != [foreign_record(r, "trl", i, seed=1)["label"] for i, r in enumerate(rows)]


def test_trls_implicit_prompt_is_the_shared_beginning():
    turn = [{"role": "user", "content": "Say hi."}]
    row = {"chosen": turn + [{"role": "assistant", "content": "Hello!"}],
           "rejected": turn + [{"role": "assistant", "content": "Go away."}]}
    record = foreign_record(row, "trl", 1)
    assert record["query"] == "Say hi." and {record["response_a"], record["response_b"]} == {"Hello!", "Go away."}
    with pytest.raises(RRMError, match="without \"prompt\" needs"):
        foreign_record({"chosen": "a", "rejected": "b"}, "trl", 1)
    with pytest.raises(RRMError, match="must hold file paths"):
        foreign_record({"prompt": "q", "chosen": "a", "rejected": "b", "images": [[1, 2]]}, "trl", 1)


def test_rrm_judge_reads_a_swift_file(tmp_path, tiny_dir, capsys):
    from rrm.__main__ import main

    out = tmp_path / "judged.jsonl"
    code = main(["judge", "--model", str(tiny_dir), "--pairs", str(_file(tmp_path, "swift", _rows("swift"))),
                 "--pairs-format", "swift", "--out", str(out), "--max-new-tokens", "8"])
    assert code == 1  # done, with two input lines skipped
    assert "2 input lines skipped" in capsys.readouterr().err
    assert [json.loads(x)["sample_id"] for x in out.read_text().splitlines()] == ["swift-1", "swift-2"]


def test_grpo_trains_two_steps_on_a_llamafactory_file(tmp_path, tiny_dir):
    from train.data import load_pairs
    from train.grpo import main as grpo_main

    from .test_train import _grpo_argv

    data = _file(tmp_path, "llamafactory", _rows("llamafactory") * 2, broken=False)
    pairs, report = load_pairs(data, tmp_path, "llamafactory", splits=("rl",))
    assert report.kept == 4 and {p.label for p in pairs} <= {"A", "B"}
    assert grpo_main(_grpo_argv(data, tiny_dir, tmp_path / "grpo", "--data_format", "llamafactory",
                                "--reward_set", "rubric-v2")) == 0
    assert (tmp_path / "grpo" / "adapter_model.safetensors").exists()


def test_a_trl_dataset_reads_alike_from_jsonl_a_json_array_parquet_and_a_datasets_dataset(tmp_path):
    import datasets

    from train.data import load_pairs

    shutil.copy(BALL, tmp_path / "ball.png")
    image_row = _rows("trl")[1]
    rows = [{**image_row, "id": f"row-{i}"} for i in range(6)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "d.json").write_text(json.dumps(rows, indent=1))
    dataset = datasets.Dataset.from_list(rows)
    dataset.to_parquet(str(tmp_path / "d.parquet"))

    def read(source):
        pairs, report = load_pairs(source, tmp_path, "trl", splits=("rl",))
        assert report.kept == 6
        return [(p.sample.id, p.sample.response_a, p.label, [m.path for m in p.sample.media]) for p in pairs]

    expected = read(tmp_path / "d.jsonl")
    assert {label for *_, label, _ in expected} == {"A", "B"}
    assert read(tmp_path / "d.json") == expected
    assert read(tmp_path / "d.parquet") == expected
    assert read(dataset) == expected
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(RRMError, match="bad.parquet is not a readable parquet file"):
        load_pairs(tmp_path / "bad.parquet", tmp_path, "trl")
    (tmp_path / "bad.json").write_text(json.dumps(rows)[:-40])
    with pytest.raises(RRMError, match="bad.json is not a JSON array"):
        load_pairs(tmp_path / "bad.json", tmp_path, "trl")
