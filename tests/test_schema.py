import json

import pytest

from rrm.schema import (
    ORDER_BA, CriterionResult, Grade, Judgment, MediaItem, ParseStatus, Sample, SwapCheck, Timing, flip_verdict,
)


def _judgment(**kw):
    base = dict(
        verdict="A", score_a=8, score_b=5,
        criteria=[CriterionResult("relevance", "Relevance", "A answers the question", 9, 4, "A")],
        raw='{"score_A": 8}', status=ParseStatus(True, "omni-rrm", ["note"], True),
        timing=Timing(0.1, 1.0, 42, 50.0), model="tiny", sample_id="s1",
    )
    base.update(kw)
    return Judgment(**base)


def test_judgment_json_round_trip_with_nested_swap_check():
    other = _judgment(verdict="A", order=ORDER_BA, swap=None)
    j = _judgment(swap=SwapCheck(True, "A", "A", other))
    text = json.dumps(j.to_dict())
    back = Judgment.from_dict(json.loads(text))
    assert back == j
    assert back.swap.other.order == ORDER_BA


def test_swapped_flips_verdict_scores_and_criteria_but_keeps_order():
    j = _judgment()
    s = j.swapped()
    assert (s.verdict, s.score_a, s.score_b) == ("B", 5, 8)
    c = s.criteria[0]
    assert (c.score_a, c.score_b, c.winner) == (4, 9, "B")
    assert s.order == j.order
    assert s.swapped() == j


@pytest.mark.parametrize("v,expected", [("A", "B"), ("B", "A"), ("tie", "tie"), (None, None)])
def test_flip_verdict(v, expected):
    assert flip_verdict(v) == expected


def test_sample_round_trip_and_modality():
    s = Sample("q", "a", "b", media=[MediaItem("video", "clip.mp4", fps=2.0)], reference="ref", id="x")
    back = Sample.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back == s
    assert back.modality == "video"
    assert Sample("q", "a", "b").modality == "text"
    assert s.swapped().response_a == "b"


def test_media_item_rejects_unknown_kind_and_empty_item():
    with pytest.raises(ValueError, match="media kind"):
        MediaItem("pdf", "x.pdf")
    with pytest.raises(ValueError, match="path or decoded data"):
        MediaItem("image")


def test_grade_round_trip():
    g = Grade(7, [CriterionResult("relevance", "Relevance", "fine", 7)], "{}", ParseStatus(True, "grade"),
              Timing(0.1, 0.2, 3, 10.0), "tiny")
    assert Grade.from_dict(json.loads(json.dumps(g.to_dict()))) == g
