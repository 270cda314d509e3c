"""Omni-Preference synthesis: rules on hand-made teacher outputs, the client against a real local HTTP
server, the whole pipeline in local mode (tiny fixture) and over HTTP, and kill-and-resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rrm.judge import GenerationSettings, combine_orders
from rrm.rubric import DEFAULT_RUBRIC
from rrm.schema import CriterionResult, Judgment, ParseStatus
from train.synth import rules
from train.synth.__main__ import main as synth_main
from train.synth.backends import parse_spec
from rrm.endpoint import CallFailed, ChatClient, Endpoint, EndpointError
from train.synth.store import Store

from .media_files import make_audio, make_image, make_video
from .openai_server import STRONG_MARK, ScriptedServer

ROOT = Path(__file__).resolve().parent.parent
SECRET = "sk-test-very-secret-0123456789"


# ---------------------------------------------------------------------------- rules

def _one(verdict, sa, sb, rationale="why", consistent=True, order="AB"):
    criteria = [CriterionResult(c.key, c.title, rationale, sa, sb) for c in DEFAULT_RUBRIC.criteria]
    return Judgment(verdict, sa, sb, criteria, "raw", ParseStatus(verdict is not None, "rubric-v2", [], consistent),
                    order=order)


def teacher(ab, ba=None, **kw):
    """A two-order judgment combined by rrm; `ba` is already in the pair's frame."""
    return combine_orders(_one(*ab, **kw), _one(*(ba or ab), **kw, order="BA"))


@pytest.mark.parametrize("judgments, expected", [
    ({"t1": teacher(("A", 8, 3)), "t2": teacher(("A", 7, 4))}, ("A", None)),
    ({"t1": teacher(("B", 2, 9)), "t2": teacher(("B", 3, 6))}, ("B", None)),
    ({"t1": teacher(("A", 8, 3)), "t2": teacher(("B", 3, 8))}, (None, rules.TEACHERS_DISAGREE)),
    ({"t1": teacher(("tie", 5, 5)), "t2": teacher(("tie", 5, 5))}, (None, rules.TIE)),
    ({"t1": teacher(("A", 8, 3), ("B", 3, 8)), "t2": teacher(("A", 8, 3))}, (None, rules.ORDERS_DISAGREE)),
    ({"t1": teacher(("A", 8, 3), (None, None, None)), "t2": teacher(("A", 8, 3))}, (None, rules.UNREADABLE)),
    ({"t1": teacher(("A", 3, 8), consistent=False), "t2": teacher(("A", 8, 3))}, (None, rules.INCONSISTENT)),
    ({"t1": teacher(("A", 8, 3), rationale=""), "t2": teacher(("A", 8, 3))}, (None, rules.MALFORMED)),
    ({"t1": teacher(("A", 8, 3)), "t2": None}, (None, rules.NOT_ANNOTATED)),
])
def test_consensus_on_hand_made_teacher_outputs(judgments, expected):
    assert rules.consensus(judgments, DEFAULT_RUBRIC) == expected


def test_mean_scores_average_teachers():
    assert rules.mean_scores([teacher(("A", 8, 3), ("A", 6, 3)), teacher(("A", 9, 5))]) == (8.0, 4.0)


@pytest.mark.parametrize("a, b, expected", [
    ("A full answer.", "A different, shorter one.", None),
    ("", "Something.", rules.EMPTY),
    ("Fine.", "   \n", rules.EMPTY),
    (None, "Something.", rules.GENERATION_FAILED),
    ("I'm sorry, but I can't help with that.", "The ball is red.", rules.REFUSAL),
    ("The ball is red.", "As an AI, I cannot see images.", rules.REFUSAL),
    ("The ball is red and on the grass.", "the ball is red, and on the grass!", rules.NEAR_DUPLICATE),
])
def test_response_rules(a, b, expected):
    assert rules.response_problem(a, b, rules.FilterRules()) == expected


def test_pair_key_ignores_case_spacing_punctuation_and_order():
    k1 = rules.pair_key("What is it?", ["x.png"], "A red ball.", "A blue  ball")
    assert k1 == rules.pair_key("what is it", ["x.png"], "a blue ball", "A RED BALL!")
    assert k1 != rules.pair_key("What is it?", ["y.png"], "A red ball.", "A blue ball")


def _kept(label, a_words, b_words, i):
    return {"id": str(i), "label": label, "response_a": "w " * a_words, "response_b": "w " * b_words}


