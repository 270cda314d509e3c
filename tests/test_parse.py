import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rrm.parse import parse_grade, parse_judgment, parse_partial, read_verdict, split_parts
from rrm.prompts import get_format
from rrm.rubric import DEFAULT_RUBRIC, Rubric
from rrm.schema import CriterionResult, Judgment, ParseStatus

THINK = ("<think>Part 1: A flows well.\\nPart 2: A is on topic.\\nPart 3: A is correct.\\nPart 4: A argues soundly."
         "\\nPart 5: both safe.</think>")
EXACT = json.dumps({"score_A": 8, "score_B": 5, "better": "A", "reasoning": THINK.replace("\\n", "\n"),
                    "final_verdict": "<answer>[[A]]</answer>"})

# (name, output, verdict, score_a, score_b, format, criteria with a rationale)
VARIANTS = [
    ("exact", EXACT, "A", 8, 5, "omni-rrm", 5),
    ("raw newlines in the string",
     '{"score_A": 3, "score_B": 7, "better": "B", "reasoning": "' + THINK.replace("\\n", "\n") +
     '", "final_verdict": "<answer>[[B]]</answer>"}', "B", 3, 7, "omni-rrm", 5),
    ("fenced with text around",
     "Here is my judgment:\n```json\n" + EXACT + "\n```\nHope this helps.", "A", 8, 5, "omni-rrm", 5),
    ("bare fence", "```\n" + EXACT + "\n```", "A", 8, 5, "omni-rrm", 5),
    ("text before and after", "Sure. " + EXACT + " That is all.", "A", 8, 5, "omni-rrm", 5),
    ("trailing commas", EXACT[:-1] + ",}", "A", 8, 5, "omni-rrm", 5),
    ("readme variant",
     '{"verdict": "B", "criteria": {"fluency_coherence": "f", "relevance": "r", "accuracy_completeness": "a",'
     ' "reasoning_quality": "q", "safety_ethics": "s"}, "final_verdict": "B"}', "B", None, None,
     "omni-rrm-readme", 5),
    ("reasoning object",
     '{"score_A": 6, "score_B": 6, "better": "equal", "reasoning": {"fluency": "f", "relevance": "r",'
     ' "accuracy": "a", "reasoning": "q", "safety": "s"}, "final_verdict": "<answer>[[equal]]</answer>"}',
     "tie", 6, 6, "omni-rrm-reasoning-object", 5),
    ("score_1 / score_2",
     '{"score_1": 2, "score_2": 9, "better": "B", "reasoning": "' + THINK + '",'
     ' "final_verdict": "<answer>[[B]]</answer>"}', "B", 2, 9, "omni-rrm-numbered", 5),
    ("string scores", '{"score_A": "7/10", "score_B": "4", "better": "A", "reasoning": "' + THINK + '",'
     ' "final_verdict": "<answer>[[A]]</answer>"}', "A", 7, 4, "omni-rrm", 5),
    ("rubric-v2",
     '{"criteria": {' + ", ".join(f'"{k}": {{"rationale": "on {k}", "score_A": 4, "score_B": 8}}'
                                 for k in DEFAULT_RUBRIC.keys) + '}, "score_A": 4, "score_B": 8, "verdict": "B"}',
     "B", 4, 8, "rubric-v2", 5),
    ("rubric-v2 tie", '{"criteria": {"relevance": {"rationale": "same", "score_A": 5, "score_B": 5}},'
     ' "score_A": 5, "score_B": 5, "verdict": "tie"}', "tie", 5, 5, "rubric-v2", 1),
    ("truncated after the verdict", EXACT[:120], "A", 8, 5, "omni-rrm", 2),
    ("answer tag only", "Both are fine but A is better.\n<answer>[[A]]</answer>", "A", None, None, "answer-tag", 0),
    ("no better, verdict in final only", '{"score_A": 9, "score_B": 1, "reasoning": "' + THINK +
     '", "final_verdict": "<answer>[[A]]</answer>"}', "A", 9, 1, "omni-rrm", 5),
]


@pytest.mark.parametrize("name,text,verdict,sa,sb,fmt,n_rationales", VARIANTS, ids=[v[0] for v in VARIANTS])
def test_variants(name, text, verdict, sa, sb, fmt, n_rationales):
    j = parse_judgment(text)
    assert j.status.ok, j.status.errors
    assert (j.verdict, j.score_a, j.score_b) == (verdict, sa, sb)
    assert j.status.format == fmt
    assert [c.key for c in j.criteria] == DEFAULT_RUBRIC.keys  # always in rubric order
    assert sum(bool(c.rationale) for c in j.criteria) == n_rationales
    assert j.raw == text


