"""The generation seam: the endpoint backend against a real OpenAI-compatible server (`rrm serve`'s
/v1/chat/completions over the tiny checkpoint), and the one judging procedure over all three backends."""

from __future__ import annotations

import base64
import dataclasses
import json

import pytest

from rrm.__main__ import main as rrm_main
from rrm.endpoint import openai_messages
from rrm.eval.__main__ import main as eval_main
from rrm.judge import GenerationSettings, Judge
from rrm.media import load_media
from rrm.schema import MediaItem, Sample
from rrm.serve import JudgeServer, running

from . import vllm_standin
from .media_files import comparable, modality_samples

SETTINGS = GenerationSettings(max_new_tokens=8, min_new_tokens=8)
FIXTURES = __import__("pathlib").Path(__file__).parent / "fixtures" / "benchmarks"


@pytest.fixture(scope="module")
def local(tiny_dir):
    return Judge.from_pretrained(str(tiny_dir), prompt_format="rubric-v2", generation=SETTINGS)


@pytest.fixture(scope="module")
def endpoint(local):
    with running(JudgeServer(local, "tiny-judge")) as url:
        yield f"{url}/v1"


def test_an_endpoint_judge_gives_the_transformers_judgments_for_every_modality(local, endpoint, media_dir):
    remote = Judge.from_endpoint(endpoint, "tiny-judge", generation=SETTINGS)
    assert remote.format.name == "rubric-v2"  # read from the server's model card, not guessed
    assert remote.limits == local.limits
    samples = modality_samples(media_dir)
    got = remote.judge_batch(samples, batch_size=4, swap_check=True, progress=False)
    want = local.judge_batch(samples, batch_size=1, swap_check=True, progress=False)
    assert [comparable(j) for j in got] == [comparable(j) for j in want]
    assert all(j.timing.generated_tokens == 8 and j.timing.prompt_tokens > 100 for j in got)  # the server's usage
    assert "endpoint" in got[0].model and got[0].model.startswith("tiny-judge")


def test_media_go_as_omni_parts_and_sampling_parameters_pass_through(local, endpoint, media_dir):
    samples = modality_samples(media_dir)
    media = [(m.kind, load_media(m, local.limits)) for s in samples for m in s.media]
    parts = [p for m in openai_messages([{"role": "user", "content": [{"type": k} for k, _ in media]}], media)
             for p in m["content"]]
    assert [p["type"] for p in parts] == ["image_url", "video_url", "input_audio"]
    video = base64.b64decode(parts[1]["video_url"]["url"].split(",", 1)[1])
    assert video == (media_dir / "clip.mp4").read_bytes()  # the file itself: the server samples its frames
    assert parts[0]["image_url"]["url"].startswith("data:image/png;base64,")  # lossless
    sampled = GenerationSettings(max_new_tokens=10, temperature=0.9, top_p=0.8, seed=7)
    remote = Judge.from_endpoint(endpoint, "tiny-judge", generation=sampled)
    assert remote.judge(samples[1]).raw == local.judge(samples[1], settings=sampled).raw
    other_seed = dataclasses.replace(sampled, seed=8)
    assert remote.judge(samples[1], settings=other_seed).raw == local.judge(samples[1], settings=other_seed).raw
    cut = dataclasses.replace(sampled, temperature=3.0, min_p=0.5)  # the server cuts the tail as the local judge does
    assert remote.judge(samples[1], settings=cut).raw == local.judge(samples[1], settings=cut).raw
    assert local.judge(samples[1], settings=cut).raw != local.judge(samples[1], settings=dataclasses.replace(
        cut, min_p=None)).raw


def test_an_endpoint_judge_streams_with_the_endpoints_stream(local, endpoint, media_dir):
    remote = Judge.from_endpoint(endpoint, "tiny-judge", generation=SETTINGS)
    sample = modality_samples(media_dir)[2]
    updates = list(remote.stream(sample, swap_check=True))
    assert len(updates) > 2 and updates[-1].judgment is not None
    assert all(a.text == b.text[:len(a.text)] for a, b in zip(updates, updates[1:]))
    want = local.judge(sample, swap_check=True)
    assert comparable(updates[-1].judgment) == comparable(want)


def test_three_backends_one_procedure_identical_judgments(local, endpoint, tiny_dir, media_dir, monkeypatch):
    vllm_standin.install(monkeypatch)
    engine = Judge.from_pretrained(str(tiny_dir), backend="vllm", prompt_format="rubric-v2", generation=SETTINGS)
    remote = Judge.from_endpoint(endpoint, "tiny-judge", generation=SETTINGS)
    samples = modality_samples(media_dir)
    results = {name: [comparable(j) for j in judge.judge_batch(samples, batch_size=4, swap_check=True,
                                                                 progress=False)]
               for name, judge in (("transformers", local), ("vllm", engine), ("endpoint", remote))}
    assert results["transformers"] == results["vllm"] == results["endpoint"]
    assert all(r["raw"] and r["swap"]["other"]["raw"] for r in results["endpoint"])


