import json

import pytest

from train.rewards import (
    DEFAULT_WEIGHTS, combined, format_reward, format_score, get_rewards, preference_reward, preference_score,
    rubric_score,
)

PARTS = "".join(f"Part {i}: A is weaker than B here. " for i in range(1, 6))


def released(sa=3, sb=8, better="B", final="B", reasoning=f"<think>{PARTS}</think>", **drop):
    obj = {"score_A": sa, "score_B": sb, "better": better, "reasoning": reasoning,
           "final_verdict": f"<answer>[[{final}]]</answer>"}
    for k in drop:
        obj.pop(k)
    return json.dumps(obj)


V2 = json.dumps({"criteria": {k: {"rationale": f"B beats A on {k}", "score_A": 3, "score_B": 8}
                              for k in ("fluency_coherence", "relevance", "accuracy_completeness",
                                        "reasoning_quality", "safety_ethics")},
                 "score_A": 3, "score_B": 8, "verdict": "B"})

# (name, output, label, teacher A, teacher B, format, preference, rubric), all computed by hand.
TABLE = [
    ("valid, right, exact scores", released(), "B", 3, 8, 1.0, 1.0, 1.0),
    ("valid, wrong verdict, scores off by 5 and 5", released(8, 3, "A", "A"), "B", 3, 8, 1.0, -0.6, 1.0),
    ("unparseable", "I think B.", "B", 3, 8, 0.0, -1.0, 0.0),
    ("self-inconsistent scores", released(8, 3, "B", "B"), "B", 3, 8, 1.0, -1.0, 1.0),
    ("better and final disagree", released(3, 8, "B", "A"), "B", 3, 8, 0.85, -1.0, 1.0),
    ("tie against label B", released(5, 5, "equal", "equal"), "B", 3, 8, 1.0, -0.4, 1.0),
    ("two criteria of five", released(reasoning="<think>Part 1: A and B read well. Part 2: B is on topic, A not."
                                               "</think>"), "B", 3, 8, 1.0, 1.0, 0.4),
    ("criteria without a comparison", released(reasoning="<think>" + "".join(
        f"Part {i}: fine. " for i in range(1, 6)) + "</think>"), "B", 3, 8, 1.0, 1.0, 0.8),
    ("fenced: not strict JSON", "```json\n" + released() + "\n```", "B", 3, 8, 0.0, 1.0, 1.0),
    ("no final_verdict key", released(final_verdict=True), "B", 3, 8, 0.5, 1.0, 1.0),
    ("no teacher scores", released(), "B", None, None, 1.0, 1.0, 1.0),
    ("rubric-v2, valid", V2, "B", 3, 8, 1.0, 1.0, 1.0),
    ("rubric-v2, verdict against scores", V2.replace('"verdict": "B"', '"verdict": "A"'), "B", 3, 8, 0.85, -1.0,
     1.0),
]


@pytest.mark.parametrize("name,text,label,ta,tb,fmt,pref,rub", TABLE, ids=[t[0] for t in TABLE])
def test_reward_table(name, text, label, ta, tb, fmt, pref, rub):
    assert format_score(text) == pytest.approx(fmt)
    assert preference_score(text, label, ta, tb) == pytest.approx(pref)
    assert rubric_score(text) == pytest.approx(rub)
    expected = 0.4 * fmt + 0.4 * pref + 0.2 * rub
    assert combined([text], [label], score_a=[ta], score_b=[tb])[0] == pytest.approx(expected)


def test_batched_and_conversational_completions():
    completions = [released(), [{"role": "assistant", "content": released(8, 3, "A", "A")}]]
    assert format_reward(completions) == [1.0, 1.0]
    assert preference_reward(completions, label=["B", "B"], score_a=[3, 3], score_b=[8, 8]) == pytest.approx(
        [1.0, -0.6])


def test_rewards_by_name():
    fns, weights = get_rewards(DEFAULT_WEIGHTS)
    assert [f.__name__ for f in fns] == ["format_reward", "preference_reward", "rubric_reward"]
    assert weights == [0.4, 0.4, 0.2]
    with pytest.raises(ValueError, match="known: format, preference, rubric"):
        get_rewards({"length": 1.0})
