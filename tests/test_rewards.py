"""Reward tables: every expected value worked out by hand from the formulas in train/rewards.py's docstring
(for omni-rrm-release, the release's mm_format / mm_content / mm_rubric)."""

import functools
import json
import logging

import pytest

from rrm.rubric import DEFAULT_RUBRIC, Rubric
from train.rewards import (
    DEFAULT_WEIGHTS, RELEASE_SET, RUBRIC_V2_SET, Truth, format_reward, get_rewards, get_set, logged_metrics,
)


def combined(completions, label, weights=DEFAULT_WEIGHTS, reward_set=RELEASE_SET, rubric=DEFAULT_RUBRIC, **columns):
    """The weighted sum of the named rewards per completion, as GRPOTrainer adds them up."""
    funcs = get_rewards(list(weights), reward_set, rubric)
    scores = [f(completions, label=label, **columns) for f in funcs]
    return [sum(w * s[i] for w, s in zip(weights.values(), scores)) for i in range(len(completions))]

# Every default criterion is marked; the passages of the first three name both A and B, the fourth speaks of
# "both answers" without a comparative word, the fifth of neither: coverage 5/5, comparisons 3/5 -> 0.92.
R5 = ("<think>Part 1: B is more fluent and coherent than A. Part 2: B has more relevance to the picture than A. "
      "Part 3: B is accurate, A is not. Part 4: B's reasoning is sound, A's is not. Part 5: both answers are safe."
      "</think>")
# The release's audio teachers wrote two parts (four criteria, then safety): comparisons only in the relevance
# and accuracy passages -> 0.8 + 0.2 x 2/5 = 0.88.
TWO_PARTS = ("<think>Part 1: Both answers are fluent and coherent; B has more relevance to the question than A, "
             "B is accurate where A is not, and B's reasoning holds. Part 2: Both are safe and ethical.</think>")
# One line, no Part labels: comparisons in the fluency and relevance passages -> 0.88.
ONE_LINE = ("<think>B is coherent while A rambles; B has relevance, A drifts; B is accurate; B's reasoning is clear; "
            "both are safe.</think>")
# R5 with a sixth part that compares: the safety passage now runs into it -> 4/5 comparisons -> 0.96.
SIX_PARTS = R5.replace("</think>", " Part 6: Overall B is better than A.</think>")
GROUNDING = "<think>Part 1: Visual grounding: B matches the picture better than A.</think>"
ONE_CRITERION = Rubric.from_dict({"criteria": [{"key": "grounding", "title": "Visual grounding",
                                                "description": "Do the claims match the picture?"}]})


def released(sa=3, sb=8, better="B", final="B", reasoning=R5, drop=(), **extra):
    obj = {"score_A": sa, "score_B": sb, "better": better, "reasoning": reasoning,
           "final_verdict": f"<answer>[[{final}]]</answer>", **extra}
    return json.dumps({k: v for k, v in obj.items() if k not in drop})


VALID = released()
TRUTH = Truth("B", 3, 8)

