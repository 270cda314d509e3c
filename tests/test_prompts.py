import pytest

from rrm.errors import RRMError
from rrm.parse import parse_judgment
from rrm.prompts import (
    PROMPT_FORMATS, TemplateFormat, build_grade_messages, build_messages, get_format, resolve_format,
)
from rrm.rubric import DEFAULT_RUBRIC, Rubric
from rrm.schema import ORDER_AB, ORDER_BA, CriterionResult, Judgment, MediaItem, ParseStatus, Sample

MODALITIES = {
    "text": [],
    "image": [MediaItem("image", "x.png")],
    "video": [MediaItem("video", "x.mp4")],
    "audio": [MediaItem("audio", "x.wav")],
}
QUESTION, FIRST, SECOND = "What is happening here?", "RESPONSE-ONE", "RESPONSE-TWO"


def _both_orders(sample, fmt):
    """Messages for (A, B) and for (B, A)."""
    return build_messages(sample, fmt, order=ORDER_AB), build_messages(sample, fmt, order=ORDER_BA)


def _sample(modality):
    return Sample(QUESTION, FIRST, SECOND, media=list(MODALITIES[modality]))


@pytest.mark.parametrize("fmt", list(PROMPT_FORMATS))
@pytest.mark.parametrize("modality", list(MODALITIES))
def test_both_orders_media_first_and_responses_swapped(fmt, modality):
    ab, ba = _both_orders(_sample(modality), fmt)
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
    ab, ba = _both_orders(_sample("audio"), fmt)
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
    assert back.status.format == get_format(fmt).schema  # the output's shape: the release's keys, or rubric-v2
    assert (back.verdict, back.score_a, back.score_b) == (verdict, sa, sb)
    assert [c.rationale for c in back.criteria] == [c.rationale for c in criteria]
    if fmt == "rubric-v2":
        assert [(c.score_a, c.score_b, c.winner) for c in back.criteria] == [(7, 5, "A")] * 5


def test_grade_messages_hold_one_answer():
    msgs = build_grade_messages(Sample(QUESTION, FIRST, "", media=[MediaItem("image", "x.png")]))
    text = msgs[1]["content"][-1]["text"]
    assert [p["type"] for p in msgs[1]["content"]] == ["image", "text"]
    assert FIRST in text and "Answer B" not in text and '"score"' in text


def test_the_release_format_lays_the_user_turn_out_as_the_released_rows():
    sample = Sample(QUESTION, FIRST, SECOND, media=[MediaItem("image", "/srv/uploads/tmp123/ball.png")])
    system, user = build_messages(sample, "omni-rrm-release")
    assert system["content"][0]["text"] == "You are a helpful assistant."  # ms-swift's default, as the release used
    assert [p["type"] for p in user["content"]] == ["image", "text"]
    text = user["content"][-1]["text"]
    instruction, context = text.split("\n\n### Context\n")
    assert context.splitlines() == ["Image file: ball.png", f"Question: {QUESTION}", f"Candidate A: {FIRST}",
                                    f"Candidate B: {SECOND}"]  # the file's name, never the server's folder
    for name in ("Fluency and coherence", "Relevance to the question and to the image", "Accuracy and completeness",
                 "Reasoning quality", "Safety and ethical alignment", "9-10", "6-8", "3-5", "0-2",
                 "imagine the ideal answer", '"better"', "<answer>[[equal]]</answer>", "Part 5"):
        assert name in instruction, name
    _, ba = _both_orders(sample, "omni-rrm-release")
    assert ba[1]["content"][-1]["text"].endswith(f"Candidate A: {SECOND}\nCandidate B: {FIRST}")
    text_only = build_messages(_sample("text"), "omni-rrm-release")[1]["content"][-1]["text"]
    assert "file:" not in text_only and "question about" not in text_only


@pytest.mark.parametrize("recorded,asked,name,system", [
    ({}, None, "omni-rrm-release", "You are a helpful assistant."),  # no rrm_judge.json: a released checkpoint
    ({"profile": "omni-rrm-release", "rubric": {}}, None, "omni-rrm-release", "You are a helpful assistant."),
    ({"prompt_format": "rubric-v2"}, None, "rubric-v2", None),
    ({"prompt_format": "rubric-v2", "system_prompt": "Be brief."}, None, "rubric-v2", "Be brief."),
    ({"prompt_format": "rubric-v2", "system_prompt": "Be brief."}, "omni-rrm", "omni-rrm", None),
    ({}, "rubric-v2", "rubric-v2", None),
])
def test_the_prompt_comes_from_the_request_then_the_record_then_the_profile(recorded, asked, name, system):
    fmt = resolve_format(recorded, asked)
    assert fmt.name == name
    assert fmt.system == (system or get_format(name).default_system)


def test_a_system_text_and_a_template_replace_their_turns(tmp_path):
    template = "${media_file}: ${question} | ${answer_a} | ${answer_b}"
    fmt = resolve_format({}, None, template, "SYSTEM-TEXT")
    system, user = build_messages(Sample(QUESTION, FIRST, SECOND, media=[MediaItem("video", "clips/run.mp4")]), fmt)
    assert system["content"][0]["text"] == "SYSTEM-TEXT"
    assert user["content"][-1]["text"] == f"run.mp4: {QUESTION} | {FIRST} | {SECOND}"
    assert fmt.schema == "omni-rrm" and fmt.base.name == "omni-rrm-release"
