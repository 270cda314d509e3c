import io
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rrm.errors import RRMError
from rrm.eval import group_metrics, load_benchmark, summarize
from rrm.eval.bon import knockout, load_bon, majority, round_robin, select_item, summarize_bon
from rrm.eval.metrics import markdown_table
from rrm.eval.run import compare, merge, parse_shard, read_records, run, select

from .media_files import make_image, tone

FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"


# ---------------------------------------------------------------- loaders, on records in the released formats

def test_hh_rlhf():
    items = load_benchmark("hh-rlhf", str(FIXTURES / "hh_rlhf.jsonl"))
    assert len(items) == 3 and [i.sample.id for i in items] == ["hh-0", "hh-1", "hh-2"]
    first = json.loads((FIXTURES / "hh_rlhf.jsonl").read_text().splitlines()[0])
    assert items[0].sample.query == first["text_prompt"] and items[0].sample.response_b == first["answer_b"]
    assert items[0].label == ("A" if first["label"] == 0 else "B") and items[0].sample.media == []


def test_audio_hh_rlhf_media_resolve_against_the_root(tmp_path):
    items = load_benchmark("audio-hh-rlhf", str(FIXTURES / "audio_hh_rlhf.jsonl"), media_root=str(tmp_path))
    assert len(items) == 3 and all(i.sample.media[0].kind == "audio" for i in items)
    assert items[0].sample.query and items[0].sample.media[0].path.endswith("resource")


def test_sharegpt_video_keeps_ids_and_label_a():
    items = load_benchmark("sharegpt-video", str(FIXTURES / "sharegpt_video_msrvtt.jsonl"))
    assert items[0].sample.id == "video1026_0" and {i.label for i in items} == {"A"}
    assert items[0].sample.media[0].kind == "video"


def test_mm_rewardbench_subsets_and_stripped_questions():
    items = load_benchmark("mm-rewardbench", str(FIXTURES / "mm_rewardbench_subset.json"), media_root="/data")
    assert [i.subset for i in items] == ["reasoning", "reasoning", "open_generation/preference_task",
                                         "open_generation/preference_task"]
    assert [i.label for i in items] == ["B", "B", "B", "A"]
    assert items[0].sample.query == "" and items[0].sample.media[0].path.startswith("/data/images/")


def _png_bytes():
    buf = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (40, 30), (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


def test_vl_rewardbench_parquet_with_embedded_images(tmp_path):
    table = pa.table({
        "id": ["RLAIF-V_1", "mathverse_2"],
        "query": ["What is it?", "Solve it."],
        "response": [["a red box", "a cat"], ["x = 2", "x = 3"]],
        "image": [{"bytes": _png_bytes(), "path": "a.png"}, {"bytes": _png_bytes(), "path": "b.png"}],
        "human_ranking": [[0, 1], [1, 0]],
        "query_source": ["RLAIF-V", "MathVerse"],
    })
    pq.write_table(table, tmp_path / "test.parquet")
    items = load_benchmark("vl-rewardbench", str(tmp_path))
    assert [i.label for i in items] == ["A", "B"] and [i.subset for i in items] == ["RLAIF-V", "MathVerse"]
    assert items[0].sample.media[0].data.size == (40, 30)


def test_omni_rewardbench_ta2t_parquet_with_embedded_audio(tmp_path):
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, tone(0.5, 16000), 16000, format="WAV")
    table = pa.table({
        "id": ["ta2t-1", "ta2t-2"], "prompt": ["What is heard?", "Describe it."],
        "audio": [{"bytes": buf.getvalue(), "path": "x.wav"}] * 2,
        "response1": ["a tone", "music"], "response2": ["a dog", "a tone"],
        "criteria": ["Name the sound correctly.", ""], "criteria_preference": ["response1", "response2"],
        "audio_path": ["x.wav", "x.wav"],
    })
    pq.write_table(table, tmp_path / "ta2t.parquet")
    items = load_benchmark("omni-rewardbench-ta2t", str(tmp_path / "ta2t.parquet"))
    assert [i.label for i in items] == ["A", "B"]
    assert "Name the sound correctly." in items[0].sample.query and items[1].sample.query == "Describe it."
    assert items[0].sample.media[0].sampling_rate == 16000 and len(items[0].sample.media[0].data) == 8000


