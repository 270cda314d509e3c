import json

import pytest

from train.mine_hard import is_hard, main

STABLE = {"verdicts": ["A", "A"], "flips": False, "swap_disagreements": 0}
WAVERS = {"verdicts": ["A", "B"], "flips": True, "swap_disagreements": 0}
POSITIONAL = {"verdicts": ["A", "A"], "flips": False, "swap_disagreements": 1}


@pytest.mark.parametrize("gap,unstable,rule,hard", [
    (1, None, "either", True), (2, None, "either", True), (3, None, "either", False), (None, None, "either", False),
    (5, WAVERS, "either", True), (5, POSITIONAL, "either", True), (5, STABLE, "either", False),
    (1, STABLE, "either", True), (1, STABLE, "both", False), (1, WAVERS, "both", True),
    (None, WAVERS, "both", True), (None, STABLE, "either", False),
])
def test_hardness_rules(gap, unstable, rule, hard):
    assert is_hard(gap, unstable, 2.0, rule) is hard


def _write(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


ROWS = [
    {"id": "close", "query": "q", "response_a": "a", "response_b": "b", "label": "A", "score_a": 7, "score_b": 6},
    {"id": "far", "query": "q", "response_a": "a", "response_b": "b", "label": "B", "score_a": 2, "score_b": 9},
    {"id": "edge", "query": "q", "response_a": "a", "response_b": "b", "label": "B", "score_a": 5, "score_b": 7},
    {"id": "tie", "query": "q", "response_a": "a", "response_b": "b", "label": "tie", "score_a": 6, "score_b": 6},
    {"id": "unscored", "query": "q", "response_a": "a", "response_b": "b", "label": "A"},
]


def test_teacher_gap_selection_leaves_ties_out(tmp_path, capsys):
    _write(tmp_path / "pairs.jsonl", ROWS)
    assert main(["--data", str(tmp_path / "pairs.jsonl"), "--out", str(tmp_path / "rl.jsonl")]) == 0
    kept = [json.loads(x) for x in (tmp_path / "rl.jsonl").read_text().splitlines()]
    assert [r["id"] for r in kept] == ["close", "edge"]
    assert all(r["split"] == "rl" and r["hardness"]["judge"] is None for r in kept)
    assert [r["hardness"]["teacher_gap"] for r in kept] == [1, 2]
    assert "1 ties left out" in capsys.readouterr().err


def test_records_without_an_id_are_mined_and_written_as_they_came(tmp_path):
    row = {"query": "no id here", "response_a": "a", "response_b": "b", "label": "B", "score_a": 4, "score_b": 5}
    _write(tmp_path / "pairs.jsonl", [row, ROWS[1]])
    assert main(["--data", str(tmp_path / "pairs.jsonl"), "--out", str(tmp_path / "rl.jsonl")]) == 0
    kept = [json.loads(x) for x in (tmp_path / "rl.jsonl").read_text().splitlines()]
    assert kept == [{**row, "split": "rl", "hardness": {"teacher_gap": 1, "judge": None}}]


def test_judge_instability_with_sampling(tmp_path, tiny_dir):
    _write(tmp_path / "pairs.jsonl", ROWS)
    assert main(["--data", str(tmp_path / "pairs.jsonl"), "--out", str(tmp_path / "rl.jsonl"), "--model", str(tiny_dir),
                 "--samples", "2", "--max-new-tokens", "8", "--rule", "either"]) == 0
    kept = [json.loads(x) for x in (tmp_path / "rl.jsonl").read_text().splitlines()]
    assert {"close", "edge"} <= {r["id"] for r in kept} and "tie" not in {r["id"] for r in kept}
    assert all(len(r["hardness"]["judge"]["verdicts"]) == 2 for r in kept)