def test_length_bias_figure_and_rebalance():
    # 6 pairs the longer response wins, 2 it loses, 1 with equal lengths (not counted).
    records = ([_kept("A", 10, 2, i) for i in range(4)] + [_kept("B", 1, 9, i) for i in range(4, 6)]
               + [_kept("A", 2, 10, 6), _kept("B", 9, 1, 7), _kept("A", 5, 5, 8)])
    assert rules.longer_wins_share(records) == 6 / 8
    kept, dropped = rules.rebalance(records, 0.5, seed=0)
    assert len(dropped) == 4 and rules.longer_wins_share(kept) == 0.5  # 2 wins left against 2 losses
    assert all(rules.longer_won(r["label"], r["response_a"], r["response_b"]) for r in dropped)
    assert rules.rebalance(records, 0.5, seed=0) == (kept, dropped)  # seeded
    assert rules.rebalance(records, 0.9, seed=0) == (records, [])


def test_parse_spec_forms_and_errors():
    s = parse_spec("judge2=api:gpt-4o-mini@http://127.0.0.1:9/v1")
    assert (s.name, s.kind, s.model, s.base_url) == ("judge2", "api", "gpt-4o-mini", "http://127.0.0.1:9/v1")
    assert parse_spec("local:/ckpt/a").model == "/ckpt/a" and parse_spec("local:/ckpt/a").name == "/ckpt/a"
    with pytest.raises(Exception, match="write local:DIR or api:MODEL@URL"):
        parse_spec("gpt-4o")
    with pytest.raises(Exception, match="unknown model field"):
        parse_spec({"model": "x", "temprature": 1})


# ---------------------------------------------------------------------------- store

def test_store_skips_done_ids_and_drops_a_cut_off_last_line(tmp_path):
    path = tmp_path / "s.jsonl"
    s = Store(path)
    s.append({"id": "a", "v": 1})
    s.append({"id": "b", "v": 2})
    with open(path, "ab") as f:
        f.write(b'{"id": "c", "v"')  # what a kill in the middle of a write could leave
    again = Store(path)
    assert again.done == {"a", "b"}
    assert path.read_bytes().endswith(b'"v": 2}\n')
    with pytest.raises(ValueError, match="already written"):
        again.append({"id": "a"})


# ---------------------------------------------------------------------------- client

@pytest.fixture
def server():
    s = ScriptedServer(key=SECRET)
    yield s
    s.close()


def _client(server, monkeypatch, model="strong", **kw):
    monkeypatch.setenv("SYNTH_TEST_KEY", SECRET)
    waits = []
    endpoint = Endpoint(model, server.url, api_key_env="SYNTH_TEST_KEY", timeout_s=kw.pop("timeout_s", 0.5),
                        backoff_s=0.01, **kw)
    return ChatClient(endpoint, sleep=waits.append), waits


def _ask(client):
    return client.complete([{"role": "user", "content": [{"type": "text", "text": "Hi?"}]}],
                           GenerationSettings(max_new_tokens=20))


def test_client_retries_429_500_timeout_and_malformed_json(server, monkeypatch):
    server.faults = ["429", "500", "timeout", "malformed"]
    client, waits = _client(server, monkeypatch)
    reply = _ask(client)
    assert reply.text.startswith(STRONG_MARK) and reply.completion_tokens > 0
    assert len(server.requests) == 5
    assert waits == [0.0, 0.02, 0.04, 0.08]  # Retry-After: 0 first, then exponential backoff
    assert all(r["auth"] == f"Bearer {SECRET}" for r in server.requests)


def test_client_honours_retry_after_and_gives_up_after_its_retries(server, monkeypatch):
    server.faults = ["429"] + ["500"] * 3
    client, waits = _client(server, monkeypatch, max_retries=2)
    with pytest.raises(CallFailed, match="HTTP 500 after 3 tries"):
        _ask(client)
    assert waits == [0.0, 0.02]  # Retry-After: 0, then our own backoff


def test_client_bad_key_unknown_model_and_unreachable_endpoint_are_one_line_errors(server, monkeypatch):
    client, _ = _client(server, monkeypatch)
    monkeypatch.setenv("SYNTH_TEST_KEY", "sk-wrong")
    client = ChatClient(client.endpoint)
    with pytest.raises(EndpointError, match=r"refused the API key \(\$SYNTH_TEST_KEY\): HTTP 401") as e:
        _ask(client)
    assert "sk-wrong" not in str(e.value)
    unknown, _ = _client(server, monkeypatch, model="gpt-9")
    with pytest.raises(EndpointError, match="does not serve model 'gpt-9': HTTP 404"):
        _ask(unknown)
    assert len(server.requests) == 2  # neither was retried
    waits = []
    dead = ChatClient(Endpoint("strong", "http://127.0.0.1:9/v1", max_retries=5, backoff_s=1.0, timeout_s=1),
                      sleep=waits.append)
    with pytest.raises(EndpointError, match=r"cannot reach http://127.0.0.1:9/v1/chat/completions .* after 3 tries"):
        _ask(dead)
    assert waits == [1.0, 2.0]  # a refused connection is retried twice, not through the whole backoff


