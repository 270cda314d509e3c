"""rrm.reward: the judge as a reward, on the parrot (a tiny judge that learnt the bundled examples' judgments)
and inside TRL's own GRPOTrainer."""

import asyncio
import math

import numpy as np
import pytest

from rrm.errors import RRMError
from rrm.judge import Judge
from rrm.reward import AsyncJudgeReward, JudgeReward, media_of, text_of
from rrm.schema import Sample
from rrm.testing import examples

from .openai_server import ScriptedServer


@pytest.fixture(scope="module")
def parrot(parrot_dir):
    return Judge.from_pretrained(str(parrot_dir))


@pytest.fixture(scope="module")
def ball():
    """The bundled image example: the parrot prefers its B."""
    return next(s for s, _ in examples() if s.media and s.media[0].kind == "image")


def _columns(sample, n, **more):
    return {"image": [sample.media[0].path] * n, **more}


def _expected(judge, samples, swap_check=True):
    """What the judge itself says for these pairs, as rewards (the completion as A)."""
    outcome = {"A": 1.0, "tie": 0.0, "B": -1.0}
    return [None if j.verdict is None else outcome[j.verdict]
            for j in judge.judge_batch(samples, batch_size=len(samples), swap_check=swap_check, progress=False)]


def test_reference_mode_rewards_the_judges_verdict_in_one_batch(parrot, ball, monkeypatch):
    calls = []
    real = parrot.backend.generate
    monkeypatch.setattr(parrot.backend, "generate", lambda rows, *a: calls.append(len(rows)) or real(rows, *a))
    reward = JudgeReward(parrot)  # reference mode, outcome scoring, swap check on
    completions = [ball.response_b, ball.response_a, ""]  # the better answer, the worse one, an empty one
    got = reward([ball.query] * 3, completions, **_columns(ball, 3, reference=[ball.response_a, ball.response_b,
                                                                                ball.response_a]))
    assert calls == [4]  # both orders of the two judgeable rows, one backend call
    expected = _expected(parrot, [Sample(ball.query, ball.response_b, ball.response_a, media=ball.media),
                                  Sample(ball.query, ball.response_a, ball.response_b, media=ball.media)])
    assert got == [*expected, None]  # the empty completion: no judgment, no number
    assert got[:2] == [1.0, -1.0]  # the parrot's learnt preference, from whichever side it is asked


def test_margin_scoring_and_group_mode_are_what_the_judge_returned(parrot, ball):
    margin = JudgeReward(parrot, scoring="margin", swap_check=False)
    [j] = parrot.judge_batch([Sample(ball.query, ball.response_b, ball.response_a, media=ball.media)],
                             progress=False)
    got = margin([ball.query], [ball.response_b], **_columns(ball, 1, reference=[ball.response_a]))
    assert got == [pytest.approx((j.score_a - j.score_b) / 10)] and got[0] > 0
    group = JudgeReward(parrot, mode="group", swap_check=False)
    answers = [ball.response_a, ball.response_b, "A plain grey square."]
    got = group([ball.query] * 3, answers, **_columns(ball, 3))
    pairs = [(0, 1), (0, 2), (1, 2)]
    share = {"A": 1.0, "tie": 0.5, "B": 0.0}
    won = {i: [] for i in range(3)}
    judged = parrot.judge_batch([Sample(ball.query, answers[a], answers[b], media=ball.media) for a, b in pairs],
                                batch_size=3, progress=False)
    for (a, b), j in zip(pairs, judged):
        if j.verdict is not None:
            won[a].append(share[j.verdict])
            won[b].append(1 - share[j.verdict])
    assert got == [sum(w) / len(w) if w else None for w in won.values()]
    assert got[1] == 1.0  # the answer the parrot prefers wins its matches


