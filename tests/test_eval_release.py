"""The release's evaluation protocols (rrm.eval.release): its verdict readers, its rules, computed by hand."""

import json
import random
from pathlib import Path

import pytest

from rrm.errors import RRMError
from rrm.eval.release import (
    RULES, read_hh, read_mm_rewardbench, read_sharegpt_video, read_vl_rewardbench, rules_for, shown_order,
    summarize_release,
)
from rrm.eval.run import read_records, run

FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"


def obj(**fields):
    return json.dumps({"score_A": 3, "score_B": 8, "better": "B", "reasoning": "<think>r</think>",
                       "final_verdict": "<answer>[[B]]</answer>", **fields})


# (reader, output, the verdict it reads in the order shown)
READS = [
    (read_mm_rewardbench, obj(), "B"),
    (read_mm_rewardbench, obj(better="A", final_verdict="<answer>[[A]]</answer>"), "A"),
    (read_mm_rewardbench, obj(final_verdict="<answer>[[equal]]</answer>"), "tie"),
    (read_mm_rewardbench, obj(final_verdict="none yet", better="a"), "A"),  # then `better`, upper-cased
    (read_mm_rewardbench, "Not JSON, but [[B]] and later [[A]]", "A"),  # [[A]] is looked for first
    (read_mm_rewardbench, obj()[:-1], "B"),  # cut off: not JSON, but [[B]] is in the text
    (read_mm_rewardbench, "no verdict at all", None),  # left to the coin
    (read_vl_rewardbench, "Sure. " + json.dumps({"better": "A"}) + " Done.", "A"),
    (read_vl_rewardbench, json.dumps({"better": "equal", "score_A": 5}), None),  # a readable block decides
    (read_vl_rewardbench, '{"better": "equal", "reasoning": "one\nline"}', "B"),  # unreadable block, "equal" -> 2
    (read_vl_rewardbench, '{"better": "2",\n "reasoning": "x\ny"}', "B"),
    (read_vl_rewardbench, "After weighing both, Answer 1 is slightly better.", "A"),
    (read_vl_rewardbench, "I cannot tell.", None),
    (read_sharegpt_video, "Verdict: " + obj(better="A", final_verdict="<answer>[[A]]</answer>", score_A=9), "A"),
    (read_sharegpt_video, obj(final_verdict="<answer>[[A]]</answer>"), None),  # final_verdict must repeat better
    (read_sharegpt_video, obj(score_B=11), None),
    (read_sharegpt_video, obj(score_A=5, score_B=5, better="equal", final_verdict="<answer>[[equal]]</answer>"), "tie"),
    (read_sharegpt_video, json.dumps({"better": "B", "reasoning": obj()}), "B"),  # the judgment nested in reasoning
    (read_sharegpt_video, json.dumps({"better": "A", "reasoning": obj()}), None),  # ... and contradicting it
    (read_hh, "```json\n" + obj() + "\n```", "B"),
    (read_hh, "My answer: " + obj(better="equal"), "tie"),
    (read_hh, obj(better="b"), None),
    (read_hh, '{"score_A": None, "better": "A"}', None),  # None is stripped, which breaks the JSON
    (read_hh, "B is better.", None),
]


@pytest.mark.parametrize("reader,text,verdict", READS, ids=[f"{r.__name__}-{i}" for i, (r, _, _) in enumerate(READS)])
def test_the_release_verdict_readers(reader, text, verdict):
    assert reader(text) == verdict


def _records(labels, verdicts, subsets=None, ids=None):
    n = len(labels)
    subsets = subsets or ["all"] * n
    ids = ids or [f"item-{i}" for i in range(n)]
    return [{"id": ids[i], "index": i, "subset": subsets[i], "label": labels[i], "verdict": verdicts[i]}
            for i in range(n)]


def _with_groups(benchmark, records):
    return [{**r, "group": RULES[benchmark].group(r["subset"], r["id"])} for r in records]


def test_mm_rewardbench_gives_unreadable_outputs_a_seeded_coin_and_counts_ties_wrong():
    records = _with_groups("mm-rewardbench", _records(
        ["A", "B", "A", "B"], ["A", None, "tie", None],
        ["reasoning", "reasoning", "open_generation/preference_task", "safety"],
        ["mathvista_1", "EMMA_2", "visitbench_3", "pairs_4"]))
    coin = random.Random(123)
    tossed = ["A" if coin.random() < 0.5 else "B" for _ in range(2)]  # items 1 and 3, in file order
    s = summarize_release("mm-rewardbench", list(reversed(records)))  # the order of the lines does not matter
    right = 1 + (tossed[0] == "B") + (tossed[1] == "B")
    assert s["overall"] == {"items": 4, "counted": 4, "right": right, "accuracy": right / 4, "left_out": 0,
                            "ties": 1, "coin_flips": 2}
    assert set(s["groups"]) == {"reasoning/math", "reasoning/coding", "open_generation/preference_task",
                                "safety/bias"}
    assert s["groups"]["reasoning/math"]["accuracy"] == 1.0 and s["groups"]["open_generation/preference_task"][
        "accuracy"] == 0.0