# ---------------------------------------------------------------------------- the pipeline

@pytest.fixture(scope="module")
def prompt_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("prompts")
    make_image(d / "ball.png", (96, 64))
    make_video(d / "clip.mp4", frames=20, fps=10)
    make_audio(d / "tone.wav", seconds=1.0, rate=16000)
    rows = [
        {"id": "txt", "query": "How do I boil an egg?"},
        {"id": "img", "query": "What colour is the ball?", "image": "ball.png"},
        {"id": "vid", "query": "Which way does it move?", "video": "clip.mp4"},
        {"id": "aud", "query": "What do you hear?", "audio": "tone.wav"},
        {"id": "close", "query": "A close call: which word rhymes with cat?"},
        {"id": "fight", "query": "A contested matter: is a tomato a fruit?"},
    ]
    lines = [json.dumps(r) for r in rows]
    lines.insert(3, '{"id": "cut", "query": "half a li')  # a truncated line
    lines.append(json.dumps({"id": "gone", "query": "?", "image": "missing.png"}))
    (d / "prompts.jsonl").write_text("\n".join(lines) + "\n")
    return d


def _recipe(tmp_path, server, prompt_dir, **extra) -> Path:
    api = {"kind": "api", "base_url": server.url, "api_key_env": "SYNTH_TEST_KEY", "backoff_s": 0.01,
           "timeout_s": 5, "concurrency": 3}
    recipe = {
        "prompts": str(prompt_dir / "prompts.jsonl"), "out": str(tmp_path / "out"), "seed": 3,
        "strong": {"model": "strong", **api, "price_in": 1.0, "price_out": 2.0},
        "weak": {"model": "weak", **api},
        "teachers": [{"model": "teacher-1", **api, "price_in": 0.15, "price_out": 0.6},
                     {"model": "contrarian", **api}],
        **extra,
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps(recipe))  # JSON is YAML
    return path


def test_pipeline_over_http_end_to_end(tmp_path, server, prompt_dir, monkeypatch, capsys):
    monkeypatch.setenv("SYNTH_TEST_KEY", SECRET)
    server.faults = ["429", "500", "malformed"]
    recipe = _recipe(tmp_path, server, prompt_dir)
    assert synth_main(["run", "--config", str(recipe)]) == 0
    out = tmp_path / "out"
    printed = capsys.readouterr()
    assert "line 4: not valid JSON" in printed.err and "missing.png not found" in printed.err

    # The real media reached the endpoints: picture, frames, audio.
    def sent(model, prompt_word):  # the parts of each distinct request (a retried one counts once)
        bodies = {json.dumps(r["body"]) for r in server.requests if r["body"]["model"] == model
                  and prompt_word in json.dumps(r["body"]["messages"][-1]["content"][-1])}
        return [p["type"] for b in map(json.loads, bodies) for p in b["messages"][-1]["content"]]
    assert sent("strong", "What colour").count("image_url") == 1
    assert sent("strong", "Which way").count("image_url") >= 2  # video frames
    assert sent("weak", "What do you hear").count("input_audio") == 1
    assert sent("teacher-1", "What do you hear").count("input_audio") == 2  # both orders, with the audio
    data = [json.loads(line) for line in (out / "data.jsonl").read_text().splitlines()]
    dropped = {json.loads(line)["id"]: json.loads(line)["reason"] for line in (out / "dropped.jsonl").read_text()
               .splitlines()}
    assert dropped == {"fight": rules.TEACHERS_DISAGREE}
    assert {r["id"] for r in data} == {"txt", "img", "vid", "aud", "close"}
    for r in data:
        assert r["sources"][r["label"]] == "strong"  # the detailed answer wins
        assert set(r["criteria"]) == set(DEFAULT_RUBRIC.keys)
    by_id = {r["id"]: r for r in data}
    assert by_id["close"]["split"] == "rl" and by_id["close"]["gap"] == 1
    assert by_id["img"]["split"] == "sft" and by_id["img"]["media"] == [{"kind": "image", "path": "ball.png"}]
    assert {r["sources"]["A"] for r in data} == {"strong", "weak"}  # seeded order, not always weak first
    report = json.loads((out / "report.json").read_text())
    assert report["kept"] == {"text": 2, "image": 1, "video": 1, "audio": 1, "total": 5}
    assert report["dropped"][rules.TEACHERS_DISAGREE]["total"] == 1
    assert report["agreement"] == {"pairs_compared": 6, "all_agree": round(5 / 6, 4)}
    t1 = report["teachers"]["teacher-1"]
    assert t1["pairs_judged"] == 6 and t1["orders_agree"] == 1.0
    assert t1["prompt_tokens"] == 6 * 2 * 100
    assert t1["cost_usd"] == pytest.approx((1200 * 0.15 + t1["completion_tokens"] * 0.6) / 1e6)
    assert report["position"]["strong_wins"] == 1.0
    assert report["length_bias"]["longer_wins"] == 1.0  # the scripted strong answer is also the longer one
    assert "| kept | 1 | 1 | 2 | 1 | 5 |" in (out / "report.md").read_text()

    # The key reaches no output, and a rerun asks nobody anything.
    calls = len(server.requests)
    assert synth_main(["run", "--config", str(recipe)]) == 0
    assert len(server.requests) == calls
    for f in out.iterdir():
        assert SECRET not in f.read_text()
    assert SECRET not in capsys.readouterr().out


