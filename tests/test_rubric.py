import json

import pytest

from rrm.errors import RRMError
from rrm.rubric import DEFAULT_RUBRIC, Rubric, load_rubric


def test_default_rubric_has_the_five_criteria_in_order_and_facets_per_modality():
    assert DEFAULT_RUBRIC.keys == [
        "fluency_coherence", "relevance", "accuracy_completeness", "reasoning_quality", "safety_ethics",
    ]
    for modality in ("image", "video", "audio"):
        assert DEFAULT_RUBRIC.facets_for(modality)
    assert DEFAULT_RUBRIC.facets_for("text") == ()


@pytest.mark.parametrize("name,key", [
    ("fluency", "fluency_coherence"), ("Accuracy", "accuracy_completeness"), ("reasoning", "reasoning_quality"),
    ("safety", "safety_ethics"), ("Relevance", "relevance"), ("Safety and ethical alignment", "safety_ethics"),
    ("fluency_coherence", "fluency_coherence"),
])
def test_find_reads_the_names_models_use(name, key):
    assert DEFAULT_RUBRIC.find(name).key == key


def test_find_returns_none_for_unknown_names():
    assert DEFAULT_RUBRIC.find("creativity") is None
    assert DEFAULT_RUBRIC.find("") is None


def test_short_user_rubric_gets_slug_keys(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"Humour": "Is it funny?", "Brevity": "Is it short?"}))
    r = load_rubric(path)
    assert r.keys == ["humour", "brevity"]
    assert r.criteria[0].description == "Is it funny?"


def test_full_user_rubric_round_trips():
    r = Rubric.from_dict({"name": "mine", "criteria": [{"key": "k1", "title": "One", "description": "d"}],
                          "facets": {"image": ["look closely"]}})
    assert Rubric.from_dict(r.to_dict()) == r
    assert r.facets_for("image") == ("look closely",)


@pytest.mark.parametrize("data,message", [
    ({"criteria": []}, "at least one criterion"),
    ({"criteria": [{"title": "A"}, {"title": "a"}]}, "unique"),
    ({"criteria": [{"description": "no name"}]}, "needs a title"),
    ({"criteria": [{"title": "A"}], "facets": {"smell": ["x"]}}, "unknown modalities"),
])
def test_bad_rubrics_are_refused(data, message):
    with pytest.raises(RRMError, match=message):
        Rubric.from_dict(data)


def test_bad_rubric_files_are_refused(tmp_path):
    with pytest.raises(RRMError, match="does not exist"):
        load_rubric(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(RRMError, match="not valid JSON"):
        load_rubric(bad)