def test_the_cli_and_eval_judge_through_an_endpoint(endpoint, media_dir, tmp_path, capsys, local):
    args = ["judge", "--backend", "endpoint", "--endpoint", endpoint, "--model", "tiny-judge", "--query",
            "What colour is it?", "--image", str(media_dir / "red.png"), "--response-a", "Red.", "--response-b",
            "Blue.", "--swap-check", "--max-new-tokens", "8"]
    assert rrm_main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    want = local.judge(modality_samples(media_dir)[1], swap_check=True, settings=GenerationSettings(max_new_tokens=8))
    assert printed["raw"] == want.raw
    assert rrm_main(["judge", "--backend", "endpoint", "--model", "m", "--query", "q", "--response-a", "a",
                     "--response-b", "b"]) == 2
    assert capsys.readouterr().err.strip() == ("error: --backend endpoint needs --endpoint URL "
                                               "(e.g. http://127.0.0.1:8000/v1)")
    assert rrm_main(["judge", "--backend", "endpoint", "--endpoint", "http://127.0.0.1:9/v1", "--model", "m",
                     "--query", "q", "--response-a", "a", "--response-b", "b"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot reach http://127.0.0.1:9/v1/chat/completions") and "\n" not in err
    out = tmp_path / "ev"
    assert eval_main(["run", "--benchmark", "hh-rlhf", "--data", str(FIXTURES / "hh_rlhf.jsonl"), "--backend",
                      "endpoint", "--endpoint", endpoint, "--model", "tiny-judge", "--out", str(out),
                      "--max-new-tokens", "8"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["backend"] == "endpoint" and config["endpoint"] == f"{endpoint}/chat/completions"
    assert len((out / "items.jsonl").read_text().splitlines()) == config["items"]


def test_the_app_judges_through_an_endpoint_and_streams(parrot_dir, tmp_path):
    """app.py --backend endpoint: the parrot served by rrm serve, the app in front, driven by gradio_client."""
    from gradio_client import Client

    import app
    from rrm.testing import PARROT_A, PARROT_B, PARROT_QUERY, parrot_picture

    from .test_app import _free_port, judge_args

    picture = tmp_path / "ball.png"
    parrot_picture().save(picture)
    served = Judge.from_pretrained(str(parrot_dir))
    with running(JudgeServer(served, "parrot")) as url:
        remote = Judge.from_endpoint(f"{url}/v1", "parrot")
        demo = app.build_demo(app.JudgeSlot(remote))
        port = _free_port()
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        try:
            client = Client(f"http://127.0.0.1:{port}/", verbose=False)
            job = client.submit(**judge_args(PARROT_QUERY, picture, PARROT_A, PARROT_B, tokens=600), api_name="/judge")
            outputs = [list(o) for o in job]
            judgment = job.result()[-1]
            info = app._model_markdown(remote)  # the Model tab
        finally:
            demo.close()
    want = served.judge(Sample(PARROT_QUERY, PARROT_A, PARROT_B, [MediaItem("image", str(picture))]),
                        swap_check=True, settings=GenerationSettings(max_new_tokens=600))
    assert len(outputs) >= 3 and judgment["verdict"] == want.verdict == "B" and judgment["raw"] == want.raw
    assert "endpoint" in info and "parrot" in info


def test_an_endpoint_key_comes_from_the_named_variable_only(local, media_dir, monkeypatch):
    from rrm.endpoint import EndpointError

    key = "sk-endpoint-test-9876543210"
    monkeypatch.setenv("RRM_TEST_ENDPOINT_KEY", key)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-for-this-server")
    with running(JudgeServer(local, "tiny-judge", api_key=key)) as url:
        keyless = Judge.from_endpoint(f"{url}/v1", "tiny-judge", prompt_format="rubric-v2", generation=SETTINGS)
        with pytest.raises(EndpointError, match=r"refused the API key \(no key\): HTTP 401") as refused:
            keyless.judge(modality_samples(media_dir)[0])
        assert "sk-" not in str(refused.value)
        keyed = Judge.from_endpoint(f"{url}/v1", "tiny-judge", api_key_env="RRM_TEST_ENDPOINT_KEY", generation=SETTINGS)
        assert keyed.format.name == "rubric-v2"  # the model card, read with the key
        assert keyed.judge(modality_samples(media_dir)[0]).raw == local.judge(modality_samples(media_dir)[0]).raw