def test_think_parts_go_to_their_criteria():
    j = parse_judgment(EXACT)
    assert j.criterion("relevance").rationale == "A is on topic."
    assert j.criterion("safety_ethics").rationale == "both safe."


A_JSON = ('{"score_A": 8, "score_B": 3, "better": "A", "reasoning": "<think>Part 1: A reads well.</think>", '
          '"final_verdict": "<answer>[[A]]</answer>"}')

# The model's own JSON fields state A; a comment, a placeholder or a quoted example says otherwise.
# (name, output, verdict, score_a, what status.errors mentions)
FIELDS_WIN = [
    ("line comment after final_verdict, as in the MM-RewardBench prompt's example",
     A_JSON[:-1] + '  // or [[B]] / [[equal]]\n}', "A", 8, None),
    ("line comment between fields", A_JSON.replace('"better": "A",', '"better": "A", // never [[B]]\n'), "A", 8,
     None),
    ("block comment", A_JSON.replace('"better"', '/* e.g. "better": "B" -> [[B]] */ "better"'), "A", 8, None),
    ("unterminated comment at the end", A_JSON[:-1] + ' // [[equal]]', "A", 8, "truncated"),
    ("a placeholder inside the object, a quoted example after it",
     A_JSON.replace('"score_B": 3', '"score_B": <integer>') + ' For a tie write "<answer>[[equal]]</answer>".',
     "A", 8, "read one by one"),
    ("the prompt's example echoed first (not JSON), then the model's own",
     '{"score_A": [integer between 0 and 10], "better": "A" or "B" or "equal", '
     '"final_verdict": "<answer>[[B]]</answer>"}\n' + A_JSON, "A", 8, None),
    ("a quoted example after the JSON", A_JSON + '\nFormat: "final_verdict": "<answer>[[B]]</answer>"', "A", 8,
     None),
    ("another verdict quoted inside the reasoning", A_JSON.replace("A reads well.", "not [[B]]: A reads well."),
     "A", 8, None),
    ("a placeholder in the only object, and [[B]] in the prose after it",
     '{"score_A": <int>, "better": "A", "final_verdict": "<answer>[[A]]</answer>"} Surely not [[B]].', "A", None,
     "read one by one"),
]


@pytest.mark.parametrize("name,text,verdict,score_a,note", FIELDS_WIN, ids=[f[0] for f in FIELDS_WIN])
def test_the_json_fields_win_over_loose_text(name, text, verdict, score_a, note):
    j = parse_judgment(text)
    assert (j.verdict, j.score_a) == (verdict, score_a), j.status.errors
    assert j.status.ok
    if note:
        assert any(note in e for e in j.status.errors), j.status.errors


# (name, output, reason substring)
MALFORMED = [
    ("empty", "", "empty output"),
    ("whitespace", "   \n ", "empty output"),
    ("prose", "I cannot decide between these answers.", "no JSON judgment"),
    ("broken json", "{this is not: json at all", "no JSON judgment"),
    ("json without judgment keys", '{"foo": 1, "bar": [2]}', "no JSON judgment"),
    ("truncated before verdict", '{"score_A": 8, "score_B": 5, "reasoning": "<think>Part 1: fine', "ends before"),
    ("bad verdict word", '{"score_A": 8, "score_B": 5, "better": "maybe", "final_verdict": "unsure"}',
     "no verdict"),
    ("a list", "[1, 2, 3]", "no JSON judgment"),
    ("only open brace", "{", "no JSON judgment"),
    ("nested junk", '{"a": {"b": {"c": [1, {"d": "', "no JSON judgment"),
]