# (name, completion, truth, rubric, format, preference, rubric reward)
RELEASE_TABLE = [
    ("valid, right, exact scores", VALID, TRUTH, DEFAULT_RUBRIC, 1.0, 1.0, 0.92),
    ("valid, wrong verdict, scores off by 5 and 5", released(8, 3, "A", "A"), TRUTH, DEFAULT_RUBRIC, 1.0, -0.6,
     0.92),
    ("truncated", VALID[:60], TRUTH, DEFAULT_RUBRIC, 0.0, -1.0, -1.0),
    ("fenced: format and preference strip it, the rubric reward does not", "```json\n" + VALID + "\n```", TRUTH,
     DEFAULT_RUBRIC, 1.0, 1.0, -1.0),
    ("raw newline inside a string", VALID.replace("Part 2", "\nPart 2"), TRUTH, DEFAULT_RUBRIC, 0.0, -1.0, -1.0),
    ("prose around the JSON", "Here is my judgment: " + VALID + " Done.", TRUTH, DEFAULT_RUBRIC, 0.0, -1.0, -1.0),
    ("trailing comma", VALID[:-1] + ",}", TRUTH, DEFAULT_RUBRIC, 0.0, -1.0, -1.0),
    ("final_verdict contradicts better", released(final="A"), TRUTH, DEFAULT_RUBRIC, 0.85, 1.0, 0.92),
    ("score_1 / score_2 keys", json.dumps({"score_1": 3, "score_2": 8, "better": "B", "reasoning": R5,
                                           "final_verdict": "<answer>[[B]]</answer>"}), TRUTH, DEFAULT_RUBRIC,
     0.65, -1.0, 0.92),
    ("missing better", released(drop=("better",)), TRUTH, DEFAULT_RUBRIC, 0.5, -1.0, 0.92),
    ("lower-case letters", released(better="b", final="b"), TRUTH, DEFAULT_RUBRIC, 0.55, -1.0, 0.92),
    ("score out of range: clipped to 10", released(3, 12), TRUTH, DEFAULT_RUBRIC, 0.85, 0.92, 0.92),
    ("true as a score: an int to the release", released(True, 8), TRUTH, DEFAULT_RUBRIC, 1.0, 0.92, 0.92),
    ("scores contradict better", released(8, 3, "B", "B"), TRUTH, DEFAULT_RUBRIC, 1.0, -1.0, 0.92),
    ("tie against a B label", released(5, 5, "equal", "equal"), TRUTH, DEFAULT_RUBRIC, 1.0, -0.4, 0.92),
    ("tie against a tie label", released(5, 5, "equal", "equal"), Truth("tie", 5, 5), DEFAULT_RUBRIC, 1.0, 1.0,
     0.92),
    ("no teacher scores: the release gives -1", VALID, Truth("B"), DEFAULT_RUBRIC, 1.0, -1.0, 0.92),
    ("extra key", released(note="x"), TRUTH, DEFAULT_RUBRIC, 0.8, 1.0, 0.92),
    ("two-part rationale", released(reasoning=TWO_PARTS), TRUTH, DEFAULT_RUBRIC, 1.0, 1.0, 0.88),
    ("one-line rationale without parts", released(reasoning=ONE_LINE), TRUTH, DEFAULT_RUBRIC, 1.0, 1.0, 0.88),
    ("Part 6", released(reasoning=SIX_PARTS), TRUTH, DEFAULT_RUBRIC, 1.0, 1.0, 0.96),
    ("reasoning not wrapped in think tags", released(reasoning="B is coherent, A is not."), TRUTH, DEFAULT_RUBRIC,
     0.85, 1.0, 0.16),
    ("one-criterion rubric", released(reasoning=GROUNDING), TRUTH, ONE_CRITERION, 1.0, 1.0, 1.0),
    ("the same judgment under the default rubric", released(reasoning=GROUNDING), TRUTH, DEFAULT_RUBRIC, 1.0, 1.0,
     0.0),
    ("a one-element list", "[" + VALID + "]", TRUTH, DEFAULT_RUBRIC, 1.0, 1.0, -1.0),
    ("empty", "", TRUTH, DEFAULT_RUBRIC, 0.0, -1.0, -1.0),
]


def v2(verdict="B", sa=3, sb=8, keys=DEFAULT_RUBRIC.keys, blank=(), **extra):
    criteria = {k: ({"rationale": ""} if k in blank else {"rationale": f"B beats A on {k}", "score_A": 3,
                                                           "score_B": 8}) for k in keys}
    return json.dumps({"criteria": criteria, "score_A": sa, "score_B": sb, "verdict": verdict, **extra})