def test_project_preference_jsonl(tmp_path):
    rows = [{"id": "p1", "modality": "image", "query": "q", "image": "x.png", "response_a": "a", "response_b": "b",
             "label": "B", "split": "sft"},
            {"id": "p2", "modality": "text", "query": "q", "response_a": "a", "response_b": "b", "label": "tie"}]
    (tmp_path / "prefs.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    items = load_benchmark("preference", str(tmp_path / "prefs.jsonl"))
    assert [(i.label, i.subset) for i in items] == [("B", "image"), ("tie", "text")]
    assert items[0].sample.media[0].path == str(tmp_path / "x.png")


def test_unknown_benchmark_lists_the_known_ones_and_bad_files_say_why(tmp_path):
    with pytest.raises(RRMError, match="known: vl-rewardbench, mm-rewardbench, sharegpt-video"):
        load_benchmark("nope", "x")
    with pytest.raises(RRMError, match="does not exist"):
        load_benchmark("hh-rlhf", str(tmp_path / "none.jsonl"))
    (tmp_path / "bad.jsonl").write_text('{"text_prompt": "q", "answer_a": "a"}\n')
    with pytest.raises(RRMError, match="lacks the field 'answer_b'"):
        load_benchmark("hh-rlhf", str(tmp_path / "bad.jsonl"))


# ---------------------------------------------------------------- metrics, against hand-computed values

def _rec(label, ab, ba, subset="s1", tokens=(10, 20), seconds=1.0):
    return {"id": f"{label}{ab}{ba}{subset}", "subset": subset, "label": label, "verdict_ab": ab, "verdict_ba": ba,
            "tokens": list(tokens), "seconds": seconds}


def test_metrics_hand_computed():
    records = [
        _rec("A", "A", "A"),      # right, right, consistent
        _rec("A", "A", "B"),      # right, wrong (position flip)
        _rec("B", "tie", "B"),    # tie (wrong), right
        _rec("B", None, "A"),     # parse failure (wrong), wrong
    ]
    m = group_metrics(records)
    assert m["accuracy_a_first"] == 2 / 4
    assert m["accuracy_b_first"] == 2 / 4
    assert m["accuracy"] == 0.5
    assert m["swap_consistency"] == 1 / 4
    assert m["tie_rate"] == 1 / 8 and m["parse_failure_rate"] == 1 / 8
    assert m["mean_generated_tokens"] == 15 and m["mean_seconds_per_judgment"] == 1.0


def test_macro_and_micro():
    records = [_rec("A", "A", "A", "s1"), _rec("A", "B", "B", "s1"), _rec("B", "B", "B", "s2")]
    s = summarize(records)
    assert s["subsets"]["s1"]["accuracy"] == 0.5 and s["subsets"]["s2"]["accuracy"] == 1.0
    assert s["micro"]["accuracy"] == pytest.approx(2 / 3)
    assert s["macro"]["accuracy"] == pytest.approx(0.75)
    table = markdown_table(s, "bench")
    assert "| s1 | 2 | 50.0 |" in table and "| **macro** | 3 | 75.0 |" in table and "| **micro** | 3 | 66.7 |" in table


def test_tie_labelled_items_are_also_summarized_without_them():
    records = [{"id": "1", "label": "A", "verdict_ab": "A", "verdict_ba": "A"},
               {"id": "2", "label": "tie", "verdict_ab": "tie", "verdict_ba": "B"},
               {"id": "3", "label": "B", "verdict_ab": "A", "verdict_ba": "B"}]
    s = summarize(records)
    assert s["micro"]["accuracy"] == pytest.approx(2 / 3)  # a tie verdict is right on a tie item
    assert s["micro_without_ties"]["accuracy"] == pytest.approx(0.75) and s["micro_without_ties"]["items"] == 2
    assert "micro_without_ties" not in summarize(records[::2])


def test_shards_partition_the_items():
    items = list(range(10))
    parts = [select(items, 7, (i, 3)) for i in range(3)]
    assert sorted(sum(parts, [])) == list(range(7))
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "x", "1-4"):
        with pytest.raises(RRMError):
            parse_shard(bad)


# ---------------------------------------------------------------- the protocol end to end

def test_run_judges_both_orders_resumes_and_merges_shards(judge, tmp_path):
    data = str(FIXTURES / "hh_rlhf.jsonl")
    out = tmp_path / "full"
    summary = run(judge, "hh-rlhf", data, out, limit=3, batch_size=2, progress=False)
    records = read_records(out)
    assert len(records) == 3 and summary["micro"]["items"] == 3
    for r in records:
        j = r["judgment"]
        assert j["raw"] and j["swap"]["other"]["raw"] and j["swap"]["other"]["order"] == "BA"
        assert r["tokens"] == [12, 12] and r["seconds"] > 0
    config = json.loads((out / "config.json").read_text())
    assert config["seed"] == 0 and config["prompt_format"] == "omni-rrm-release"
    assert "transformers" in config["versions"]
    assert (out / "summary.md").read_text().startswith("### hh-rlhf")
    # A killed run: the last line is cut in half. The rerun drops it and judges that item again.
    text = (out / "items.jsonl").read_text()
    (out / "items.jsonl").write_text(text[: len(text) - 40])
    run(judge, "hh-rlhf", data, out, limit=3, batch_size=2, progress=False)
    assert sorted(r["id"] for r in read_records(out)) == ["hh-0", "hh-1", "hh-2"]
    # Two shards, merged, hold the same items once each.
    for i in range(2):
        run(judge, "hh-rlhf", data, tmp_path / f"shard{i}", limit=3, shard=(i, 2), progress=False)
    merged = merge([tmp_path / "shard0", tmp_path / "shard1"], tmp_path / "merged")
    assert merged["micro"]["items"] == 3
    assert sorted(r["id"] for r in read_records(tmp_path / "merged")) == ["hh-0", "hh-1", "hh-2"]
    side_by_side = compare([out, tmp_path / "merged"])
    assert "full (omni-rrm-release)" in side_by_side and "merged" in side_by_side and "| hh-rlhf |" in side_by_side


