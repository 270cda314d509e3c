"""POST /get_reward: OpenRLHF's remote reward model protocol on a real `rrm serve` (the parrot judge), its media
read only under --reward-media-root."""

import json
import shutil
from pathlib import Path

import httpx
import pytest

from rrm.api_inputs import BadRequest
from rrm.judge import Judge
from rrm.openrlhf import RewardSettings, read_reward_label, split_query
from rrm.reward import JudgeReward
from rrm.generation import GenerationSettings
from rrm.serve import JudgeServer, running
from rrm.testing import examples

ASSETS = Path(__file__).parent.parent / "assets"


def _chatml(question: str) -> str:
    return (f"<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n"
            f"<|im_start|>assistant\n")


def test_a_query_splits_into_the_user_turn_and_the_response():
    prompt = _chatml("<image>What is it?")
    assert split_query(prompt + "A ball.<|im_end|>", prompt, 0) == ("What is it?", "A ball.")
    llama = "<|start_header_id|>user<|end_header_id|>\n\nHi?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    assert split_query(llama + "Hello.<|eot_id|>", None, 0) == ("Hi?", "Hello.")  # no prompts: the template's cut
    assert split_query("Plain prompt. Answer", "Plain prompt.", 0) == ("Plain prompt.", "Answer")
    with pytest.raises(BadRequest, match="row 3: send \"prompts\""):
        split_query("no template here", None, 3)
    with pytest.raises(BadRequest, match="row 1: the query does not begin with its prompt"):
        split_query("something else", "a prompt", 1)


def test_a_label_is_a_reference_or_json_whose_media_stay_under_the_root(tmp_path):
    root = RewardSettings(media_root=tmp_path)
    shutil.copy(ASSETS / "ball.png", tmp_path / "ball.png")
    assert read_reward_label("The answer.", root, 0) == ("The answer.", {})
    assert read_reward_label("{not json, just text", root, 0) == ("{not json, just text", {})
    assert read_reward_label(json.dumps({"reference": "Red.", "images": ["ball.png"]}), root, 0) == \
        ("Red.", {"image": [str(tmp_path / "ball.png")]})
    with pytest.raises(BadRequest, match="row 2: media path '../etc/passwd' leads outside"):
        read_reward_label(json.dumps({"images": ["../etc/passwd"]}), root, 2)
    with pytest.raises(BadRequest, match="reads none: start it with --reward-media-root"):
        read_reward_label(json.dumps({"audios": ["a.wav"]}), RewardSettings(), 0)


def test_get_reward_answers_openrlhf_with_the_judges_rewards(parrot_dir, tmp_path):
    judge = Judge.from_pretrained(str(parrot_dir))
    text, image = (next(s for s, _ in examples() if s.id == i) for i in ("text-1", "image-1"))
    shutil.copy(image.media[0].path, tmp_path / "ball.png")
    # OpenRLHF's rows: the policy's answer after its prompt; the reference (and the image) in the label.
    prompts = [_chatml(text.query), _chatml(f"<image>{image.query}"), _chatml(text.query)]
    answers = [text.response_a, image.response_a, text.response_b]
    labels = [text.response_b, json.dumps({"reference": image.response_b, "images": ["ball.png"]}), ""]
    body = {"query": [p + a + "<|im_end|>" for p, a in zip(prompts, answers)], "prompts": prompts, "labels": labels}
    expected = JudgeReward(judge)([text.query, image.query], answers[:2], image=[[], [str(tmp_path / "ball.png")]],
                                  reference=labels[:1] + [image.response_b])
    assert expected == [1.0, -1.0]  # the parrot's learnt verdicts: the egg answer wins, the blue-ball answer loses
    pointwise = JudgeReward(judge, mode="pointwise")([text.query], [text.response_b])
    server = JudgeServer(judge, "parrot", reward=RewardSettings(media_root=tmp_path))
    with running(server) as url:
        got = httpx.post(f"{url}/get_reward", json=body, timeout=120).json()
        assert got["rewards"] == got["scores"] == [*expected, *pointwise]
        assert got["extra_logs"]["judge_unread"] == [0, 0, int(pointwise[0] is None)]
        for bad, message in (({"prompts": []}, '"query": a list of strings'),
                             ({**body, "labels": labels[:1]}, '"labels" must be a list as long as "query" (3)'),
                             ({**body, "labels": [json.dumps({"images": ["/etc/hostname"]})] * 3}, "leads outside")):
            answer = httpx.post(f"{url}/get_reward", json=bad, timeout=30)
            assert answer.status_code == 400 and message in answer.json()["error"]["message"]
        assert httpx.get(f"{url}/health").json()["status"] == "ok"  # the bad requests left it serving


def test_an_unread_judgment_is_null_or_the_number_the_operator_chose(parrot_dir):
    judge = Judge.from_pretrained(str(parrot_dir), generation=GenerationSettings(max_new_tokens=3))
    text = next(s for s, _ in examples() if s.id == "text-1")  # cut at 3 tokens, its judgment cannot be read
    body = {"query": [_chatml(text.query) + text.response_a], "prompts": [_chatml(text.query)],
            "labels": [text.response_b]}
    for setting, sent in ((None, None), (-2.0, -2.0)):
        with running(JudgeServer(judge, "parrot", reward=RewardSettings(if_unread=setting))) as url:
            got = httpx.post(f"{url}/get_reward", json=body, timeout=120).json()
        assert got["rewards"] == [sent] and got["extra_logs"]["judge_unread"] == [1]