def test_vl_rewardbench_leaves_out_the_unreadable_and_ties_and_reports_its_three_groups():
    records = _with_groups("vl-rewardbench", _records(
        ["A", "B", "tie", "A", "B"], ["A", None, "B", "tie", "A"],
        ["vlfeedback", "povid", "mathverse", "wildvision-battle", "rlaif-v"]))
    s = summarize_release("vl-rewardbench", records)
    # right, left out, right (a tied ranking counts its second answer better), left out (a tie), wrong
    assert (s["overall"]["counted"], s["overall"]["right"], s["overall"]["left_out"]) == (3, 2, 2)
    assert s["overall"]["accuracy"] == pytest.approx(2 / 3)
    groups = {k: v["accuracy"] for k, v in s["groups"].items()}
    assert groups == {"general": 1.0, "hallucination": 0.0, "reasoning": 1.0}
    assert s["macro"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("benchmark,labels,verdicts,counted,right", [
    ("sharegpt-video", ["A", "A", "A", "A"], ["A", "B", "tie", None], 2, 1),  # ties and unreadable left out
    ("hh-rlhf", ["A", "B", "A"], ["A", "tie", None], 2, 1),  # a tie is wrong, unreadable left out
    ("audio-hh-rlhf", ["B", "B"], [None, None], 0, 0),
])
def test_greedy_benchmarks(benchmark, labels, verdicts, counted, right):
    s = summarize_release(benchmark, _records(labels, verdicts))
    assert (s["overall"]["counted"], s["overall"]["right"]) == (counted, right)
    assert s["overall"]["accuracy"] == (right / counted if counted else None)


def test_omni_rewardbench_ta2t_with_and_without_its_tie_items():
    s = summarize_release("omni-rewardbench-ta2t", _records(["A", "tie", "B", "tie"], ["A", "tie", "tie", None]))
    assert s["overall"]["accuracy"] == pytest.approx(2 / 3)  # right, right, wrong, left out
    assert s["without_ties"]["accuracy"] == 0.5 and s["without_ties"]["items"] == 2


def test_vl_rewardbench_shows_items_in_a_seeded_order_the_others_as_given():
    orders = [shown_order(f"id-{i}", 0, RULES["vl-rewardbench"]) for i in range(200)]
    assert 70 < orders.count("BA") < 130 and orders == [shown_order(f"id-{i}", 0, RULES["vl-rewardbench"])
                                                        for i in range(200)]
    assert orders != [shown_order(f"id-{i}", 1, RULES["vl-rewardbench"]) for i in range(200)]
    assert {shown_order(f"id-{i}", 0, RULES["mm-rewardbench"]) for i in range(50)} == {"AB"}
    assert (RULES["vl-rewardbench"].temperature, RULES["vl-rewardbench"].top_p) == (0.7, 0.9)
    assert (RULES["hh-rlhf"].temperature, RULES["hh-rlhf"].max_new_tokens) == (0.0, 2048)
    with pytest.raises(RRMError, match="no protocol for 'preference'"):
        rules_for("preference")


def test_both_protocols_write_their_columns_into_one_output(judge, tmp_path):
    data = str(FIXTURES / "hh_rlhf.jsonl")
    out = tmp_path / "hh"
    # The release's budget is 2,048 tokens; a cap keeps the tiny model quick (it is recorded in config.release.json).
    release = run(judge, "hh-rlhf", data, out, batch_size=2, progress=False, protocol="release", max_new_tokens=16)
    two = run(judge, "hh-rlhf", data, out, batch_size=2, progress=False)
    records = read_records(out, "release")
    assert [r["index"] for r in records] == [0, 1, 2] and {r["order"] for r in records} == {"AB"}
    assert all(r["judgment"]["raw"] for r in records) and release["overall"]["items"] == 3
    assert two["micro"]["items"] == 3 and len(read_records(out)) == 3
    config = json.loads((out / "config.release.json").read_text())
    assert config["protocol"] == "release" and config["generation"]["max_new_tokens"] == 16
    assert config["generation"]["temperature"] == 0.0
    table = (out / "summary.md").read_text()
    head = table.splitlines()[2]
    assert "two-order (this project)" in head and "release protocol" in head and "paper: Omni-RRM-7B" in head
    all_row = next(line for line in table.splitlines() if line.startswith("| all |"))
    assert all_row.count("|") == 6 and all_row.endswith("| – | – |")  # HH-RLHF is not in the paper's table
    assert "#### release protocol" in table and "#### two-order protocol" in table
    assert json.loads((out / "summary.release.json").read_text())["overall"]["items"] == 3
    # A killed run: the last release line is cut in half; the rerun judges that item again, in its own chunk.
    text = (out / "items.release.jsonl").read_text()
    (out / "items.release.jsonl").write_text(text[: len(text) - 30])
    again = run(judge, "hh-rlhf", data, out, batch_size=2, progress=False, protocol="release", max_new_tokens=16)
    assert sorted(r["id"] for r in read_records(out, "release")) == ["hh-0", "hh-1", "hh-2"]
    assert again["overall"] == release["overall"]
