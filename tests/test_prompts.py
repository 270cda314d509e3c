import pytest

from rrm.errors import RRMError
from rrm.parse import parse_judgment
from rrm.prompts import (
    PROMPT_FORMATS, TemplateFormat, build_grade_messages, build_messages, build_pair, get_format,
)
from rrm.rubric import DEFAULT_RUBRIC, Rubric
from rrm.schema import CriterionResult, Judgment, MediaItem, ParseStatus, Sample

MODALITIES = {
    "text": [],
    "image": [MediaItem("image", "x.png")],
    "video": [MediaItem("video", "x.mp4")],
    "audio": [MediaItem("audio", "x.wav")],
}
QUESTION, FIRST, SECOND = "What is happening here?", "RESPONSE-ONE", "RESPONSE-TWO"


def _sample(modality):
    return Sample(QUESTION, FIRST, SECOND, media=list(MODALITIES[modality]))


@pytest.mark.parametrize("fmt", list(PROMPT_FORMATS))
@pytest.mark.parametrize("modality", list(MODALITIES))
def test_both_orders_media_first_and_responses_swapped(fmt, modality):
    ab, ba = build_pair(_sample(modality), fmt)
    for messages in (ab, ba):
        assert [m["role"] for m in messages] == ["system", "user"]
        parts = messages[1]["content"]
        kinds = [p["type"] for p in parts]
        n_media = len(MODALITIES[modality])
        assert kinds == [modality] * n_media + ["text"]  # media parts before the text
        assert QUESTION in parts[-1]["text"]
    text_ab, text_ba = ab[1]["content"][-1]["text"], ba[1]["content"][-1]["text"]
    assert text_ab.index(FIRST) < text_ab.index(SECOND)
    assert text_ba.index(SECOND) < text_ba.index(FIRST)
    # Same prompt otherwise: only the two responses change places.
    assert text_ab.replace(FIRST, "X").replace(SECOND, "Y") == text_ba.replace(SECOND, "X").replace(FIRST, "Y")


@pytest.mark.parametrize("modality,word", [("image", "an image"), ("video", "a video"), ("audio", "an audio clip")])
def test_modality_wording_and_text_only_drops_it(modality, word):
    for fmt in PROMPT_FORMATS:
        assert f"question about {word}" in build_messages(_sample(modality), fmt)[1]["content"][-1]["text"]
        assert "question about" not in build_messages(_sample("text"), fmt)[1]["content"][-1]["text"]


def test_omni_rrm_asks_for_the_released_schema():
    text = build_messages(_sample("image"), "omni-rrm")[1]["content"][-1]["text"]
    for key in ("score_A", "score_B", "better", "reasoning", "final_verdict", "<answer>[[A]]</answer>",
                "<answer>[[equal]]</answer>", "Part 5"):
        assert key in text
    assert "Relevance to the question and to the image" in text


def test_rubric_v2_lists_criteria_keys_and_modality_facets():
    text = build_messages(_sample("video"), "rubric-v2")[1]["content"][-1]["text"]
    for key in DEFAULT_RUBRIC.keys:
        assert f'"{key}"' in text
    for facet in DEFAULT_RUBRIC.facets_for("video"):
        assert facet in text
    assert DEFAULT_RUBRIC.facets_for("image")[0] not in text
    assert '"tie"' in text and "last" in text


def test_user_rubric_changes_the_parts_asked_for():
    rubric = Rubric.from_dict({"Humour": "Is it funny?", "Brevity": "Is it short?"})
    text = build_messages(_sample("text"), "omni-rrm", rubric)[1]["content"][-1]["text"]
    assert "Part 2" in text and "Part 3" not in text and "Humour" in text
    text = build_messages(_sample("text"), "rubric-v2", rubric)[1]["content"][-1]["text"]
    assert '"humour", "brevity"' in text


def test_reference_answer_is_included_when_given():
    s = Sample(QUESTION, FIRST, SECOND, reference="THE-REFERENCE")
    assert "THE-REFERENCE" in build_messages(s)[1]["content"][-1]["text"]
    assert "Reference" not in build_messages(_sample("text"))[1]["content"][-1]["text"]


def test_unknown_format_lists_the_known_ones():
    with pytest.raises(RRMError, match="omni-rrm, rubric-v2"):
        get_format("nope")


def test_template_format_substitutes_and_requires_placeholders(tmp_path):
    good = tmp_path / "t.txt"
    good.write_text("Q=${question}\nA=${answer_a}\nB=${answer_b}\nabout ${media}\n${criteria}\n{\"json\": 1}")
    fmt = TemplateFormat.from_file(good)
    ab, ba = build_pair(_sample("audio"), fmt)
    text = ab[1]["content"][-1]["text"]
    assert f"Q={QUESTION}\nA={FIRST}\nB={SECOND}\nabout audio clip" in text
    assert "Fluency and coherence" in text and '{"json": 1}' in text
    assert f"A={SECOND}" in ba[1]["content"][-1]["text"]
    bad = tmp_path / "bad.txt"
    bad.write_text("only ${question} and ${answer_a}")
    with pytest.raises(RRMError, match="answer_b"):
        TemplateFormat.from_file(bad)
    with pytest.raises(RRMError, match="cannot read"):
        TemplateFormat.from_file(tmp_path / "missing.txt")


@pytest.mark.parametrize("fmt", list(PROMPT_FORMATS))
@pytest.mark.parametrize("verdict,sa,sb", [("A", 8, 3), ("B", 2, 9), ("tie", 6, 6)])
def test_render_then_parse_round_trips(fmt, verdict, sa, sb):
    criteria = [CriterionResult(c.key, c.title, f"why {c.key}\nwith a line break", 7, 5, "A")
                for c in DEFAULT_RUBRIC.criteria]
    j = Judgment(verdict, sa, sb, criteria, "", ParseStatus(True, fmt))
    back = parse_judgment(get_format(fmt).render(j))
    assert back.status.ok and back.status.consistent, back.status.errors
    assert back.status.format == fmt
    assert (back.verdict, back.score_a, back.score_b) == (verdict, sa, sb)
    assert [c.rationale for c in back.criteria] == [c.rationale for c in criteria]
    if fmt == "rubric-v2":
        assert [(c.score_a, c.score_b, c.winner) for c in back.criteria] == [(7, 5, "A")] * 5


def test_grade_messages_hold_one_answer():
    msgs = build_grade_messages(Sample(QUESTION, FIRST, "", media=[MediaItem("image", "x.png")]))
    text = msgs[1]["content"][-1]["text"]
    assert [p["type"] for p in msgs[1]["content"]] == ["image", "text"]
    assert FIRST in text and "Answer B" not in text and '"score"' in text