V2_TABLE = [
    ("valid", v2(), TRUTH, DEFAULT_RUBRIC, 1.0, 1.0, 1.0),
    ("verdict against the scores", v2("A"), TRUTH, DEFAULT_RUBRIC, 0.85, -1.0, 1.0),
    ("truncated", v2()[:80], TRUTH, DEFAULT_RUBRIC, 0.0, -1.0, -1.0),
    ("prose around", "Sure: " + v2(), TRUTH, DEFAULT_RUBRIC, 0.0, -1.0, -1.0),
    ("fenced", "```json\n" + v2() + "\n```", TRUTH, DEFAULT_RUBRIC, 1.0, 1.0, 1.0),
    ("two criteria without a rationale or scores", v2(blank=("reasoning_quality", "safety_ethics")), TRUTH,
     DEFAULT_RUBRIC, 0.7, 1.0, 0.6),
    ("an extra key: not well-formed", v2(note="x"), TRUTH, DEFAULT_RUBRIC, 0.8, -1.0, 0.0),
    ("a score of true: not an integer here", v2(sa=True), TRUTH, DEFAULT_RUBRIC, 0.7, -1.0, 0.0),
    ("no teacher scores: the verdict alone", v2(), Truth("B"), DEFAULT_RUBRIC, 1.0, 1.0, 1.0),
    ("wrong verdict, scores off by 5 and 5", v2("A", 8, 3), TRUTH, DEFAULT_RUBRIC, 1.0, -0.6, 1.0),
    ("one-criterion rubric", v2(keys=["grounding"]), TRUTH, ONE_CRITERION, 1.0, 1.0, 1.0),
    ("the same judgment under the default rubric", v2(keys=["grounding"]), TRUTH, DEFAULT_RUBRIC, 0.7, 1.0, 0.0),
]


def _check(reward_set, name, text, truth, rubric, fmt, pref, rub):
    parts = get_set(reward_set).components
    assert parts["format"](text, truth, rubric) == pytest.approx(fmt, abs=1e-9)
    assert parts["preference"](text, truth, rubric) == pytest.approx(pref, abs=1e-9)
    assert parts["rubric"](text, truth, rubric) == pytest.approx(rub, abs=1e-9)
    total = combined([text], [truth.label], reward_set=reward_set, rubric=rubric, score_a=[truth.score_a],
                     score_b=[truth.score_b])[0]
    assert total == pytest.approx(0.4 * fmt + 0.4 * pref + 0.2 * rub, abs=1e-9)


@pytest.mark.parametrize("name,text,truth,rubric,fmt,pref,rub", RELEASE_TABLE, ids=[t[0] for t in RELEASE_TABLE])
def test_release_reward_table(name, text, truth, rubric, fmt, pref, rub):
    _check(RELEASE_SET, name, text, truth, rubric, fmt, pref, rub)


@pytest.mark.parametrize("name,text,truth,rubric,fmt,pref,rub", V2_TABLE, ids=[t[0] for t in V2_TABLE])
def test_rubric_v2_reward_table(name, text, truth, rubric, fmt, pref, rub):
    _check(RUBRIC_V2_SET, name, text, truth, rubric, fmt, pref, rub)


def test_a_truncated_judgment_earns_what_the_release_gives():
    # The lenient inference parser reads a verdict from this; the rewards must not.
    assert combined([VALID[:140]], ["B"], score_a=[3], score_b=[8]) == pytest.approx([-0.6])


def test_trl_shape_batches_conversations_and_carries_the_rubric():
    funcs = get_rewards(list(DEFAULT_WEIGHTS), RELEASE_SET, ONE_CRITERION)
    assert [f.__name__ for f in funcs] == ["format_reward", "preference_reward", "rubric_reward"]
    assert isinstance(funcs[0], functools.partial) and funcs[0].func is format_reward  # TRL's name: the function's
    assert list(DEFAULT_WEIGHTS.values()) == [0.4, 0.4, 0.2]
    completions = [released(reasoning=GROUNDING),
                   [{"role": "assistant", "content": released(8, 3, "A", "A", reasoning=GROUNDING)}]]
    columns = {"label": ["B", "B"], "score_a": [3, 3], "score_b": [8, 8], "prompt": ["p", "p"]}
    assert [f(completions, **columns) for f in funcs] == [[1.0, 1.0], pytest.approx([1.0, -0.6]), [1.0, 1.0]]
    accuracy, valid = logged_metrics(RELEASE_SET, ONE_CRITERION)
    assert (accuracy.__name__, valid.__name__) == ("verdict_accuracy", "format_valid")
    assert accuracy(completions + [VALID[:140]], label=["B", "B", "B"]) == [1.0, 0.0, 0.0]
    assert valid([VALID, released(final="A")], label=["B", "B"]) == [1.0, 0.0]