def test_a_large_group_is_judged_against_a_pivot(parrot, ball):
    reward = JudgeReward(parrot, mode="group", swap_check=False, pivot_above=2)
    answers = [ball.response_a, ball.response_b, ball.response_a]
    got = reward([ball.query] * 3, answers, **_columns(ball, 3))
    assert got[0] == 0.5  # the pivot
    assert got[1] == 1.0  # B beats the pivot (A)


def test_pointwise_gives_none_where_the_judge_writes_no_grade(parrot, ball):
    reward = JudgeReward(parrot, mode="pointwise")
    grades = parrot.grade_batch([Sample(ball.query, ball.response_a, "", media=ball.media)])
    got = reward([ball.query], [ball.response_a], **_columns(ball, 1))
    assert got == [None if grades[0].score is None else grades[0].score / 10]


def test_the_async_twin_and_trls_view_of_both(parrot, ball):
    from trl.trainer.utils import get_callable_name, is_async_callable

    sync, together = JudgeReward(parrot, swap_check=False), AsyncJudgeReward(parrot, swap_check=False)
    args = ([ball.query], [ball.response_b])
    columns = _columns(ball, 1, reference=[ball.response_a])
    assert asyncio.run(together(*args, **columns)) == sync(*args, **columns) == [1.0]
    assert (get_callable_name(sync), is_async_callable(sync)) == ("judge_reference", False)
    assert (get_callable_name(together), is_async_callable(together)) == ("judge_reference", True)


def test_prompts_completions_and_media_in_each_shape_trl_passes():
    assert text_of("plain") == "plain"
    conversation = [{"role": "system", "content": "be brief"},
                    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]
    assert text_of(conversation) == "What is it?"
    assert text_of([{"role": "assistant", "content": "A ball."}]) == "A ball."
    with pytest.raises(RRMError, match="text or a list of chat messages"):
        text_of(42)
    wave, frames = np.zeros(160, np.float32), np.zeros((2, 8, 8, 3), np.uint8)
    columns = {"images": [["a.png", "b.png"], []], "audio": [{"array": wave, "sampling_rate": 16000}, None],
               "video": [None, frames]}
    first, second = media_of(columns, 0), media_of(columns, 1)
    assert [(m.kind, m.path) for m in first] == [("image", "a.png"), ("image", "b.png"), ("audio", None)]
    assert first[2].sampling_rate == 16000 and first[2].data is wave
    assert [(m.kind, m.data is frames) for m in second] == [("video", True)]


def test_bad_settings_and_a_missing_reference_column_are_named(parrot):
    with pytest.raises(RRMError, match="reward mode must be one of reference, group, pointwise"):
        JudgeReward(parrot, mode="pairs")
    with pytest.raises(RRMError, match="scoring must be one of outcome, margin"):
        JudgeReward(parrot, scoring="prob")
    with pytest.raises(RRMError, match="needs a 'reference' column"):
        JudgeReward(parrot)(["q"], ["a"])


class _Recording(JudgeReward):
    """The judge reward, keeping what TRL asked and what it returned."""

    def __call__(self, prompts, completions, **columns):
        rewards = super().__call__(prompts, completions, **columns)
        self.calls.append((list(prompts), list(completions), columns.get("reference"), rewards))
        return rewards


def test_trls_grpo_trainer_logs_the_rewards_the_judge_gave(parrot, tiny_text_dir, tmp_path):
    """Three judges as TRL rewards for a tiny text policy: the parrot in process and the same parrot behind
    `rrm serve` (it reads no verdict in the policy's junk: None, which TRL logs as no number), and a teacher
    behind an OpenAI-compatible server on loopback, whose verdicts are numbers. An `image` column would be the
    policy's own input to TRL, and a text policy takes none: media in rewards are tested above."""
    from rrm.serve import JudgeServer, running

    egg = next(s for s, _ in examples() if not s.media)
    server = ScriptedServer()
    try:
        with running(JudgeServer(parrot, "parrot")) as url:
            _train_with_judges(tiny_text_dir, tmp_path, egg, [
                _Recording(parrot, swap_check=False, name="parrot"),
                _Recording(Judge.from_endpoint(f"{url}/v1", "parrot"), swap_check=False, name="parrot_served"),
                _Recording(Judge.from_endpoint(server.url, "teacher-1", prompt_format="rubric-v2"),
                           swap_check=False, name="teacher")])
    finally:
        server.close()