def test_length_rebalance_from_the_command_line(tmp_path, server, prompt_dir, monkeypatch):
    monkeypatch.setenv("SYNTH_TEST_KEY", SECRET)
    recipe = _recipe(tmp_path, server, prompt_dir)
    assert synth_main(["run", "--config", str(recipe), "--max-longer-wins", "0"]) == 0
    report = json.loads((tmp_path / "out/report.json").read_text())
    assert report["kept"]["total"] == 0 and report["dropped"][rules.LENGTH_REBALANCE]["total"] == 5
    assert report["length_bias"] == {"longer_wins_before_rebalance": 1.0, "longer_wins": None}


def test_a_bad_key_stops_with_one_line_and_keeps_what_was_done(tmp_path, server, prompt_dir, monkeypatch, capsys):
    monkeypatch.setenv("SYNTH_TEST_KEY", "sk-wrong-key")
    recipe = _recipe(tmp_path, server, prompt_dir)
    assert synth_main(["generate", "--config", str(recipe)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and "refused the API key ($SYNTH_TEST_KEY)" in err and "sk-wrong" not in err


def test_pipeline_local_mode_on_the_tiny_fixture(tmp_path, tiny_dir, prompt_dir, capsys):
    """Generators and teachers are the tiny random model: every stage runs; random teachers give no verdict."""
    local = {"kind": "local", "max_new_tokens": 8, "batch_size": 3}
    recipe = {"prompts": str(prompt_dir / "prompts.jsonl"), "out": str(tmp_path / "out"),
              "strong": {"model": str(tiny_dir), **local}, "weak": {"model": str(tiny_dir), **local},
              "teachers": [{"model": str(tiny_dir), "name": "t1", **local},
                           {"model": str(tiny_dir), "name": "t2", **local, "max_new_tokens": 6}]}
    path = tmp_path / "r.yaml"
    path.write_text(json.dumps(recipe))
    assert synth_main(["run", "--config", str(path)]) == 0
    out = tmp_path / "out"
    gens = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert len(gens) == 12 and all(g.get("text") for g in gens)
    judgments = [json.loads(line) for line in (out / "judgments.jsonl").read_text().splitlines()]
    assert sorted(j["id"] for j in judgments) == sorted(f"{p}::{t}" for p in ("txt", "img", "vid", "aud", "close",
                                                                             "fight") for t in ("t1", "t2"))
    j = judgments[0]["judgment"]
    assert j["raw"] and j["swap"]["other"]["raw"]  # both orders were asked
    report = json.loads((out / "report.json").read_text())
    assert report["kept"]["total"] == 0
    assert report["dropped"][rules.UNREADABLE]["total"] == 6
    assert report["generators"]["strong"]["answers"] == 6
    size = (out / "judgments.jsonl").stat().st_size
    assert synth_main(["run", "--config", str(path)]) == 0
    assert (out / "judgments.jsonl").stat().st_size == size  # nothing judged twice


def test_kill_and_resume_loses_and_doubles_nothing(tmp_path, prompt_dir):
    server = ScriptedServer(delay_s=0.15)
    try:
        rows = [{"id": f"p{i}", "query": f"Question number {i}?"} for i in range(16)]
        prompts = tmp_path / "prompts.jsonl"
        prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
        out = tmp_path / "out"
        args = [sys.executable, "-m", "train.synth", "generate", "--prompts", str(prompts), "--out", str(out),
                "--strong", f"api:strong@{server.url}", "--weak", f"api:weak@{server.url}"]
        proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        gens = out / "generations.jsonl"
        deadline = time.time() + 60
        while time.time() < deadline and (not gens.exists() or gens.read_text().count("\n") < 5):
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        first = gens.read_text().count("\n")
        assert 5 <= first < 32
        before = len(server.requests)
        assert subprocess.run(args, cwd=ROOT, capture_output=True).returncode == 0
        ids = [json.loads(line)["id"] for line in gens.read_text().splitlines()]
        assert sorted(ids) == sorted(f"p{i}:{role}" for i in range(16) for role in ("strong", "weak"))
        # The rerun asked only for what was missing, plus at most the calls in flight at the kill.
        assert len(server.requests) - before == 32 - first
    finally:
        server.close()


def test_calls_that_keep_failing_are_left_for_the_next_run(tmp_path, server, prompt_dir, monkeypatch, capsys):
    monkeypatch.setenv("SYNTH_TEST_KEY", SECRET)
    recipe = json.loads(_recipe(tmp_path, server, prompt_dir).read_text())
    recipe["strong"].update(max_retries=1, concurrency=1)
    path = tmp_path / "flaky.yaml"
    path.write_text(json.dumps(recipe))
    server.faults = ["500", "500"]  # the first strong answer fails twice: out of retries
    assert synth_main(["generate", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "strong: HTTP 500 after 2 tries" in err and "run the same command again" in err
    gens = (tmp_path / "out/generations.jsonl").read_text().splitlines()
    assert len(gens) == 11
    assert synth_main(["generate", "--config", str(path)]) == 0
    assert len((tmp_path / "out/generations.jsonl").read_text().splitlines()) == 12


def test_local_chat_models_as_generators_with_http_teachers(tmp_path, server, prompt_dir, monkeypatch, tiny_vl_dir,
                                                            tiny_dir):
    """A tiny Qwen2.5-VL (strong) and the tiny Omni (weak) write the answers; scripted endpoints judge them."""
    monkeypatch.setenv("SYNTH_TEST_KEY", SECRET)
    recipe = json.loads(_recipe(tmp_path, server, prompt_dir).read_text())
    recipe["strong"] = {"model": str(tiny_vl_dir), "max_new_tokens": 12}
    recipe["weak"] = {"model": str(tiny_dir), "max_new_tokens": 12}
    path = tmp_path / "local.yaml"
    path.write_text(json.dumps(recipe))
    assert synth_main(["run", "--config", str(path)]) == 0
    out = tmp_path / "out"
    gens = {json.loads(line)["id"]: json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()}
    assert gens["aud:strong"]["error"].endswith("is an image-text model: prompt aud has audio it cannot take")
    assert all(g.get("text") for i, g in gens.items() if i != "aud:strong")
    report = json.loads((out / "report.json").read_text())
    assert report["dropped"][rules.GENERATION_FAILED] == {"audio": 1, "total": 1}
    data = [json.loads(line) for line in (out / "data.jsonl").read_text().splitlines()]
    assert {r["modality"] for r in data} == {"text", "image", "video"}

    # train.sft trains on the data as written.
    from train import sft

    run_dir = tmp_path / "sft"
    rc = sft.main(["--config", str(ROOT / "train/recipes/sft-tiny.yaml"), "--model", str(tiny_dir),
                   "--data", str(out / "data.jsonl"), "--media_root", str(prompt_dir),
                   "--output_dir", str(run_dir), "--max_steps", "2"])
    assert rc == 0 and (run_dir / "adapter_model.safetensors").exists()


def test_a_text_model_answers_text_and_refuses_media(tiny_text_dir, prompt_dir):
    from rrm.model import load_chat_model
    from rrm.schema import MediaItem, Sample
    from train.synth.local import ChatGenerator

    chat = ChatGenerator(load_chat_model(str(tiny_text_dir)))
    samples = [Sample("Hello?", "", "", id="a"), Sample("How are you today?", "", "", id="b")]
    sampled = GenerationSettings(max_new_tokens=6, temperature=0.7, seed=1)
    texts = chat.answer(samples, sampled)
    assert len(texts) == 2 and all(texts) and chat.answer(samples, sampled) == texts  # seeded
    greedy = GenerationSettings(max_new_tokens=6)
    assert chat.answer(samples[:1], greedy) == chat.answer(samples, greedy)[:1]  # left padding changes nothing
    with pytest.raises(Exception, match="is a text model: prompt p has image it cannot take"):
        chat.answer([Sample("What is it?", "", "", [MediaItem("image", str(prompt_dir / "ball.png"))], id="p")],
                    greedy)