def test_unknown_names_fail_listing_the_known_ones():
    with pytest.raises(ValueError, match="known: format, preference, rubric"):
        get_rewards(["length"])
    with pytest.raises(ValueError, match="known: omni-rrm-release, rubric-v2"):
        get_rewards(list(DEFAULT_WEIGHTS), "mine")


def _weights(caplog, weights=None, **fields):
    from train.grpo import GRPOJudgeArguments
    from trl.trainer.utils import get_callable_name

    args = GRPOJudgeArguments(model="m", data="d", **fields)
    with caplog.at_level(logging.WARNING, logger="train.grpo"):
        funcs, weights = args.rewards(type("Format", (), {"schema": "rubric-v2"}), DEFAULT_RUBRIC, weights)
    return [get_callable_name(f) for f in funcs], weights


def test_rewards_are_configured_as_trl_configures_them(caplog):
    metrics = ["verdict_accuracy", "format_valid"]
    names, weights = _weights(caplog)  # reward_funcs [format, preference, rubric], no reward_weights
    assert names == ["format_reward", "preference_reward", "rubric_reward", *metrics]
    assert weights == [0.4, 0.4, 0.2, 0.0, 0.0] and not caplog.records
    names, weights = _weights(caplog, [0.5, 0.5], reward_funcs=["format", "preference"])  # TRL's reward_weights
    assert names == ["format_reward", "preference_reward", *metrics] and weights == [0.5, 0.5, 0.0, 0.0]
    with pytest.raises(ValueError, match=r"reward_weights has 2 weights for 3 reward_funcs \(format, preference, "):
        _weights(caplog, [0.5, 0.5])
    # The old JSON flag, for one release: the same result, and a warning that says what to write instead.
    names, weights = _weights(caplog, reward_weights_by_name='{"format": 0.5, "rubric": 0.5}')
    assert names == ["format_reward", "rubric_reward", *metrics] and weights == [0.5, 0.5, 0.0, 0.0]
    assert "deprecated" in caplog.text and "reward_funcs" in caplog.text
    with pytest.raises(ValueError, match="not both"):
        _weights(caplog, [1.0], reward_weights_by_name='{"format": 1.0}')


def test_the_release_check_runs_a_plugin_beside_ours_and_counts_differences(tmp_path, capsys):
    """The harness of `python -m train.check_release_rewards`, on stand-in plugins shaped like the release's
    (its real train/new_plugin.py is not in this repository)."""
    from train.check_release_rewards import main

    plugin = tmp_path / "plugin.py"
    plugin.write_text(
        "from swift.plugin import ORM, orms\n"
        "from train.rewards import Truth, release_format, release_preference, release_rubric\n"
        "class MMFormatORM(ORM):\n"
        "    def __call__(self, completions, **kw): return [release_format(c) for c in completions]\n"
        "class MMContentORM(ORM):\n"
        "    def __call__(self, completions, better, score_A, score_B, **kw):\n"
        "        label = {'equal': 'tie', 'tie': 'x'}.get(better[0], better[0]) if isinstance(better[0], str) "
        "else better[0]\n"
        "        return [release_preference(completions[0], Truth(label, score_A[0], score_B[0]))]\n"
        "class MMRubricORM(ORM):\n"
        "    def __call__(self, completions, **kw): return [OFFSET + release_rubric(c) for c in completions]\n"
        "OFFSET = 0.0\n")
    assert main([str(plugin), "--n", "300"]) == 0
    assert "300 completions, 0 on which" in capsys.readouterr().out
    plugin.write_text(plugin.read_text().replace("OFFSET = 0.0", "OFFSET = 0.01"))
    assert main([str(plugin), "--n", "300"]) == 1
    assert "300 completions, 300 on which" in capsys.readouterr().out
    assert main([str(tmp_path / "none.py")]) == 2