def test_items_with_missing_media_are_recorded_not_fatal(judge, tmp_path):
    summary = run(judge, "sharegpt-video", str(FIXTURES / "sharegpt_video_msrvtt.jsonl"), tmp_path / "v",
                  media_root=str(tmp_path), progress=False)
    assert summary["micro"]["unjudged"] == 3 and summary["micro"]["parse_failure_rate"] == 1.0


# ---------------------------------------------------------------- best-of-N

def test_bon_loaders():
    mmmu = load_bon(FIXTURES / "bon_mmmu.jsonl")
    first = json.loads((FIXTURES / "bon_mmmu.jsonl").read_text().splitlines()[0])
    assert mmmu[0].candidates == first["qwen_all_runs"] and mmmu[0].answer == first["answer"]
    assert mmmu[0].media[0].kind == "image"
    with pytest.raises(RRMError, match="add a 'candidates' list"):
        load_bon(FIXTURES / "bon_videomme.jsonl")
    with pytest.raises(RRMError, match="add a 'candidates' list"):
        load_bon(FIXTURES / "bon_avqa.json")


def test_bon_avqa_and_videomme_with_candidates(tmp_path):
    rows = json.loads((FIXTURES / "bon_avqa.json").read_text())
    for r in rows:
        r["candidates"] = ["A", "B", "B"]
    (tmp_path / "avqa.json").write_text(json.dumps(rows))
    items = load_bon(tmp_path / "avqa.json", media_root=tmp_path)
    assert [m.kind for m in items[0].media] == ["image", "audio"] and items[0].answer == "B"
    assert items[0].options[0] == "motorcycle"
    rows = (FIXTURES / "bon_videomme.jsonl").read_text().splitlines()
    lines = [json.loads(x) | {"candidates": ["C", "A"]} for x in rows]
    (tmp_path / "vm.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    vm = load_bon(tmp_path / "vm.jsonl", media_root=tmp_path)
    assert vm[0].media[0].path == str(tmp_path / "videos" / "fFjv93ACGo8.mp4") and vm[0].options[2] == "Berries."


def test_selection_rules_by_hand():
    strength = {"B": 3, "A": 2, "C": 1}

    def match(a, b):  # "A": the first of the two is better
        return "A" if strength[a] > strength[b] else "B"

    assert knockout(["A", "B", "C"], match) == "B"  # A loses to B; B beats C
    assert knockout(["C", "A", "B"], match) == "B"
    assert round_robin(["A", "B", "C"], match) == "B"  # B: 2 wins, A: 1, C: 0
    assert majority(["B", "A", "A", "B", "C"]) == "B"  # a tie goes to the first sampled
    assert knockout(["C", "C"], lambda a, b: pytest.fail("identical answers need no judgment")) == "C"


def test_bon_end_to_end_on_the_tiny_judge(judge, tmp_path):
    items = load_bon(FIXTURES / "bon_mmmu.jsonl", media_root=tmp_path)
    make_image(tmp_path / "image_1.png")
    result = select_item(judge, items[0])
    assert set(result["selected"]) == {str(n) for n in range(1, 6)}
    assert result["selected"]["1"]["knockout"] == items[0].candidates[0]
    distinct = len(set(items[0].candidates))
    assert result["pairs_judged"] <= distinct * (distinct - 1) // 2
    summary = summarize_bon([result])
    assert summary["accuracy_by_n"][5]["majority"] == float(majority(items[0].candidates) == items[0].answer)


@pytest.mark.slow
def test_command_line_run_compare_and_bad_names(tmp_path, tiny_dir):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "rrm.eval", *args], capture_output=True, text=True, timeout=300)

    result = cli("run", "--benchmark", "hh-rlhf", "--data", str(FIXTURES / "hh_rlhf.jsonl"), "--model", str(tiny_dir),
                 "--limit", "2", "--out", str(tmp_path / "o"), "--max-new-tokens", "8")
    assert result.returncode == 0, result.stderr
    assert "| **all** | 2 |" in result.stdout and (tmp_path / "o" / "summary.json").exists()
    assert "hh-rlhf" in cli("compare", str(tmp_path / "o")).stdout
    bad = cli("run", "--benchmark", "nope", "--data", "x", "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and "known: vl-rewardbench" in bad.stderr and "Traceback" not in bad.stderr