def _train_with_judges(tiny_text_dir, tmp_path, egg, rewards):
    """Two GRPO steps with these rewards; each logged mean is the mean of what its judge returned, and the judge
    returns the same for those completions when asked again."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    for r in rewards:
        r.calls = []
    dataset = Dataset.from_list([{"prompt": egg.query, "reference": egg.response_b} for _ in range(4)])
    config = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, per_device_train_batch_size=2,
                        num_generations=2, max_completion_length=8, max_steps=2, logging_steps=1, report_to="none",
                        save_strategy="no", seed=0)
    trainer = GRPOTrainer(model=str(tiny_text_dir), reward_funcs=rewards, args=config, train_dataset=dataset)
    trainer.train()
    for r in rewards:
        key = f"rewards/{r.__name__}/mean"
        logged = [e[key] for e in trainer.state.log_history if key in e]
        assert len(logged) == len(r.calls) == 2, key
        for (prompts, completions, references, returned), mean in zip(r.calls, logged):
            assert JudgeReward.__call__(r, prompts, completions, reference=references) == returned
            numbers = [x for x in returned if x is not None]
            if numbers:
                assert mean == pytest.approx(sum(numbers) / len(numbers))
            else:  # no number at all: TRL's NaN mean, logged as None
                assert mean is None or math.isnan(mean)
    in_process, served, teacher = rewards
    assert [c[3] for c in served.calls] == [c[3] for c in in_process.calls]  # rrm serve: the same judgments
    assert any(x is not None for *_, returned in teacher.calls for x in returned)


def test_verls_compute_score_single_and_batched(parrot_dir, ball):
    from rrm.reward import compute_score, compute_score_batch

    info = {"question": ball.query, "image": ball.media[0].path}
    got = compute_score_batch(["omni"] * 3, [ball.response_b, ball.response_a, ""],
                              [ball.response_a, ball.response_b, ball.response_a], [info] * 3, model=str(parrot_dir))
    assert got[:2] == [1.0, -1.0] and math.isnan(got[2])  # an empty response: no verdict, NaN (verl takes floats)
    assert compute_score("omni", ball.response_b, ball.response_a, info, model=str(parrot_dir)) == 1.0


def test_the_ms_swift_reward_reads_the_judge_from_the_environment(parrot_dir, ball, monkeypatch):
    from rrm.reward import judge_from, swift_rewards

    monkeypatch.delenv("RRM_JUDGE_MODEL", raising=False)
    with pytest.raises(RRMError, match="no judge: set RRM_JUDGE_MODEL"):
        swift_rewards(["x"], messages=[[{"role": "user", "content": "q"}]], solution=["y"])
    monkeypatch.setenv("RRM_JUDGE_MODEL", str(parrot_dir))
    assert judge_from() is judge_from()  # loaded once per process
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": ball.query}]}]
    got = swift_rewards([ball.response_b, ball.response_a], messages=[conversation] * 2,
                        solution=[ball.response_a, ball.response_b], images=[[ball.media[0].path]] * 2)
    assert got == [1.0, -1.0]
    with pytest.raises(RRMError, match="no messages column"):
        swift_rewards(["x"], solution=["y"])


def test_verl_loads_its_reward_file_by_path_as_verl_does(parrot_dir, ball):
    import importlib.util
    from pathlib import Path

    import rrm

    path = Path(rrm.__file__).parent / "verl_reward.py"
    spec = importlib.util.spec_from_file_location("custom_module", path)  # verl's own way to load it
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    info = {"question": ball.query, "image": ball.media[0].path}
    assert module.compute_score("omni", ball.response_b, ball.response_a, info, model=str(parrot_dir)) == 1.0