@pytest.mark.parametrize("name,text,reason", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_outputs_give_no_verdict_and_say_why(name, text, reason):
    j = parse_judgment(text)
    assert j.verdict is None and not j.status.ok
    assert any(reason in e for e in j.status.errors), j.status.errors
    assert [c.key for c in j.criteria] == DEFAULT_RUBRIC.keys


@pytest.mark.parametrize("text,problem", [
    ('{"score_A": 3, "score_B": 8, "better": "A", "final_verdict": "<answer>[[A]]</answer>"}', "disagrees with"),
    ('{"score_A": 8, "score_B": 3, "better": "B", "final_verdict": "<answer>[[A]]</answer>"}', "says A but"),
    ('{"score_A": 5, "score_B": 5, "better": "A", "final_verdict": "<answer>[[A]]</answer>"}', "disagrees with"),
])
def test_self_inconsistent_outputs_keep_the_final_verdict_and_are_flagged(text, problem):
    j = parse_judgment(text)
    assert j.verdict == "A"  # the release reads final_verdict first
    assert j.status.ok and not j.status.consistent
    assert any(problem in e for e in j.status.errors)


@pytest.mark.parametrize("value", ["11", -1, "ten", True])
def test_scores_out_of_range_or_not_numbers_are_dropped(value):
    j = parse_judgment(json.dumps({"score_A": value, "score_B": 5, "better": "B",
                                   "final_verdict": "<answer>[[B]]</answer>"}))
    assert j.score_a is None and j.score_b == 5 and j.verdict == "B"
    assert any("score_A" in e for e in j.status.errors)


@pytest.mark.parametrize("value,verdict", [
    ("A", "A"), ("b", "B"), ("[[A]]", "A"), ("<answer>[[B]]</answer>", "B"), ("equal", "tie"), ("Tie", "tie"),
    ("Answer A", "A"), ("Response B", "B"), ("<answer>[[equal]]</answer>", "tie"), ("maybe", None), (None, None),
    (3, None), ({"x": 1}, None),
])
def test_read_verdict(value, verdict):
    assert read_verdict(value) == verdict


def test_split_parts_without_markers_uses_headings():
    text = "Fluency: reads well.\nRelevance: on topic.\nAccuracy: one error.\nReasoning: sound.\nSafety: fine."
    parts = split_parts(text)
    assert parts["accuracy_completeness"] == "one error."
    assert set(parts) == set(DEFAULT_RUBRIC.keys)


def test_user_rubric_parts():
    rubric = Rubric.from_dict({"Humour": "funny?", "Brevity": "short?"})
    j = parse_judgment('{"score_A": 2, "score_B": 7, "better": "B", "reasoning": "<think>Part 1: dull. '
                       'Part 2: long.</think>", "final_verdict": "<answer>[[B]]</answer>"}', rubric)
    assert [(c.key, c.rationale) for c in j.criteria] == [("humour", "dull."), ("brevity", "long.")]


def _rendered(fmt):
    criteria = [CriterionResult(c.key, c.title, f"rationale {i}", 6, 4) for i, c in enumerate(DEFAULT_RUBRIC.criteria)]
    return get_format(fmt).render(Judgment("A", 7, 4, criteria, "", ParseStatus(True, fmt)))


@pytest.mark.parametrize("fmt", ["rubric-v2", "omni-rrm"])
def test_partial_parse_of_every_prefix_is_monotonic_and_ends_complete(fmt):
    text = _rendered(fmt)
    done_before, seen_verdict_at = 0, None
    for cut in range(len(text) + 1):
        p = parse_partial(text[:cut])
        keys = [c.key for c in p.criteria]
        assert keys == DEFAULT_RUBRIC.keys[:len(keys)]  # complete criteria come in rubric order
        assert len(keys) >= done_before
        assert sorted(p.pending + keys) == sorted(DEFAULT_RUBRIC.keys)
        done_before = len(keys)
        if p.verdict and seen_verdict_at is None:
            seen_verdict_at = cut
            assert p.verdict == "A"
    assert done_before == 5
    if fmt == "rubric-v2":  # the verdict streams last, after every criterion
        assert seen_verdict_at > text.index('"verdict"')


def test_partial_parse_never_reports_a_criterion_still_being_written():
    text = _rendered("rubric-v2")
    cut = text.index("rationale 1") + 5  # inside the relevance rationale
    p = parse_partial(text[:cut])
    assert [c.key for c in p.criteria] == ["fluency_coherence"]
    assert p.criteria[0].rationale == "rationale 0" and p.criteria[0].score_a == 6
    assert p.verdict is None


def test_partial_of_junk_is_empty():
    p = parse_partial("garbage without braces")
    assert p.criteria == [] and p.pending == DEFAULT_RUBRIC.keys and p.verdict is None


def test_grade():
    g = parse_grade('{"criteria": {"relevance": {"rationale": "on topic", "score": 8}}, "score": 7}')
    assert g.status.ok and g.score == 7
    assert g.criteria[1].score_a == 8 and g.criteria[1].rationale == "on topic"
    bad = parse_grade("nothing")
    assert not bad.status.ok and bad.score is None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list('{}[]":,AB0123456789 \n\\abcrest_<>/') + ['"score_A"', '"better"',
                                                                                    '"final_verdict"', "[[A]]"]),
                max_size=80).map("".join))
def test_parser_never_raises_on_junk(text):
    j = parse_judgment(text)
    assert j.verdict in ("A", "B", "tie", None)
    assert j.status.ok == (j.verdict is not None)
    parse_partial(text)
    parse_grade(text)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=len(EXACT)))
def test_truncating_the_exact_output_anywhere_never_raises(cut):
    j = parse_judgment(EXACT[:cut])
    assert j.verdict in ("A", None)
